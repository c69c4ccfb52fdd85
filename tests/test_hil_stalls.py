"""The HIL run's stall watch: a loop held by blocking work is reported, in real seconds."""

from __future__ import annotations

import asyncio
import time

from sim.hil.command import HilRun, stall_line
from sim.hil.stalls import LoopStalls


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
