"""Command validation (pure): each command, its local-time forms, and every refusal; then the
replies to refusals that only show over the broker (out-of-range times, bugs, malformed topics)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.clock import ManualClock
from controller.commands import (
    COMMAND_NAMES,
    MAX_COMMAND_PAYLOAD_BYTES,
    Command,
    CommandError,
    SetDeparture,
    SetMode,
    SetWeeklyDeparture,
    V2LCommand,
    parse_command,
    request_id_of,
)
from controller.config import SiteConfig, parse_config
from controller.domain import VehicleMode
from controller.mqtt import SiteMqttClient
from tests.test_mqtt_client import T0, eventually, peer, running, site_config, uid

NOW = dt.datetime(2025, 1, 15, 12, 0, tzinfo=dt.UTC)  # 13:00 in Amsterdam


def site() -> SiteConfig:
    return parse_config(
        {
            "site": {"timezone": "Europe/Amsterdam", "grid": {"import_limit_kw": 11}},
            "vehicles": [
                {"id": "ev", "usable_capacity_kwh": 60, "max_soc_percent": 90, "permissions": {"v2l": True}},
                {"id": "van", "usable_capacity_kwh": 80},
            ],
            "tariff": {"import": {"static_price_per_kwh": 0.3}},
        }
    )


CFG = site()


def cmd(name: str, payload: Any, vehicle: str = "ev") -> Any:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_command(CFG, vehicle, name, raw, NOW)


def test_one_off_departure_absolute_and_local_forms() -> None:
    c = cmd("departure", {"at": "2025-01-16T07:30:00+01:00", "target_soc_percent": 80, "request_id": "r1"})
    assert isinstance(c, SetDeparture) and c.departure is not None
    assert c.departure.at == dt.datetime(2025, 1, 16, 6, 30, tzinfo=dt.UTC)
    assert c.departure.target_soc_percent == 80 and c.request_id == "r1"
    naive = cmd("departure", {"at": "2025-01-16T07:30", "target_soc_percent": 80})
    assert naive.departure.at == c.departure.at  # naive = site local time
    today = cmd("departure", {"at": "18:00", "target_soc_percent": 70})
    assert today.departure.at == dt.datetime(2025, 1, 15, 17, 0, tzinfo=dt.UTC)
    tomorrow = cmd("departure", {"at": "07:30", "target_soc_percent": 70})
    assert tomorrow.departure.at == dt.datetime(2025, 1, 16, 6, 30, tzinfo=dt.UTC)
    cleared = cmd("departure", {"clear": True})
    assert cleared == SetDeparture("ev", None, None)


@pytest.mark.parametrize(("text", "expected"), [("7:30", dt.time(7, 30)), ("07:30:15", dt.time(7, 30, 15))])
def test_command_times_of_day_are_read_as_the_config_reads_them(text: str, expected: dt.time) -> None:
    weekly = cmd("weekly_departure", {"weekday": "monday", "time": text, "target_soc_percent": 80})
    assert weekly.time == expected
    config = parse_config(
        {
            "site": {"timezone": "Europe/Amsterdam", "grid": {"import_limit_kw": 11}},
            "vehicles": [
                {
                    "id": "ev",
                    "usable_capacity_kwh": 60,
                    "departures": {"monday": {"time": text, "target_soc_percent": 80}},
                }
            ],
            "tariff": {"import": {"static_price_per_kwh": 0.3}},
        }
    )
    assert config.vehicles[0].departures["monday"].time == expected
    one_off = cmd("departure", {"at": text, "target_soc_percent": 80})
    local = dt.datetime.combine(dt.date(2025, 1, 16), expected, ZoneInfo("Europe/Amsterdam"))
    assert one_off.departure.at == local.astimezone(dt.UTC)


def test_v2l_until_takes_the_same_site_local_forms_as_departure() -> None:
    with_offset = cmd("v2l", {"action": "start", "until": "2025-01-15T21:00:00+01:00"})
    local = cmd("v2l", {"action": "start", "until": "2025-01-15T21:00"})
    time_of_day = cmd("v2l", {"action": "start", "until": "21:00"})
    assert (
        with_offset.until == local.until == time_of_day.until == dt.datetime(2025, 1, 15, 20, tzinfo=dt.UTC)
    )
    tomorrow = cmd("v2l", {"action": "start", "until": "9:00"})  # 09:00 today has passed at 13:00
    assert tomorrow.until == dt.datetime(2025, 1, 16, 8, tzinfo=dt.UTC)
    with pytest.raises(CommandError, match="until is in the past"):
        cmd("v2l", {"action": "start", "until": "2025-01-15T12:00"})  # 11:00 UTC


def test_weekly_departure_set_and_clear() -> None:
    c = cmd("weekly_departure", {"weekday": "Monday", "time": "07:30", "target_soc_percent": 85})
    assert c == SetWeeklyDeparture("ev", "monday", dt.time(7, 30), 85.0, None)
    assert cmd("weekly_departure", {"weekday": "friday", "clear": True}) == SetWeeklyDeparture(
        "ev", "friday", None, None, None
    )
    back = cmd(
        "weekly_departure",
        {"weekday": "tuesday", "time": "7:30", "target_soc_percent": 80, "return_time": "17:45"},
    )
    assert back == SetWeeklyDeparture(
        "ev", "tuesday", dt.time(7, 30), 80.0, None, return_time=dt.time(17, 45)
    )


@pytest.mark.parametrize(
    ("payload", "mode"),
    [
        (b"charge_now", VehicleMode.CHARGE_NOW),
        (b" AUTO ", VehicleMode.AUTO),
        ({"mode": "no_discharge"}, VehicleMode.NO_DISCHARGE),
    ],
)
def test_mode(payload: Any, mode: VehicleMode) -> None:
    c = cmd("mode", payload)
    assert isinstance(c, SetMode) and c.mode is mode


def test_charge_now_to_a_soc_above_the_ceiling() -> None:
    c = cmd("mode", {"mode": "charge_now", "target_soc_percent": 100})
    assert isinstance(c, SetMode) and c.mode is VehicleMode.CHARGE_NOW and c.charge_to_percent == 100.0
    assert cmd("mode", b"charge_now").charge_to_percent is None


def test_mode_json_string_and_request_id() -> None:
    assert cmd("mode", b'"charge_now"').mode is VehicleMode.CHARGE_NOW
    assert cmd("mode", {"mode": "auto", "request_id": 7}).request_id == "7"


def test_v2l_start_stop() -> None:
    c = cmd("v2l", {"action": "start", "power_w": 1500, "until": "2025-01-15T20:00:00Z"})
    assert c == V2LCommand("ev", "start", 1500.0, dt.datetime(2025, 1, 15, 20, tzinfo=dt.UTC), None)
    assert cmd("v2l", b"stop") == V2LCommand("ev", "stop")
    assert cmd("v2l", {"action": "stop", "request_id": "x"}).request_id == "x"


@pytest.mark.parametrize(
    ("name", "payload", "vehicle", "reason"),
    [
        ("mode", b"auto", "nope", "unknown vehicle"),
        ("fly", b"auto", "ev", "unknown command"),
        ("mode", b"turbo", "ev", "mode must be one of"),
        ("mode", {"mode": 3}, "ev", "mode must be a string"),
        ("mode", {"mode": "auto", "extra": 1}, "ev", "unknown field"),
        ("mode", b"", "ev", "empty payload"),
        ("mode", b"{broken", "ev", "invalid JSON"),
        ("mode", b"\xff\xfe", "ev", "not UTF-8"),
        ("mode", b"x" * (MAX_COMMAND_PAYLOAD_BYTES + 1), "ev", "exceeds"),
        ("departure", {"at": "2025-01-14T07:30:00Z", "target_soc_percent": 80}, "ev", "in the past"),
        ("departure", {"at": "2025-03-14T07:30:00Z", "target_soc_percent": 80}, "ev", "14 days"),
        ("departure", {"at": "soon", "target_soc_percent": 80}, "ev", "not an ISO 8601"),
        ("departure", {"at": 5, "target_soc_percent": 80}, "ev", "time string"),
        ("departure", {"at": "2025-01-16T07:30:00Z"}, "ev", "missing target_soc_percent"),
        ("departure", {"at": "2025-01-16T07:30:00Z", "target_soc_percent": "80"}, "ev", "must be a number"),
        (
            "departure",
            {"at": "2025-01-16T07:30:00Z", "target_soc_percent": 10},
            "ev",
            "not above the reserve",
        ),
        (
            "departure",
            {"at": "2025-01-16T07:30:00Z", "target_soc_percent": 95},
            "ev",
            "above max_soc_percent",
        ),
        ("departure", {"at": "2025-01-16T07:30:00Z", "target_soc_percent": 1e400}, "ev", "within 0-100"),
        ("departure", {"at": "2025-01-16T07:30:00Z", "target_soc_percent": True}, "ev", "must be a number"),
        ("departure", {"clear": True, "at": "07:00"}, "ev", "no other fields"),
        ("departure", [1, 2], "ev", "JSON object"),
        (
            "weekly_departure",
            {"weekday": "someday", "time": "07:00", "target_soc_percent": 80},
            "ev",
            "weekday",
        ),
        (
            "weekly_departure",
            {"weekday": "monday", "time": "7h", "target_soc_percent": 80},
            "ev",
            "not HH:MM",
        ),
        (
            "weekly_departure",
            {"weekday": "monday", "time": "07:00+01:00", "target_soc_percent": 80},
            "ev",
            "local time",
        ),
        ("weekly_departure", {"weekday": "monday", "target_soc_percent": 80}, "ev", "missing time"),
        (
            "weekly_departure",
            {"weekday": "monday", "time": "07:30", "target_soc_percent": 80, "return_time": "07:00"},
            "ev",
            "return_time 07:00 is not after time 07:30",
        ),
        ("weekly_departure", {"weekday": "monday", "clear": True, "time": "07:00"}, "ev", "no other fields"),
        ("mode", {"mode": "auto", "target_soc_percent": 100}, "ev", "charge_now only"),
        ("mode", {"mode": "charge_now", "target_soc_percent": 101}, "ev", "at most 100"),
        ("mode", {"mode": "charge_now", "target_soc_percent": 10}, "ev", "above the reserve"),
        ("mode", {"mode": "charge_now", "target_soc_percent": "100"}, "ev", "must be a number"),
        ("v2l", {"action": "start"}, "van", "does not allow V2L"),
        ("v2l", {"action": "pause"}, "ev", "start or stop"),
        ("v2l", {"action": "start", "power_w": -5}, "ev", "within 0-"),
        ("v2l", {"action": "start", "power_w": 1e12}, "ev", "within 0-"),
        ("v2l", {"action": "start", "power_w": "1500"}, "ev", "must be a number"),
        ("v2l", {"action": "start", "until": "2025-01-15T00:00:00Z"}, "ev", "in the past"),
        ("v2l", {"action": "start", "until": "later"}, "ev", "ISO 8601"),
        ("v2l", {"action": "start", "request_id": "x" * 65}, "ev", "request_id"),
        # Valid date-times whose UTC time falls outside years 1-9999 (the third one is site-local).
        ("departure", {"at": "9999-12-31T23:59:59-01:00", "target_soc_percent": 80}, "ev", "at .* range"),
        ("departure", {"at": "0001-01-01T00:30:00+01:00", "target_soc_percent": 80}, "ev", "at .* range"),
        ("departure", {"at": "0001-01-01T00:00", "target_soc_percent": 80}, "ev", "at .* range"),
        ("departure", {"at": "9999-12-31T23:59", "target_soc_percent": 80}, "ev", "14 days"),
        ("v2l", {"action": "start", "until": "9999-12-31T23:59:59-01:00"}, "ev", "until .* out of range"),
        ("v2l", {"action": "start", "until": "0001-01-01T00:30:00+01:00"}, "ev", "until .* out of range"),
    ],
)
def test_refusals(name: str, payload: Any, vehicle: str, reason: str) -> None:
    with pytest.raises(CommandError, match=reason):
        cmd(name, payload, vehicle)


def test_nan_in_command_refused() -> None:
    with pytest.raises(CommandError, match="within 0-100"):
        cmd("departure", b'{"at": "2025-01-16T07:30:00Z", "target_soc_percent": NaN}')


def test_request_id_survives_a_refusal() -> None:
    assert request_id_of(b'{"request_id": "abc", "mode": 5}') == "abc"
    assert request_id_of(b"not json") is None
    assert request_id_of(b'{"request_id": ["x"]}') is None


HUGE = "9" * 400  # an integer JSON allows but a float cannot hold


@pytest.mark.parametrize(
    ("name", "payload", "reason"),
    [
        ("departure", f'{{"at": "2025-01-16T07:30:00Z", "target_soc_percent": {HUGE}}}', "within 0-100"),
        (
            "weekly_departure",
            f'{{"weekday": "monday", "time": "07:00", "target_soc_percent": -{HUGE}}}',
            "0-100",
        ),
        ("v2l", f'{{"action": "start", "power_w": {HUGE}}}', "within 0-"),
        ("v2l", '{"action": "start", "power_w": NaN}', "within 0-"),
    ],
)
def test_huge_and_non_finite_numbers_are_refused_not_raised(name: str, payload: str, reason: str) -> None:
    with pytest.raises(CommandError, match=reason):
        cmd(name, payload.encode())


COMMAND_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=True)
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.text(max_size=12)
    | st.sampled_from(
        [
            *("start", "stop", "monday", "07:30", "2025-01-16T07:30:00Z", "auto"),
            *("9999-12-31T23:59:59-01:00", "0001-01-01T00:30:00+01:00", "0001-01-01T00:00"),
        ]
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    *("at", "target_soc_percent", "clear", "weekday", "time", "mode", "action"),
                    *("power_w", "until", "request_id"),
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(COMMAND_NAMES), COMMAND_JSON)
def test_fuzz_commands_only_raise_command_error(name: str, data: Any) -> None:
    try:
        raw = json.dumps(data).encode()
    except ValueError:  # an integer too long for json.dumps
        return
    with contextlib.suppress(CommandError):
        cmd(name, raw)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(COMMAND_NAMES), st.binary(max_size=100))
def test_fuzz_command_bytes_only_raise_command_error(name: str, raw: bytes) -> None:
    with contextlib.suppress(CommandError):
        cmd(name, raw)
    request_id_of(raw)


# ------------------------------------------------------------- over the broker


@pytest.fixture
def prefix() -> str:
    return f"v2x-test/{uid()}"


async def replies(p: aiomqtt.Client, count: int, timeout_s: float = 5.0) -> list[tuple[str, dict[str, Any]]]:
    got: list[tuple[str, dict[str, Any]]] = []
    async with asyncio.timeout(timeout_s):
        async for m in p.messages:
            assert isinstance(m.payload, bytes)
            got.append((m.topic.value, json.loads(m.payload)))
            if len(got) == count:
                break
    return got


async def test_times_beyond_the_datetime_range_get_a_refusal_reply(prefix: str) -> None:
    client = SiteMqttClient(site_config(prefix), ManualClock(T0), log_interval_s=0)
    base = f"{prefix}/v2x"
    with structlog.testing.capture_logs() as logs:
        async with running(client), peer() as p:
            await p.subscribe(f"{base}/reply/#", qos=1)
            await p.publish(
                f"{base}/cmd/ev/departure",
                b'{"at":"9999-12-31T23:59:59-01:00","target_soc_percent":80,"request_id":"x1"}',
                qos=1,
            )
            await p.publish(
                f"{base}/cmd/ev/v2l",
                b'{"action":"start","until":"0001-01-01T00:30:00+01:00","request_id":"x2"}',
                qos=1,
            )
            got = dict(await replies(p, 2))
    departure, v2l = got[f"{base}/reply/ev/departure"], got[f"{base}/reply/ev/v2l"]
    assert departure["ok"] is False and departure["request_id"] == "x1"
    assert departure["error"].startswith("at ") and "out of range" in departure["error"]
    assert v2l["ok"] is False and v2l["request_id"] == "x2"
    assert v2l["error"].startswith("until ") and "out of range" in v2l["error"]
    assert client.rejected == 2 and client.commands.empty()
    assert not [e for e in logs if e["log_level"] == "error"]
    refused = [e for e in logs if e["event"] == "command_rejected"]
    assert {e["topic"] for e in refused} == {f"{base}/cmd/ev/departure", f"{base}/cmd/ev/v2l"}


async def test_unexpected_error_in_a_command_is_answered_and_logged_with_the_topic(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = SiteMqttClient(site_config(prefix), ManualClock(T0))

    async def faulty_delivery(topic: str, command: Command) -> None:
        """A bug after validation (not in the handler): the command must still be answered."""
        raise RuntimeError("delivery bug")

    monkeypatch.setattr(client.command_channel, "_deliver", faulty_delivery)
    base = f"{prefix}/v2x"
    with structlog.testing.capture_logs() as logs:
        async with running(client) as task, peer() as p:
            await p.subscribe(f"{base}/reply/#", qos=1)
            await p.publish(f"{base}/cmd/ev/mode", b'{"mode":"auto","request_id":"r9"}', qos=1)
            [(topic, reply)] = await replies(p, 1)
            assert not task.done()
    assert topic == f"{base}/reply/ev/mode"
    assert reply["ok"] is False and reply["error"] == "internal error" and reply["request_id"] == "r9"
    failed = [e for e in logs if e["event"] == "command_failed"]
    assert [(e["topic"], e["log_level"]) for e in failed] == [(f"{base}/cmd/ev/mode", "error")]
    assert client.rejected == 1 and client.accepted == 0


async def test_command_topics_with_extra_or_missing_levels_are_logged_and_answered(prefix: str) -> None:
    client = SiteMqttClient(site_config(prefix), ManualClock(T0), log_interval_s=0)
    base = f"{prefix}/v2x"
    with structlog.testing.capture_logs() as logs:
        async with running(client), peer() as p:
            await p.subscribe(f"{base}/reply/#", qos=1)
            await p.publish(f"{base}/cmd/ev/mode/x", b'{"mode":"charge_now","request_id":"e1"}', qos=1)
            await p.publish(f"{base}/cmd/ev", b"auto", qos=1)  # no command name: nothing to answer
            await p.publish(f"{base}/cmd/ev/mode", b'{"mode":"auto","request_id":"ok1"}', qos=1)
            got = await replies(p, 2)
            await eventually(lambda: client.rejected == 2)
    assert [t for t, _ in got] == [f"{base}/reply/ev/mode"] * 2
    extra, ok = got[0][1], got[1][1]
    assert extra["ok"] is False and extra["request_id"] == "e1" and "extra level" in extra["error"]
    assert extra["vehicle_id"] == "ev" and extra["command"] == "mode"
    assert ok["ok"] is True and ok["request_id"] == "ok1"
    queued = [client.commands.get_nowait() for _ in range(client.commands.qsize())]
    assert queued == [SetMode("ev", VehicleMode.AUTO, "ok1")]  # the extra-level command did nothing
    warned = [e for e in logs if e["event"] == "command_topic_invalid"]
    assert [e["topic"] for e in warned] == [f"{base}/cmd/ev/mode/x", f"{base}/cmd/ev"]
    assert all(e["log_level"] == "warning" and e["reason"] for e in warned)
