"""Price and limit signals: parsing, newest-wins resolution, resampling to the plan grid, expiry; and
the refusal of out-of-range times through the MQTT client over the broker."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
from typing import Any

import numpy as np
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.clock import ManualClock
from controller.config import GridConfig, GridSignalsConfig, PriceConfig
from controller.mqtt import SiteMqttClient
from controller.signals import (
    MAX_SIGNAL_PAYLOAD_BYTES,
    SignalError,
    Timeline,
    limits_on_grid,
    mean_on_grid,
    parse_grid_state,
    parse_limit_signal,
    parse_price_signal,
    parse_pv_forecast,
    prices_on_grid,
    tariff_configured_on_grid,
)
from tests.test_mqtt_client import eventually, peer, running, site_config, uid

T0 = dt.datetime(2025, 1, 15, 0, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
Q = dt.timedelta(minutes=15)


def iso(t: dt.datetime) -> str:
    return t.isoformat()


def hourly(values: list[float], start: dt.datetime = T0, step: dt.timedelta = H) -> list[dict[str, Any]]:
    return [
        {"start": iso(start + i * step), "end": iso(start + (i + 1) * step), "value": v}
        for i, v in enumerate(values)
    ]


def enc(data: Any) -> bytes:
    return json.dumps(data).encode()


# --------------------------------------------------------------- price parsing


def test_price_array_parses_with_offsets_and_z() -> None:
    payload = enc(
        [
            {"start": "2025-01-15T01:00:00+01:00", "end": "2025-01-15T02:00:00+01:00", "value": 0.2531},
            {"start": "2025-01-15T01:00:00Z", "end": "2025-01-15T02:00:00Z", "value": -0.01},
        ]
    )
    signal = parse_price_signal(payload)
    assert [s.start for s in signal.slots] == [T0, T0 + H]
    assert signal.slots[0].value_per_kwh == 0.2531
    assert signal.issued_at is None


def test_price_envelope_units_and_issued_at() -> None:
    mwh = parse_price_signal(enc({"unit": "EUR/MWh", "issued_at": iso(T0), "prices": hourly([85.3])}))
    assert mwh.slots[0].value_per_kwh == pytest.approx(0.0853)
    assert mwh.issued_at == T0
    cents = parse_price_signal(enc({"unit": "ct/kWh", "prices": hourly([25.0])}))
    assert cents.slots[0].value_per_kwh == pytest.approx(0.25)
    epoch = parse_price_signal(enc([{"start": T0.timestamp(), "end": (T0 + H).timestamp(), "value": 0.1}]))
    assert epoch.slots[0].start == T0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b'"prices"', "not an array or object"),
        (b"[]", "no price slots"),
        (enc([1, 2]), "not an object"),
        (enc([{"start": iso(T0), "value": 0.1}]), "no 'end'"),
        (enc([{"start": "2025-01-15T00:00", "end": "2025-01-15T01:00", "value": 0.1}]), "no timezone"),
        (enc([{"start": "tomorrow", "end": iso(T0), "value": 0.1}]), "not an ISO 8601"),
        (enc([{"start": True, "end": iso(T0), "value": 0.1}]), "not a time"),
        (enc([{"start": 12, "end": iso(T0), "value": 0.1}]), "plausible Unix"),
        (enc(hourly([0.1])[:1] * 1 + [{"start": iso(T0), "end": iso(T0), "value": 1}]), "1 min to 24 h"),
        (enc([{"start": iso(T0), "end": iso(T0 + 2 * 24 * H), "value": 0.1}]), "1 min to 24 h"),
        (enc(hourly([0.1]) + hourly([0.2], T0 + dt.timedelta(minutes=30))), "overlap"),
        (enc(hourly(["0.1"])), "not a number"),  # type: ignore[list-item]
        (enc(hourly([None])), "not a number"),  # type: ignore[list-item]
        (enc(hourly([True])), "not a number"),
        (b'[{"start":"2025-01-15T00:00:00Z","end":"2025-01-15T01:00:00Z","value":NaN}]', "not a finite"),
        (b'[{"start":"2025-01-15T00:00:00Z","end":"2025-01-15T01:00:00Z","value":1e999}]', "not a finite"),
        (enc(hourly([85.3])), "implausible"),  # per MWh sent without a unit
        (enc({"unit": "USD/kWh", "prices": hourly([0.1])}), "site currency"),
        (enc({"unit": "EUR/GJ", "prices": hourly([0.1])}), "per kWh"),
        (enc({"unit": 5, "prices": hourly([0.1])}), "not like"),
        (enc({"prices": {"a": 1}}), "not an array"),
        (enc(hourly([0.1] * 2001, step=dt.timedelta(minutes=15))), "exceed"),
        (b" " * (MAX_SIGNAL_PAYLOAD_BYTES + 1), "exceeds"),
        (b"\xff", "not UTF-8"),
    ],
)
def test_bad_price_payloads(payload: bytes, reason: str) -> None:
    with pytest.raises(SignalError, match=reason):
        parse_price_signal(payload)


# ---------------------------------------------------------------- resolution


def test_newest_message_wins_where_windows_overlap() -> None:
    tl = Timeline()
    tl.add([(T0, T0 + 4 * H, 1.0)], T0, None)
    tl.add([(T0 + H, T0 + 2 * H, 2.0)], T0 + dt.timedelta(seconds=1), None)
    assert tl.segments() == [(T0, T0 + H, 1.0), (T0 + H, T0 + 2 * H, 2.0), (T0 + 2 * H, T0 + 4 * H, 1.0)]


def test_issued_at_orders_messages_that_arrive_out_of_order() -> None:
    tl = Timeline()
    tl.add([(T0, T0 + H, 2.0)], T0, issued_at=T0 - dt.timedelta(minutes=1))  # newer, arrives first
    tl.add([(T0, T0 + H, 1.0)], T0 + dt.timedelta(seconds=5), issued_at=T0 - dt.timedelta(minutes=9))
    assert tl.segments() == [(T0, T0 + H, 2.0)]


def test_equal_versions_resolve_by_arrival() -> None:
    tl = Timeline()
    tl.add([(T0, T0 + H, 1.0)], T0, issued_at=T0)
    tl.add([(T0, T0 + H, 2.0)], T0, issued_at=T0)
    assert tl.segments() == [(T0, T0 + H, 2.0)]


def test_issued_at_in_the_future_cannot_outrank_later_messages() -> None:
    tl = Timeline()
    tl.add([(T0, T0 + H, 9.0)], T0, issued_at=T0 + dt.timedelta(days=3650))  # sender clock far ahead
    tl.add([(T0, T0 + H, 1.0)], T0 + dt.timedelta(seconds=5), issued_at=T0 + dt.timedelta(seconds=4))
    assert tl.segments() == [(T0, T0 + H, 1.0)]
    tl.add([(T0, T0 + H, 2.0)], T0 + dt.timedelta(seconds=6), issued_at=None)
    assert tl.segments() == [(T0, T0 + H, 2.0)]


def test_old_windows_are_pruned() -> None:
    tl = Timeline()
    for i in range(10):
        tl.add([(T0 + i * H, T0 + (i + 1) * H, float(i))], T0, None)
    assert len(tl) == 10
    tl.prune(T0 + dt.timedelta(days=30))
    assert len(tl) == 0 and tl.segments() == []


def cap_at(tl: Timeline, at: dt.datetime) -> float | None:
    return next((v for s, e, v in tl.segments() if s <= at < e), None)


def test_long_cap_in_force_survives_many_later_short_caps() -> None:
    # A 6-day import cap, then many overlapping 10-minute caps: the long cap still holds at +3 days
    # (it used to fall out after 64 later messages, leaving the fallback limit in force).
    tl = Timeline()
    tl.add([(T0, T0 + dt.timedelta(days=6), 5000.0)], T0, None)
    for i in range(100):
        now = T0 + dt.timedelta(minutes=1 + i)
        tl.add([(now, now + dt.timedelta(minutes=10), 6000.0)], now, None)
    probe = T0 + dt.timedelta(days=3)
    assert cap_at(tl, probe) == 5000.0
    out = limits_on_grid(GRID, SIGNALS, tl, Timeline(), probe, Q, 1)
    assert out.import_limit_w.tolist() == [5000.0]


def test_flood_of_messages_stays_bounded_without_dropping_a_live_cap() -> None:
    tl = Timeline(max_segments=40)
    tl.add([(T0, T0 + dt.timedelta(days=6), 5000.0)], T0, None)
    with structlog.testing.capture_logs() as logs:
        for i in range(500):
            now = T0 + dt.timedelta(minutes=1 + i)
            tl.add([(now, now + dt.timedelta(minutes=10), 6000.0 + i)], now, None)  # ended ones go
            tl.add([(now, now + dt.timedelta(minutes=10), 7000.0 + i)], now, None)  # hides the one above
            assert sum(1 for _ in tl.segments()) <= 40 and len(tl) <= 40
    assert logs == []
    assert cap_at(tl, T0 + dt.timedelta(days=3)) == 5000.0
    now = T0 + dt.timedelta(minutes=500)
    assert cap_at(tl, now) == 7000.0 + 499  # the newest message still wins


def test_live_windows_go_only_as_last_resort_with_a_warning() -> None:
    tl = Timeline(max_segments=3, name="import caps")
    with structlog.testing.capture_logs() as logs:
        for i in range(10):
            tl.add([(T0 + i * H, T0 + (i + 1) * H, float(i))], T0, None)
    assert len(tl) == 3
    assert [s[2] for s in tl.segments()] == [7.0, 8.0, 9.0]
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 7 and warnings[0]["timeline"] == "import caps"
    assert warnings[0]["dropped"] == [(iso(T0), iso(T0 + H), 0.0)]


SEGMENTS = st.lists(
    st.tuples(st.integers(0, 20), st.integers(1, 6), st.integers(-3, 3)).map(
        lambda t: (T0 + t[0] * Q, T0 + (t[0] + t[1]) * Q, float(t[2]))
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(SEGMENTS, st.integers(0, 3)), min_size=1, max_size=6))
def test_resolution_matches_brute_force_newest_wins(messages: list[tuple[list[Any], int]]) -> None:
    tl = Timeline()
    for segments, issued_minutes in messages:
        tl.add(segments, T0 + H, T0 + dt.timedelta(minutes=issued_minutes))  # issued before arrival
    resolved = tl.segments()
    for a, b in itertools.pairwise(resolved):
        assert a[1] <= b[0]
    # Brute force: per quarter hour, the last-added message among those with the highest issued_at
    # (and inside one message its last window).
    order = sorted(range(len(messages)), key=lambda i: (messages[i][1], i))
    for q in range(30):
        t = T0 + q * Q + dt.timedelta(minutes=7)
        expected = None
        for i in order:
            for start, end, value in messages[i][0]:
                if start <= t < end:
                    expected = value
        got = next((v for s, e, v in resolved if s <= t < e), None)
        assert got == expected


# ---------------------------------------------------------------- prices on grid


def dynamic_cfg(**kw: Any) -> PriceConfig:
    return PriceConfig.model_validate({"dynamic_topic": "p", **kw})


def timeline_of(values: list[float], start: dt.datetime = T0, step: dt.timedelta = H) -> Timeline:
    tl = Timeline()
    signal = parse_price_signal(enc(hourly(values, start, step)))
    tl.add(((s.start, s.end, s.value_per_kwh) for s in signal.slots), start, signal.issued_at)
    return tl


def test_hourly_prices_resample_to_quarter_hours_with_tariff() -> None:
    cfg = dynamic_cfg(dynamic_multiplier=1.21, dynamic_markup_per_kwh=0.15)
    grid = prices_on_grid(cfg, cfg, timeline_of([0.10, 0.20]), Timeline(), "UTC", T0, Q, 8)
    assert grid.import_per_kwh == pytest.approx([0.10 * 1.21 + 0.15] * 4 + [0.20 * 1.21 + 0.15] * 4)
    assert grid.import_known.all()
    assert not grid.export_known.any() and (grid.export_per_kwh == 0).all()  # no data at all


def test_quarter_hour_prices_average_onto_an_hourly_grid() -> None:
    cfg = dynamic_cfg()
    tl = timeline_of([0.1, 0.2, 0.3, 0.4, 1.0], step=Q)
    grid = prices_on_grid(cfg, cfg, tl, tl, "UTC", T0, H, 2)
    assert grid.import_per_kwh == pytest.approx([0.25, 1.0])  # the second hour: only its covered part
    assert grid.import_known.tolist() == [True, True]


def test_unaligned_grid_start_uses_time_weighted_mean() -> None:
    cfg = dynamic_cfg()
    grid = prices_on_grid(cfg, cfg, timeline_of([0.0, 1.0]), Timeline(), "UTC", T0 + 3 * Q, H, 1)
    assert grid.import_per_kwh[0] == pytest.approx(0.75)


def test_missing_dynamic_prices_are_filled_and_flagged() -> None:
    cfg = dynamic_cfg()
    day = [float(h) / 100 for h in range(24)]
    tl = timeline_of([*day, 0.5, 0.6])  # a day and two hours of the next
    grid = prices_on_grid(cfg, cfg, tl, tl, "UTC", T0 + 24 * H, H, 5)
    assert grid.import_known.tolist() == [True, True, False, False, False]
    assert grid.import_per_kwh == pytest.approx([0.5, 0.6, 0.02, 0.03, 0.04])  # same time yesterday
    later = prices_on_grid(cfg, cfg, tl, tl, "UTC", T0 + 48 * H, H, 2)
    assert later.import_per_kwh == pytest.approx([0.5, 0.6])  # yesterday is the forecast's tail
    far = prices_on_grid(cfg, cfg, tl, tl, "UTC", T0 + 25 * H, H, 3)
    assert far.import_per_kwh == pytest.approx([0.6, 0.02, 0.03])


def test_gap_without_yesterday_holds_last_known_then_next_known() -> None:
    cfg = dynamic_cfg()
    tl = Timeline()
    tl.add([(T0 + H, T0 + 2 * H, 0.3), (T0 + 4 * H, T0 + 5 * H, 0.7)], T0, None)
    grid = prices_on_grid(cfg, cfg, tl, tl, "UTC", T0, H, 6)
    assert grid.import_per_kwh == pytest.approx([0.3, 0.3, 0.3, 0.3, 0.7, 0.7])
    assert grid.import_known.tolist() == [False, True, False, False, True, False]


def test_static_price_fills_dynamic_gaps() -> None:
    cfg = dynamic_cfg(static_price_per_kwh=0.30)
    grid = prices_on_grid(cfg, cfg, timeline_of([0.1]), Timeline(), "UTC", T0, H, 2)
    assert grid.import_per_kwh == pytest.approx([0.1, 0.30])
    assert grid.export_per_kwh == pytest.approx([0.30, 0.30])
    assert grid.import_known.all() and grid.export_known.all()


def test_time_of_use_in_local_time_across_midnight_and_weekdays() -> None:
    cfg = PriceConfig.model_validate(
        {
            "static_price_per_kwh": 0.30,
            "time_of_use": [
                {"start": "22:00", "end": "06:00", "price_per_kwh": 0.10, "days": ["wednesday"]},
                {"start": "17:00", "end": "17:30", "price_per_kwh": 0.50},
            ],
        }
    )
    # 2025-01-15 is a Wednesday; Amsterdam is UTC+1 in January.
    start = dt.datetime(2025, 1, 15, 20, 0, tzinfo=dt.UTC)  # 21:00 local
    out = tariff_configured_on_grid(cfg, _tz("Europe/Amsterdam"), start, H, 10)
    assert out is not None
    # 21 local base, 22..05 Wednesday night cheap (after midnight counts for the Wednesday window), 06 base
    assert out.tolist() == pytest.approx([0.30] + [0.10] * 8 + [0.30])
    peak = tariff_configured_on_grid(
        cfg, _tz("Europe/Amsterdam"), dt.datetime(2025, 1, 16, 16, tzinfo=dt.UTC), H, 1
    )
    assert peak is not None and peak[0] == pytest.approx((0.50 + 0.30) / 2)  # half the hour at peak
    thursday_night = tariff_configured_on_grid(
        cfg, _tz("Europe/Amsterdam"), dt.datetime(2025, 1, 16, 22, tzinfo=dt.UTC), H, 1
    )
    assert thursday_night is not None and thursday_night[0] == pytest.approx(0.30)


def _tz(name: str) -> Any:
    import zoneinfo

    return zoneinfo.ZoneInfo(name)


# --------------------------------------------------------------------- limits


def test_limit_signal_forms() -> None:
    now = T0 + 10 * H
    sig = parse_limit_signal(enc({"import_kw": 4.2, "start": iso(T0), "end": iso(T0 + H)}), now)
    assert sig.windows[0].import_limit_w == pytest.approx(4200.0) and sig.windows[0].export_limit_w is None
    sig = parse_limit_signal(enc({"export_w": 0, "duration_s": 900}), now)
    assert (sig.windows[0].start, sig.windows[0].end) == (now, now + Q)
    assert sig.windows[0].export_limit_w == 0.0
    sig = parse_limit_signal(
        enc({"issued_at": iso(T0), "limits": [{"import_w": 5000, "export_kw": 2, "duration_s": 60}]}), now
    )
    assert sig.issued_at == T0 and sig.windows[0].export_limit_w == 2000.0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"import_kw": 4.2}, "exactly one of end or duration_s"),
        ({"import_kw": 4.2, "end": iso(T0 + H), "duration_s": 5}, "exactly one of end or duration_s"),
        ({"duration_s": 60}, "sets no cap"),
        ({"import_kw": 4.2, "import_w": 4200, "duration_s": 60}, "both import_w and import_kw"),
        ({"import_kw": -1, "duration_s": 60}, "negative"),
        ({"import_kw": 1e12, "duration_s": 60}, "implausible"),
        ({"import_kw": "4.2", "duration_s": 60}, "not a number"),
        ({"import_kw": 4.2, "duration_s": 0}, "above 0"),
        ({"import_kw": 4.2, "duration_s": 8 * 86400}, "at most 7 days"),
        ({"import_kw": 4.2, "start": iso(T0 + H), "end": iso(T0)}, "end after its start"),
        ({"limits": [1]}, "not an object"),
        ({"limits": []}, "no limit windows"),
    ],
)
def test_bad_limit_payloads(data: Any, reason: str) -> None:
    with pytest.raises(SignalError, match=reason):
        parse_limit_signal(enc(data), T0)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"import_kw": NaN, "duration_s": 60}', "not a finite"),
        (b'{"import_kw": 4.2, "duration_s": }', "invalid JSON"),
        (b'{"import_kw": 4.2, "duration_s": 1e999}', "not a finite"),
        (b"[" * 10_000, "invalid JSON"),
    ],
)
def test_raw_bad_limit_payloads(payload: bytes, reason: str) -> None:
    with pytest.raises(SignalError, match=reason):
        parse_limit_signal(payload, T0)


FAR_PAST = "0001-01-01T00:30:00+01:00"  # a valid date-time whose UTC time is before year 1
FAR_FUTURE = "9999-12-31T23:59:59-01:00"  # ... and after year 9999


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"import_kw": 4.2, "start": FAR_PAST, "duration_s": 60}, "window 0 start .* out of range"),
        ({"import_kw": 4.2, "start": iso(T0), "end": FAR_FUTURE}, "window 0 end .* out of range"),
        (
            {"import_kw": 4.2, "start": "9999-12-31T23:00:00Z", "duration_s": 7200},
            "window 0 end is out of range",
        ),
        ({"import_kw": 4.2, "start": "9999-12-31T23:59:59Z", "duration_s": 7 * 86400}, "out of range"),
        (
            {"issued_at": FAR_FUTURE, "limits": [{"import_kw": 4.2, "duration_s": 60}]},
            "issued_at .* out of range",
        ),
    ],
)
def test_limit_times_beyond_the_datetime_range_are_refused(data: Any, reason: str) -> None:
    with pytest.raises(SignalError, match=reason):
        parse_limit_signal(enc(data), T0)


@pytest.mark.parametrize(
    ("slots", "issued_at", "reason"),
    [
        ([{"start": FAR_PAST, "end": iso(T0), "value": 0.1}], None, "slot 0 start .* out of range"),
        ([{"start": iso(T0), "end": FAR_FUTURE, "value": 0.1}], None, "slot 0 end .* out of range"),
        (hourly([0.1]), FAR_PAST, "issued_at .* out of range"),
    ],
)
def test_price_and_forecast_times_beyond_the_datetime_range_are_refused(
    slots: list[Any], issued_at: str | None, reason: str
) -> None:
    extra = {} if issued_at is None else {"issued_at": issued_at}
    with pytest.raises(SignalError, match=reason):
        parse_price_signal(enc({"prices": slots, **extra}))
    with pytest.raises(SignalError, match=reason):
        parse_pv_forecast(enc({"forecast": slots, **extra}))


GRID = GridConfig(import_limit_kw=17.3, export_limit_kw=10.0, fallback_import_limit_kw=11.0)
SIGNALS = GridSignalsConfig(limit_topic="grid/limits", guaranteed_import_kw=4.2)


def caps(*windows: tuple[dt.datetime, dt.datetime, float]) -> Timeline:
    tl = Timeline()
    for w in windows:
        tl.add([w], T0, None)
    return tl


def test_limits_without_topic_are_the_contract() -> None:
    out = limits_on_grid(GRID, GridSignalsConfig(), Timeline(), Timeline(), T0, Q, 3)
    assert out.import_limit_w.tolist() == [17300.0] * 3
    assert out.export_limit_w.tolist() == [10000.0] * 3
    assert not out.from_signal.any()


def test_signal_applies_in_its_window_and_expiry_falls_back() -> None:
    imp = caps((T0 + Q, T0 + 3 * Q, 5000.0))
    exp = caps((T0, T0 + Q, 0.0))
    out = limits_on_grid(GRID, SIGNALS, imp, exp, T0, Q, 4)
    assert out.import_limit_w.tolist() == [11000.0, 5000.0, 5000.0, 11000.0]  # fallback outside
    assert out.export_limit_w.tolist() == [0.0, 10000.0, 10000.0, 10000.0]
    assert out.from_signal.tolist() == [True, True, True, False]


def test_guaranteed_floor_and_contract_ceiling() -> None:
    imp = caps((T0, T0 + Q, 1000.0), (T0 + Q, T0 + 2 * Q, 50_000.0))
    exp = caps((T0, T0 + 2 * Q, 99_000.0))
    out = limits_on_grid(GRID, SIGNALS, imp, exp, T0, Q, 2)
    assert out.import_limit_w.tolist() == [4200.0, 17300.0]
    assert out.export_limit_w.tolist() == [10000.0, 10000.0]


def test_cap_starting_mid_step_binds_the_whole_step() -> None:
    imp = caps((T0 + dt.timedelta(minutes=5), T0 + 2 * H, 6000.0))
    out = limits_on_grid(GRID, SIGNALS, imp, Timeline(), T0, Q, 1)
    assert out.import_limit_w[0] == 6000.0
    release = caps((T0 + dt.timedelta(minutes=5), T0 + 2 * H, 16000.0))
    out = limits_on_grid(GRID, SIGNALS, release, Timeline(), T0, Q, 1)
    assert out.import_limit_w[0] == 11000.0  # the uncovered first 5 minutes are under the fallback


def test_grid_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="step"):
        limits_on_grid(GRID, SIGNALS, Timeline(), Timeline(), T0, dt.timedelta(0), 1)
    with pytest.raises(ValueError, match="naive"):
        limits_on_grid(GRID, SIGNALS, Timeline(), Timeline(), dt.datetime(2025, 1, 1), Q, 1)
    empty = limits_on_grid(GRID, SIGNALS, Timeline(), Timeline(), T0, Q, 0)
    assert empty.import_limit_w.shape == (0,) and np.asarray(empty.from_signal).dtype == np.bool_


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_signal_parsers_only_raise_signal_error(payload: bytes) -> None:
    for parse in (lambda p: parse_price_signal(p), lambda p: parse_limit_signal(p, T0)):
        with contextlib.suppress(SignalError):
            parse(payload)


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.floats()
    | st.integers()
    | st.sampled_from([iso(T0), iso(T0 + H), "x", FAR_PAST, FAR_FUTURE, "9999-12-31T23:59:59Z"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["start", "end", "value", "prices", "unit", "import_kw", "export_w", "duration_s", "limits"]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(JSONISH)
def test_fuzz_signal_json_only_raises_signal_error(data: Any) -> None:
    payload = json.dumps(data).encode()
    for parse in (lambda p: parse_price_signal(p), lambda p: parse_limit_signal(p, T0)):
        with contextlib.suppress(SignalError):
            parse(payload)


@pytest.mark.parametrize(
    ("payload", "lost"),
    [(b"true", True), (b" LOST\n", True), (b"0", False), (b"ok", False), (b'{"grid_lost": true}', True)],
)
def test_grid_state_payloads(payload: bytes, lost: bool) -> None:
    assert parse_grid_state(payload) is lost


@pytest.mark.parametrize(
    "payload", [b"maybe", b'{"grid_lost": "yes"}', b"{broken", b"\xff\xfe", b"1" * 2000, b"[true]"]
)
def test_grid_state_rejects_garbage(payload: bytes) -> None:
    with pytest.raises(SignalError):
        parse_grid_state(payload)


def test_pv_forecast_in_kw_or_w_resampled_to_the_grid() -> None:
    slots = [{"start": iso(T0), "end": iso(T0 + H), "value": 2.0}]
    forecast = parse_pv_forecast(json.dumps({"unit": "kW", "forecast": slots}).encode())
    assert forecast.segments == ((T0, T0 + H, 2000.0),)
    in_watts = parse_pv_forecast(json.dumps([{**slots[0], "value": 1500}]).encode())
    assert in_watts.segments[0][2] == 1500.0
    values, known = mean_on_grid(forecast.segments, T0, Q, 6)
    assert values.tolist() == [2000.0] * 4 + [0.0, 0.0] and known.tolist() == [True] * 4 + [False] * 2


@pytest.mark.parametrize(
    "payload",
    [
        b"[]",
        json.dumps(
            {
                "unit": "MW",
                "forecast": [{"start": "2025-01-15T00:00:00Z", "end": "2025-01-15T01:00:00Z", "value": 1}],
            }
        ).encode(),
        json.dumps([{"start": "2025-01-15T00:00:00Z", "end": "2025-01-15T01:00:00Z", "value": -5}]).encode(),
        json.dumps([{"start": "2025-01-15T00:00:00Z", "value": 5}]).encode(),
        b'{"forecast": 3}',
    ],
)
def test_pv_forecast_rejects_garbage(payload: bytes) -> None:
    with pytest.raises(SignalError):
        parse_pv_forecast(payload)


# ---------------------------------------------------------- over the broker


async def test_times_beyond_the_datetime_range_are_rejected_like_any_bad_signal() -> None:
    prefix = f"v2x-test/{uid()}"
    client = SiteMqttClient(site_config(prefix), ManualClock(T0 + 12 * H), log_interval_s=0)
    bad = {
        "grid/limits": enc({"import_kw": 4.2, "start": FAR_PAST, "duration_s": 60}),
        "prices/import": enc([{"start": iso(T0), "end": FAR_FUTURE, "value": 0.1}]),
        "prices/export": enc({"issued_at": FAR_FUTURE, "prices": hourly([0.1])}),
    }
    with structlog.testing.capture_logs() as logs:
        async with running(client), peer() as p:
            for suffix, payload in bad.items():
                await p.publish(f"{prefix}/{suffix}", payload, qos=1)
            await eventually(lambda: client.rejected == len(bad))
            await p.publish(f"{prefix}/grid/limits", enc({"import_kw": 5, "duration_s": 60}), qos=1)
            await eventually(lambda: client.accepted == 1)  # still ingesting
    rejected = [e for e in logs if e["event"] == "signal_rejected"]
    assert [e["topic"] for e in rejected] == [f"{prefix}/{s}" for s in bad]
    assert all(e["log_level"] == "warning" and "out of range" in e["reason"] for e in rejected)
    assert not [e for e in logs if e["log_level"] == "error"]  # no traceback (ingest_failed)
    assert client.inputs.price_updates == 0 and client.inputs.limit_updates == 1


@settings(max_examples=40, deadline=None)
@given(
    windows=st.lists(
        st.tuples(st.integers(-200, 300), st.integers(1, 12), st.floats(-1, 1, allow_nan=False)),
        min_size=0,
        max_size=30,
    ),
    offsets=st.lists(st.integers(-100, 200), min_size=1, max_size=12),
)
def test_a_timelines_means_on_a_sliding_grid_are_the_plain_resampling_exactly(
    windows: list[tuple[int, int, float]], offsets: list[int]
) -> None:
    """Cached per step while the segments stay the same, recomputed once they change: every answer
    equals :func:`mean_on_grid` of the current segments, bit for bit."""
    t0 = dt.datetime(2026, 5, 4, tzinfo=dt.UTC)
    quarter = dt.timedelta(minutes=15)
    timeline = Timeline(keep_history=dt.timedelta(days=30))
    half = len(windows) // 2
    for batch in (windows[:half], windows[half:]):
        timeline.add(
            [
                (t0 + start * quarter, t0 + (start + length) * quarter, value)
                for start, length, value in batch
            ],
            t0,
            None,
        )
        for offset in offsets:
            start = t0 + offset * quarter
            for step, n in ((quarter, 96), (4 * quarter, 24)):
                cached = timeline.mean_on_grid(start, step, n)
                plain = mean_on_grid(timeline.segments(), start, step, n)
                assert cached[0].tolist() == plain[0].tolist() and cached[1].tolist() == plain[1].tolist()
