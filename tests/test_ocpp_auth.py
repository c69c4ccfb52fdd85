"""Brakes on Basic auth over real connections: backoff per charger id and per address, capped checks."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

import controller.ocpp.auth as auth_module
from controller.clock import ManualClock
from controller.ocpp import ChargerConnected
from controller.passwords import verify_password
from tests.ocpp_support import PASSWORD, PASSWORD_HASH, T0, basic_auth, running_server, site


class CountingVerify:
    """``verify_password`` that counts its runs and the most that ran at once."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, password: str, stored: str) -> bool:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(self.delay_s)
            return verify_password(password, stored)
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def verify(monkeypatch: pytest.MonkeyPatch) -> CountingVerify:
    counting = CountingVerify()
    monkeypatch.setattr(auth_module, "verify_password", counting)
    return counting


async def attempt(port: int, charger_id: str, password: str) -> tuple[int, Headers]:
    """One handshake: 101 if it connected, else the refusal's status; and the response headers."""
    try:
        async with connect(
            f"ws://127.0.0.1:{port}/ocpp/{charger_id}",
            subprotocols=[Subprotocol("ocpp2.0.1")],
            additional_headers=basic_auth(charger_id, password),
        ) as connection:
            assert connection.response is not None
            return 101, connection.response.headers
    except InvalidStatus as refused:
        return refused.response.status_code, refused.response.headers


def chargers(*ids: str) -> list[dict[str, Any]]:
    return [{"id": charger_id, "auth": {"password_hash": PASSWORD_HASH}} for charger_id in ids]


async def test_wrong_passwords_back_off_per_charger_id(
    verify: CountingVerify, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_module, "FAILURES_PER_ID", 3)
    monkeypatch.setattr(auth_module, "FAILURES_PER_ADDRESS", 100)
    clock = ManualClock(T0)
    async with running_server(site(chargers("cp", "other")), clock=clock) as (server, events):
        port = server.port
        for _ in range(3):
            assert (await attempt(port, "cp", "guess"))[0] == 401
        assert verify.calls == 3
        # Blocked: refused without running PBKDF2, even with the right password.
        for password in ("guess", PASSWORD):
            status, headers = await attempt(port, "cp", password)
            assert (status, headers["Retry-After"]) == (429, "30")
        assert verify.calls == 3
        assert (await attempt(port, "other", PASSWORD))[0] == 101  # another id is not affected
        clock.advance(timedelta(seconds=29))
        status, headers = await attempt(port, "cp", PASSWORD)
        assert (status, headers["Retry-After"]) == (429, "1")
        clock.advance(timedelta(seconds=2))
        assert (await attempt(port, "cp", PASSWORD))[0] == 101
        # The right password cleared the record: the next block starts small again.
        for _ in range(3):
            assert (await attempt(port, "cp", "guess"))[0] == 401
        assert (await attempt(port, "cp", "guess"))[1]["Retry-After"] == "30"
        # Without a success in between, every new block lasts twice as long.
        clock.advance(timedelta(seconds=31))
        for _ in range(3):
            assert (await attempt(port, "cp", "guess"))[0] == 401
        status, headers = await attempt(port, "cp", PASSWORD)
        assert (status, headers["Retry-After"]) == (429, "60")
        assert [e.charger_id for e in events.of(ChargerConnected)] == ["other", "cp"]


async def test_wrong_passwords_back_off_per_remote_address(
    verify: CountingVerify, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_module, "FAILURES_PER_ID", 100)
    monkeypatch.setattr(auth_module, "FAILURES_PER_ADDRESS", 3)
    async with running_server(site(chargers("cp1", "cp2", "cp3", "cp4")), clock=ManualClock(T0)) as (
        server,
        events,
    ):
        for charger_id in ("cp1", "cp2", "cp3"):  # one guess each, all from 127.0.0.1
            assert (await attempt(server.port, charger_id, "guess"))[0] == 401
        status, headers = await attempt(server.port, "cp4", PASSWORD)
        assert (status, headers["Retry-After"]) == (429, "30")
        assert verify.calls == 3 and not events.of(ChargerConnected)


async def test_concurrent_password_checks_are_capped(
    verify: CountingVerify, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_module, "CONCURRENT_CHECKS", 2)  # read when the server is created
    verify.delay_s = 0.1
    ids = [f"cp{n}" for n in range(6)]
    async with running_server(site(chargers(*ids))) as (server, _):
        results = await asyncio.gather(
            *(
                attempt(server.port, charger_id, PASSWORD if n % 2 else "guess")
                for n, charger_id in enumerate(ids)
            )
        )
    assert [status for status, _ in results] == [401, 101] * 3
    assert verify.calls == 6 and verify.most_at_once == 2


def test_throttle_forgives_after_a_quiet_period_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_module, "FAILURES_PER_ID", 2)
    monkeypatch.setattr(auth_module, "MAX_TRACKED", 8)
    now = [0.0]
    throttle = auth_module.AuthThrottle(lambda: now[0])
    blocks = []
    for _ in range(4):  # each block twice as long as the one before
        throttle.failed("cp", None)
        blocks.append(throttle.failed("cp", None))
        now[0] += 100
    assert blocks == [30, 60, 120, 240]
    now[0] += 240
    assert throttle.retry_after_s("cp", None) is None
    now[0] += auth_module.MAX_BLOCK_S + 1  # quiet for long enough: history forgiven
    throttle.failed("cp", None)
    assert throttle.failed("cp", None) == 30
    for n in range(50):  # many addresses: the table stays bounded
        throttle.failed(f"x{n}", f"10.0.0.{n}")
    assert len(throttle._records) <= 8
