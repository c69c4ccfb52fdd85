"""Stalls of the HIL run's shared event loop: a loop held by blocking work is reported, in real
seconds, and a session keeps its heap out of the garbage collector's scans."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from sim.hil.command import HilRun, stall_line
from sim.hil.session import hil_session
from sim.hil.stalls import LoopStalls
from tests.test_hil_agreement import EXAMPLES, example_day


def test_a_blocked_loop_is_reported_and_the_watch_stops_with_the_block() -> None:
    async def main() -> LoopStalls:
        async with LoopStalls(period_s=0.001) as stalls:
            await asyncio.sleep(0.01)
            time.sleep(0.08)  # noqa: ASYNC251 -- holds the loop, as a long garbage collection would
            await asyncio.sleep(0.01)
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "hil-loop-stalls"]
        return stalls

    stalls = asyncio.run(main())
    assert stalls.worst_s >= 0.07


def test_the_stall_line_warns_only_past_a_simulated_minute() -> None:
    def run(worst_s: float, speed: float) -> HilRun:
        return HilRun(result=None, stats={}, home_cost=0.0, worst_stall_s=worst_s, speed=speed)  # type: ignore[arg-type]

    assert stall_line(run(0.02, 1000.0)) == "event loop: longest stall 20 ms (20 s simulated)"
    assert "lower --speed" in stall_line(run(0.09, 1000.0))
    assert "lower --speed" not in stall_line(run(0.09, 100.0))


@pytest.mark.timeout(120)
def test_a_session_leaves_what_it_built_out_of_the_collectors_scans_until_it_ends() -> None:
    """A full collection over the daemon and its modules holds the shared loop for tens of ms
    (minutes of simulated time at 1000x): the session freezes what exists once the daemon is ready,
    and gives it back to the collector when it ends."""
    scenario = example_day()

    async def main() -> int:
        async with hil_session(scenario, EXAMPLES / "home.yaml", 1000.0) as session:
            assert session.daemon is not None
            return gc.get_freeze_count()

    assert gc.get_freeze_count() == 0
    frozen = asyncio.run(main())
    assert frozen > 10_000  # modules, the config, the daemon's planner
    assert gc.get_freeze_count() == 0
