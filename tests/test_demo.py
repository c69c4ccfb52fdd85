"""``v2x demo``: the daemon, its dashboard and a virtual home from one command, with no broker
installed (its own, in-process, on a free port). It ends by itself, or cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

V2X = str(Path(sys.executable).parent / "v2x")


def demo(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [V2X, "demo", "--no-browser", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def first_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = process.stdout.readline()
    assert time.monotonic() < deadline, "the dashboard's address came too late"
    return line


@pytest.mark.timeout(240)
def test_the_demo_runs_a_simulated_day_and_ends_with_the_money() -> None:
    process = demo("--days", "1", "--speed", "1000")
    try:
        line = first_line(process, 60)
        assert line.startswith("dashboard: http://127.0.0.1:"), line
        url = line.split()[1]
        with urllib.request.urlopen(url, timeout=10) as page:  # the dashboard is up
            assert b"<html" in page.read().lower()
        out, _ = process.communicate(timeout=200)
    finally:
        process.kill()
    assert process.returncode == 0, out[-3000:]
    assert "1 simulated days: the grid connection cost" in out
    assert "without control" in out and "saving" in out
    assert "Traceback" not in out


@pytest.mark.timeout(120)
def test_ctrl_c_stops_the_demo_cleanly() -> None:
    process = demo("--days", "7")
    try:
        assert first_line(process, 60).startswith("dashboard: ")
        time.sleep(2.0)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=40)
    finally:
        process.kill()
    assert process.returncode == 0, out[-3000:]
    assert "Traceback" not in out


@pytest.mark.timeout(180)
def test_sim_hil_reports_like_sim_run_with_protocol_figures(tmp_path: Path) -> None:
    """Six simulated hours of the example home through the real daemon, a 2.0.1 charger that rejects
    a fifth of its TxProfiles: the simulator's summary, protocol figures, the files of `sim run`."""
    hil = ["sim", "hil", "--days", "0.25", "--speed", "1000", "--ocpp-version", "2.0.1", "--reject", "0.2"]
    out = subprocess.run(
        [V2X, *hil, "--out", str(tmp_path / "hil")],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "strategy                   hil" in out.stdout
    assert "reserve breaches           0" in out.stdout
    protocol = [line for line in out.stdout.splitlines() if line.startswith("protocol family-ev:")]
    assert protocol and "frames sent" in protocol[0] and "1 boots" in protocol[0]
    assert any(line.startswith("event loop: longest stall ") for line in out.stdout.splitlines())
    assert {"metrics.json", "timeseries.csv", "power_1min.csv"} <= {
        p.name for p in (tmp_path / "hil").iterdir()
    }
    assert "Traceback" not in out.stderr


def test_without_the_embedded_broker_installed_the_demo_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from controller.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "amqtt" else real(name, *a)
    )
    assert main(["demo", "--no-browser", "--days", "1"]) == 2
    assert "pip install 'v2x-controller[sim]'" in capsys.readouterr().err
    assert main(["demo", "--no-browser", "--speed", "5000"]) == 2
