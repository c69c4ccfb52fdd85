"""The stop of ``v2x run`` (SIGTERM/SIGINT), end to end with the daemon as a real subprocess: within
its time budget whatever the chargers answer, nothing that discharges once it began, the safe
profile instead of whatever was waiting, and exit 0 for a signal at any moment."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from pathlib import Path

import pytest

from tests.daemon_support import (
    PEAK_EXPORT,
    PEAK_IMPORT,
    MeterFeed,
    broker,
    charge_only,
    charger,
    discharges,
    evening_timezone,
    first_setpoint,
    make_site,
    publish_prices,
    running_daemon,
)
from tests.ocpp_support import wait_until

pytestmark = pytest.mark.timeout(90)

# The whole stop, from the signal to the process's exit (Docker waits 10 s by default).
STOP_WITHIN_S = 5.0


@pytest.mark.parametrize(
    "answer_delay_s", [math.inf, 14.0], ids=["never-answers", "answers-after-the-call-timeout"]
)
async def test_a_stop_with_a_charger_that_does_not_answer_in_time_sends_no_discharge_and_ends_in_5_s(
    tmp_path: Path, answer_delay_s: float
) -> None:
    site = make_site(tmp_path, "stop", timezone=evening_timezone())
    site.tree["ocpp"]["call_timeout_s"] = 10  # the default
    async with broker(f"{site.base}/#") as mqtt:
        try:
            async with running_daemon(site) as daemon, MeterFeed(mqtt) as meters:
                meters.set(site.topic("meter/grid"), 400.0)
                await meters.publish_now()
                await publish_prices(mqtt, site, PEAK_IMPORT, PEAK_EXPORT)
                async with charger(site.ocpp_port) as cp:
                    cp.profile_answer_delay_s = answer_delay_s
                    await cp.plug_in("tx-slow", soc_percent=80)
                    # The peak pays: a discharge goes out, and stays unanswered.
                    await cp.wait_profile(lambda p: first_setpoint(p) < 0, timeout_s=15)
                    mark = cp.mark()
                    signalled = time.monotonic()
                    daemon.send_signal(signal.SIGTERM)
                    assert await daemon.wait_exit(15) == 0
                    stop_s = time.monotonic() - signalled
                    assert stop_s < STOP_WITHIN_S, daemon.tail()
                    after = [r for r in cp.received[mark:] if r.action == "SetChargingProfile"]
                    assert not [r.payload for r in after if discharges(r.payload)]
                    # The charge-only profile replaced the discharge still waiting for its answer.
                    (safe,) = cp.profiles("TxProfile", since=mark)
                    assert charge_only(safe.payload)
                    assert safe.payload["chargingProfile"]["transactionId"] == "tx-slow"
                    assert daemon.events("ocpp_safe_profiles_timed_out")
                    assert daemon.events("daemon_stopped") and "Traceback" not in daemon.log_text()
        finally:
            await mqtt.clear_retained(site.prefix)


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process ``pid`` has a handler of its own for ``sig`` (Linux: SigCgt in /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


async def test_a_stop_signal_during_start_up_stops_the_daemon_cleanly(tmp_path: Path) -> None:
    """SIGTERM while the config is still being read (a pipe the test fills later): remembered, and
    the daemon, once running, stops at once with exit 0 instead of being killed (143)."""
    site = make_site(tmp_path, "early")
    config = site.config_path
    site.write()
    text = config.read_bytes()
    config.unlink()
    os.mkfifo(config)
    site.write = lambda: config  # type: ignore[method-assign]  # the pipe stays a pipe
    async with running_daemon(site, ready=False) as daemon:
        await wait_until(lambda: _catches(daemon.pid, signal.SIGTERM), 10, "SIGTERM handled")
        daemon.send_signal(signal.SIGTERM)
        await asyncio.to_thread(config.write_bytes, text)  # the config arrives after the signal
        assert await daemon.wait_exit(30) == 0, daemon.tail()
        assert daemon.events("daemon_stopped")
        assert "Traceback" not in daemon.log_text()


async def test_more_stop_signals_during_the_stop_change_nothing(tmp_path: Path) -> None:
    site = make_site(tmp_path, "again")
    async with running_daemon(site) as daemon, charger(site.ocpp_port) as cp:
        cp.profile_answer_delay_s = math.inf  # the stop takes its whole budget for the safe profiles
        daemon.send_signal(signal.SIGTERM)
        await daemon.wait_log("daemon_stopping")
        while daemon.returncode() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.send_signal(signal.SIGINT)
            await asyncio.sleep(0.02)
        assert await daemon.wait_exit() == 0
        assert len(daemon.events("daemon_stopping")) == 1
        assert "Traceback" not in daemon.log_text()
