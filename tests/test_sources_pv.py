"""PV forecast sources through real HTTP (tests/http_stub.py): the requests they make, what their
answers become, their errors.

Fixture formats: Open-Meteo as in its forecast API docs (https://open-meteo.com/en/docs: the
``minutely_15`` block with ``time`` and one array per variable, ``minutely_15_units``, errors
``{"error": true, "reason": ...}``); forecast.solar as in its API docs
(https://doc.forecast.solar/api) and the ``forecast_solar`` client's test fixtures
(home-assistant-libs/forecast_solar, tests/fixtures/forecast.json and ratelimit.json).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, get_args

import httpx
import pytest

from controller.config.sources import ForecastSolarSource, OpenMeteoSource, PvSource
from controller.signals import PowerForecast
from controller.sources.base import SourceAuthError, SourceContext, SourceError, find_source, source_names
from controller.sources.http_client import SourceBusy, fetch_source
from controller.sources.pv import ForecastSolarPv, OpenMeteoPv, sum_forecasts
from controller.sources.pv.common import south_azimuth_deg
from tests.http_stub import Answer, Seen, http_stub

UTC = dt.UTC
CTX = SourceContext(env={})


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def _rounded(forecast: PowerForecast) -> list[tuple[dt.datetime, dt.datetime, float]]:
    return [(a, b, round(w, 6)) for a, b, w in forecast.segments]


def _json(data: Any, status: int = 200) -> Answer:
    return Answer(status, json.dumps(data).encode())


async def _fetch(source: Any, start: dt.datetime, end: dt.datetime) -> list[PowerForecast]:
    async with httpx.AsyncClient(timeout=5) as client:
        return await fetch_source(client, source, start, end)


def test_both_sources_are_registered_under_their_config_type() -> None:
    assert find_source("pv", "open_meteo") is OpenMeteoPv
    assert find_source("pv", "forecast_solar") is ForecastSolarPv
    # every PV source type of the config has its class (tests may register more)
    models = get_args(get_args(PvSource)[0])
    config_types = {get_args(m.model_fields["type"].annotation)[0] for m in models}
    assert config_types == {"forecast_solar", "open_meteo"}
    assert config_types <= set(source_names("pv"))


@pytest.mark.parametrize(
    ("compass", "south"), [(180, 0), (90, -90), (270, 90), (0, 180), (135, -45), (225, 45), (359, 179)]
)
def test_compass_azimuth_becomes_south_based(compass: float, south: float) -> None:
    assert south_azimuth_deg(compass) == pytest.approx(south)


# --- Open-Meteo -------------------------------------------------------------------------------------


def _open_meteo_cfg(url: str) -> OpenMeteoSource:
    return OpenMeteoSource.model_validate(
        {
            "type": "open_meteo",
            "base_url": url,
            "latitude": 52.52,
            "longitude": 13.41,
            "arrays": [
                {"tilt_deg": 30, "azimuth_deg": 90, "kwp": 5, "losses_percent": 10, "inverter_kw": 3},
                {"tilt_deg": 30, "azimuth_deg": 270, "kwp": 4},  # default losses: 14 %
                {"tilt_deg": 30, "azimuth_deg": 270, "kwp": 2, "inverter_kw": 1},
            ],
        }
    )


def _open_meteo_body(times: list[str], gti: list[Any]) -> dict[str, Any]:
    return {
        "latitude": 52.52,
        "longitude": 13.419998,
        "generationtime_ms": 0.09,
        "utc_offset_seconds": 0,
        "timezone": "GMT",
        "timezone_abbreviation": "GMT",
        "elevation": 38.0,
        "minutely_15_units": {"time": "iso8601", "global_tilted_irradiance": "W/m²"},
        "minutely_15": {"time": times, "global_tilted_irradiance": gti},
    }


_OM_TIMES = ["2026-06-01T10:15", "2026-06-01T10:30", "2026-06-01T10:45"]


def _open_meteo_route(seen: Seen) -> Answer:
    """East gets 500, 800, null W/m²; west 400, 1000, 600."""
    if seen.query.get("azimuth") == "-90":
        return _json(_open_meteo_body(_OM_TIMES, [500.0, 800.0, None]))
    return _json(_open_meteo_body(_OM_TIMES, [400.0, 1000.0, 600.0]))


async def test_open_meteo_asks_once_per_orientation_with_south_based_azimuth() -> None:
    with http_stub() as stub:
        stub.routes["/v1/forecast"] = _open_meteo_route
        await _fetch(
            OpenMeteoPv(_open_meteo_cfg(stub.url), CTX), _t("2026-06-01T10:05"), _t("2026-06-01T10:40")
        )
    assert [s.path for s in stub.seen] == ["/v1/forecast", "/v1/forecast"]
    common = {
        "latitude": "52.52",
        "longitude": "13.41",
        "minutely_15": "global_tilted_irradiance",
        "tilt": "30",
        "timezone": "UTC",
        # values are means of the 15 minutes before their time: 10:15 covers 10:00-10:15
        "start_minutely_15": "2026-06-01T10:15",
        "end_minutely_15": "2026-06-01T10:45",
    }
    assert stub.seen[0].query == {**common, "azimuth": "-90"}
    assert stub.seen[1].query == {**common, "azimuth": "90"}


async def test_open_meteo_irradiance_becomes_clipped_ac_power_on_the_preceding_window() -> None:
    with http_stub() as stub:
        stub.routes["/v1/forecast"] = _open_meteo_route
        east, west = await _fetch(
            OpenMeteoPv(_open_meteo_cfg(stub.url), CTX), _t("2026-06-01T10:00"), _t("2026-06-01T10:45")
        )
    # east: GTI/1000 x 5 kWp x 0.9, clipped at 3 kW; the null value leaves its window uncovered
    assert _rounded(east) == [
        (_t("2026-06-01T10:00"), _t("2026-06-01T10:15"), 2250.0),
        (_t("2026-06-01T10:15"), _t("2026-06-01T10:30"), 3000.0),
    ]
    # west: 4 kWp x 0.86 plus 2 kWp x 0.86 clipped at 1 kW
    assert _rounded(west) == [
        (_t("2026-06-01T10:00"), _t("2026-06-01T10:15"), 1376.0 + 688.0),
        (_t("2026-06-01T10:15"), _t("2026-06-01T10:30"), 3440.0 + 1000.0),
        (_t("2026-06-01T10:30"), _t("2026-06-01T10:45"), 2064.0 + 1000.0),
    ]
    site = sum_forecasts([east, west])
    assert _rounded(site) == [
        (_t("2026-06-01T10:00"), _t("2026-06-01T10:15"), 2250.0 + 2064.0),
        (_t("2026-06-01T10:15"), _t("2026-06-01T10:30"), 3000.0 + 4440.0),
    ]


async def test_open_meteo_negative_irradiance_counts_as_zero() -> None:
    with http_stub() as stub:
        stub.routes["/v1/forecast"] = _json(_open_meteo_body(["2026-06-01T21:00"], [-1.6]))
        cfg = OpenMeteoSource.model_validate(
            {
                "type": "open_meteo",
                "base_url": stub.url,
                "latitude": 1,
                "longitude": 2,
                "arrays": [{"tilt_deg": 0, "azimuth_deg": 180, "kwp": 1}],
            }
        )
        (forecast,) = await _fetch(OpenMeteoPv(cfg, CTX), _t("2026-06-01T20:45"), _t("2026-06-01T21:00"))
    assert stub.seen[0].query["azimuth"] == "0"
    assert forecast.segments == ((_t("2026-06-01T20:45"), _t("2026-06-01T21:00"), 0.0),)


async def test_open_meteo_error_answer_gives_its_reason() -> None:
    body = {"error": True, "reason": "Parameter 'tilt' must be between 0 and 90"}
    with http_stub() as stub:
        stub.routes["/v1/forecast"] = _json(body, 400)
        with pytest.raises(
            SourceError, match="Open-Meteo: Parameter 'tilt' must be between 0 and 90"
        ) as caught:
            await _fetch(
                OpenMeteoPv(_open_meteo_cfg(stub.url), CTX), _t("2026-06-01T10:00"), _t("2026-06-01T11:00")
            )
    assert not isinstance(caught.value, SourceBusy)


async def test_open_meteo_rate_limit_is_busy() -> None:
    body = {"error": True, "reason": "Minutely API request limit exceeded. Please try again in one minute."}
    with http_stub() as stub:
        stub.routes["/v1/forecast"] = Answer(429, json.dumps(body).encode(), {"Retry-After": "60"})
        with pytest.raises(SourceBusy, match="limit exceeded") as caught:
            await _fetch(
                OpenMeteoPv(_open_meteo_cfg(stub.url), CTX), _t("2026-06-01T10:00"), _t("2026-06-01T11:00")
            )
    assert caught.value.retry_after_s == 60.0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>busy</html>", "not JSON"),
        (json.dumps({"latitude": 1}).encode(), "minutely_15 is not an object"),
        (json.dumps(_open_meteo_body(_OM_TIMES, [1.0, 2.0])).encode(), "3 times but 2 values"),
        (json.dumps(_open_meteo_body(_OM_TIMES, [1.0, "x", 3.0])).encode(), "global_tilted_irradiance 1"),
        (json.dumps(_open_meteo_body(_OM_TIMES, [1.0, True, 3.0])).encode(), "global_tilted_irradiance 1"),
        (json.dumps(_open_meteo_body(["10:15"], [1.0])).encode(), "not yyyy-mm-ddThh:mm"),
        (json.dumps(_open_meteo_body(_OM_TIMES[::-1], [1.0, 2.0, 3.0])).encode(), "overlaps"),
        (
            json.dumps(
                {
                    **_open_meteo_body(_OM_TIMES, [1.0, 2.0, 3.0]),
                    "minutely_15_units": {"global_tilted_irradiance": "MJ/m²"},
                }
            ).encode(),
            "not W/m²",
        ),
        (json.dumps(_open_meteo_body(_OM_TIMES, [1e9, 2.0, 3.0])).encode(), "is not between 0"),
    ],
)
async def test_open_meteo_malformed_answer_is_a_source_error(body: bytes, reason: str) -> None:
    with http_stub() as stub:
        stub.routes["/v1/forecast"] = Answer(200, body)
        with pytest.raises(SourceError, match=reason):
            await _fetch(
                OpenMeteoPv(_open_meteo_cfg(stub.url), CTX), _t("2026-06-01T10:00"), _t("2026-06-01T11:00")
            )


# --- forecast.solar --------------------------------------------------------------------------------


def _forecast_solar_cfg(url: str, arrays: list[dict[str, Any]], **extra: Any) -> ForecastSolarSource:
    return ForecastSolarSource.model_validate(
        {
            "type": "forecast_solar",
            "base_url": url,
            "latitude": 52.16,
            "longitude": 4.47,
            "arrays": arrays,
            **extra,
        }
    )


def _estimate(watts: dict[str, Any], timezone: str = "Europe/Amsterdam") -> dict[str, Any]:
    return {
        "result": {"watts": watts, "watt_hours_period": dict.fromkeys(watts, 0), "watt_hours_day": {}},
        "message": {
            "code": 0,
            "type": "success",
            "text": "",
            "info": {"latitude": 52.16, "longitude": 4.47, "distance": 0, "timezone": timezone},
            "ratelimit": {"zone": "IP ADDRESS", "period": 3600, "limit": 12, "remaining": 11},
        },
    }


_EAST = {"tilt_deg": 30, "azimuth_deg": 90, "kwp": 5}
_PATH_EAST = "/estimate/52.16/4.47/30/-90/5"


async def test_forecast_solar_asks_once_per_orientation() -> None:
    arrays: list[dict[str, Any]] = [
        _EAST,
        {"tilt_deg": 35, "azimuth_deg": 225, "kwp": 2.5},
        {"tilt_deg": 35, "azimuth_deg": 225, "kwp": 1},
    ]
    with http_stub() as stub:
        stub.routes[_PATH_EAST] = _json(_estimate({"2024-04-26T07:00:00+02:00": 0}))
        stub.routes["/estimate/52.16/4.47/35/45/3.5"] = _json(_estimate({"2024-04-26T07:00:00+02:00": 0}))
        await _fetch(
            ForecastSolarPv(_forecast_solar_cfg(stub.url, arrays), CTX),
            _t("2024-04-26T00:00"),
            _t("2024-04-27T00:00"),
        )
    assert [(s.path, s.query) for s in stub.seen] == [
        (_PATH_EAST, {"time": "iso8601"}),
        ("/estimate/52.16/4.47/35/45/3.5", {"time": "iso8601"}),
    ]


async def test_forecast_solar_key_goes_first_in_the_path() -> None:
    with http_stub() as stub:
        cfg = _forecast_solar_cfg(stub.url, [_EAST], api_key_env="FS_KEY")
        stub.routes["/s3cret" + _PATH_EAST] = _json(_estimate({"2024-04-26T07:00:00+02:00": 0}))
        await _fetch(
            ForecastSolarPv(cfg, SourceContext(env={"FS_KEY": "s3cret"})),
            _t("2024-04-26T00:00"),
            _t("2024-04-27T00:00"),
        )
    assert stub.seen[0].path == "/s3cret" + _PATH_EAST
    with pytest.raises(SourceAuthError, match="FS_KEY"):
        ForecastSolarPv(cfg, CTX).requests(_t("2024-04-26T00:00"), _t("2024-04-27T00:00"))


async def test_forecast_solar_watts_become_windows_between_timestamps() -> None:
    watts = {
        "2024-04-26T06:20:17+02:00": 0,
        "2024-04-26T07:00:00+02:00": 270,
        "2024-04-26T08:00:00+02:00": 481,
        "2024-04-26T20:00:00+02:00": 38,
        "2024-04-26T20:59:23+02:00": 0,
        "2024-04-27T06:18:17+02:00": 0,
        "2024-04-27T07:00:00+02:00": 194,
    }
    with http_stub() as stub:
        stub.routes[_PATH_EAST] = _json(_estimate(watts))
        (forecast,) = await _fetch(
            ForecastSolarPv(_forecast_solar_cfg(stub.url, [_EAST]), CTX),
            _t("2024-04-26T00:00"),
            _t("2024-04-28T00:00"),
        )
    assert forecast.segments == (
        (_t("2024-04-26T04:20:17"), _t("2024-04-26T05:00"), 135.0),  # 89 Wh, as watt_hours_period says
        (_t("2024-04-26T05:00"), _t("2024-04-26T06:00"), 375.5),
        (_t("2024-04-26T06:00"), _t("2024-04-26T18:00"), 259.5),
        (_t("2024-04-26T18:00"), _t("2024-04-26T18:59:23"), 19.0),
        (_t("2024-04-26T18:59:23"), _t("2024-04-27T04:18:17"), 0.0),  # the night
        (_t("2024-04-27T04:18:17"), _t("2024-04-27T05:00"), 97.0),
    )


async def test_forecast_solar_splits_a_shared_plane_by_kwp_and_clips_each_inverter() -> None:
    arrays = [
        {"tilt_deg": 30, "azimuth_deg": 90, "kwp": 3},
        {"tilt_deg": 30, "azimuth_deg": 90, "kwp": 2, "inverter_kw": 1},
    ]
    watts = {"2024-04-26T12:00:00+02:00": 2000, "2024-04-26T13:00:00+02:00": 4000}
    with http_stub() as stub:
        stub.routes[_PATH_EAST] = _json(_estimate(watts))
        (forecast,) = await _fetch(
            ForecastSolarPv(_forecast_solar_cfg(stub.url, arrays), CTX),
            _t("2024-04-26T00:00"),
            _t("2024-04-27T00:00"),
        )
    # 2000 W: 1200 + 800; 4000 W: 2400 + 1000 (clipped from 1600); the window is their mean
    assert forecast.segments == ((_t("2024-04-26T10:00"), _t("2024-04-26T11:00"), 2700.0),)


@pytest.mark.parametrize(
    ("watts", "expected"),
    [
        # 29 March 2026: Berlin goes from UTC+1 to UTC+2 at 02:00 local
        (
            {"2026-03-28 18:40:00": 0, "2026-03-29 07:02:11": 0, "2026-03-29 08:00:00": 300},
            [
                (_t("2026-03-28T17:40"), _t("2026-03-29T05:02:11"), 0.0),
                (_t("2026-03-29T05:02:11"), _t("2026-03-29T06:00"), 150.0),
            ],
        ),
        # 25 October 2026: back from UTC+2 to UTC+1 at 03:00 local
        (
            {"2026-10-24 18:20:00": 0, "2026-10-25 07:10:00": 0, "2026-10-25 08:00:00": 200},
            [
                (_t("2026-10-24T16:20"), _t("2026-10-25T06:10"), 0.0),
                (_t("2026-10-25T06:10"), _t("2026-10-25T07:00"), 100.0),
            ],
        ),
    ],
)
async def test_forecast_solar_local_timestamps_follow_the_sites_dst(
    watts: dict[str, Any], expected: list[tuple[dt.datetime, dt.datetime, float]]
) -> None:
    with http_stub() as stub:
        stub.routes[_PATH_EAST] = _json(_estimate(watts, timezone="Europe/Berlin"))
        (forecast,) = await _fetch(
            ForecastSolarPv(_forecast_solar_cfg(stub.url, [_EAST]), CTX),
            _t("2026-03-28T00:00"),
            _t("2026-03-30T00:00"),
        )
    assert list(forecast.segments) == expected


_RATE_LIMITED = {
    "result": "Rate limit for API calls reached.",
    "message": {
        "code": 429,
        "type": "error",
        "text": "Rate limit for API calls reached.",
        "pid": "0F5m6R53",
        "ratelimit": {
            "zone": "YOUR IP ADDRESS",
            "period": 3600,
            "limit": 12,
            "retry-at": "2024-04-27T02:48:53+02:00",
        },
    },
}


async def test_forecast_solar_rate_limit_is_busy() -> None:
    with http_stub() as stub:
        stub.routes[_PATH_EAST] = _json(_RATE_LIMITED, 429)
        with pytest.raises(SourceBusy, match=r"forecast\.solar: Rate limit for API calls reached"):
            await _fetch(
                ForecastSolarPv(_forecast_solar_cfg(stub.url, [_EAST]), CTX),
                _t("2024-04-26T00:00"),
                _t("2024-04-27T00:00"),
            )
        # Its retry time comes in X-Ratelimit-Retry-At (an ISO time), not Retry-After.
        retry_at = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=20)).isoformat()
        answer = _json(_RATE_LIMITED, 429)
        answer.headers["X-Ratelimit-Retry-At"] = retry_at
        stub.routes[_PATH_EAST] = answer
        with pytest.raises(SourceBusy) as caught:
            await _fetch(
                ForecastSolarPv(_forecast_solar_cfg(stub.url, [_EAST]), CTX),
                _t("2024-04-26T00:00"),
                _t("2024-04-27T00:00"),
            )
        assert caught.value.retry_after_s == pytest.approx(1200.0, abs=30.0)


@pytest.mark.parametrize(
    ("status", "error"), [(422, SourceError), (400, SourceError), (401, SourceAuthError)]
)
async def test_forecast_solar_error_answer_gives_its_text(status: int, error: type[SourceError]) -> None:
    body = {"result": None, "message": {"code": status, "type": "error", "text": "Invalid azimuth"}}
    with http_stub() as stub:
        stub.routes[_PATH_EAST] = _json(body, status)
        with pytest.raises(error, match=f"HTTP {status}: forecast.solar: Invalid azimuth") as caught:
            await _fetch(
                ForecastSolarPv(_forecast_solar_cfg(stub.url, [_EAST]), CTX),
                _t("2024-04-26T00:00"),
                _t("2024-04-27T00:00"),
            )
    assert not isinstance(caught.value, SourceBusy)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (
            json.dumps(
                {"result": None, "message": {"code": 1, "type": "error", "text": "no plane"}}
            ).encode(),
            "no plane",
        ),
        (
            json.dumps({"result": {"watts": []}, "message": {"type": "success"}}).encode(),
            "result.watts is not an object",
        ),
        (json.dumps({"result": {"watts": {}}}).encode(), "message is not an object"),
        (json.dumps(_estimate({"2024-04-26T07:00:00+02:00": "many"})).encode(), "watts at"),
        (json.dumps(_estimate({"2024-04-26T07:00:00+02:00": -5})).encode(), "not between 0"),
        (json.dumps(_estimate({"yesterday": 5})).encode(), "not a date and time"),
        (
            json.dumps(_estimate({"2024-04-26 07:00:00": 5}, timezone="Mars/Olympus")).encode(),
            "unknown time zone",
        ),
        (
            json.dumps(
                {"result": {"watts": {"2024-04-26 07:00:00": 5}}, "message": {"type": "success"}}
            ).encode(),
            "no offset",
        ),
        (
            json.dumps(_estimate({"2024-04-26T07:00:00+02:00": 5, "2024-04-26T05:00:00+00:00": 6})).encode(),
            "appears twice",
        ),
    ],
)
async def test_forecast_solar_malformed_answer_is_a_source_error(body: bytes, reason: str) -> None:
    with http_stub() as stub:
        stub.routes[_PATH_EAST] = Answer(200, body)
        with pytest.raises(SourceError, match=reason):
            await _fetch(
                ForecastSolarPv(_forecast_solar_cfg(stub.url, [_EAST]), CTX),
                _t("2024-04-26T00:00"),
                _t("2024-04-27T00:00"),
            )


# --- the sum of several orientations ----------------------------------------------------------------


def test_sum_covers_only_windows_every_part_covers() -> None:
    a = PowerForecast(((_t("2026-06-01T10:00"), _t("2026-06-01T11:00"), 100.0),), _t("2026-06-01T09:00"))
    b = PowerForecast(
        (
            (_t("2026-06-01T10:30"), _t("2026-06-01T11:00"), 10.0),
            (_t("2026-06-01T11:00"), _t("2026-06-01T12:00"), 20.0),
        ),
        _t("2026-06-01T08:00"),
    )
    total = sum_forecasts([a, b])
    assert total.segments == ((_t("2026-06-01T10:30"), _t("2026-06-01T11:00"), 110.0),)
    assert total.issued_at == _t("2026-06-01T08:00")
    assert sum_forecasts([a]) is a
    assert sum_forecasts([]).segments == ()
