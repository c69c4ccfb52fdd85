"""Open-Meteo (https://open-meteo.com/en/docs): the forecast of global tilted irradiance (GTI) on each
array's plane, turned into AC power.

Request: ``GET /v1/forecast`` with ``latitude``, ``longitude``, ``minutely_15=global_tilted_irradiance``,
``tilt`` (0 flat .. 90 vertical), ``azimuth`` (0 south, -90 east, 90 west, ±180 north),
``timezone=UTC`` and ``start_minutely_15``/``end_minutely_15`` (``yyyy-mm-ddThh:mm``). One request
per orientation: arrays that share tilt and azimuth share the irradiance.

Answer: ``{"utc_offset_seconds": 0, "minutely_15_units": {"time": "iso8601",
"global_tilted_irradiance": "W/m²"}, "minutely_15": {"time": ["2026-06-01T10:15", ...],
"global_tilted_irradiance": [512.3, ...]}}``; an error is ``{"error": true, "reason": "..."}``
with HTTP 400. The docs' variable table gives the 15-minute radiation values as the "preceding
15 minutes mean", so the value stamped 10:15 is the mean over [10:00, 10:15). Outside the regions
of Open-Meteo's 15-minute models (central Europe, North America) the values are interpolated from
hourly ones; the window stays the same. A value may be null (no model data): that window is left
uncovered. GTI can come out slightly negative (open-meteo/open-meteo#1355): it counts as 0.

Power (a simple model, on purpose): P = GTI / 1000 W/m² x kWp x (1 - losses), clipped at the
inverter's AC limit, summed over the arrays of the orientation. No temperature derating: the cell
temperature needs wind and ambient temperature and a module coefficient the config does not have,
and its effect (a few percent at noon in summer) is what the blend with measured PV corrects
(``controller.forecast.pv_blend``).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from controller.config.sources import OpenMeteoSource, PvArray
from controller.signals import PowerForecast
from controller.signals.payload import Segment
from controller.sources.base import HttpRequest, HttpSource, SourceError, register_source
from controller.sources.pv.common import array_power_w, check_power_w, number, south_azimuth_deg

__all__ = ["OpenMeteoPv", "gti_to_power_w"]

INTERVAL = dt.timedelta(minutes=15)
_VARIABLE = "global_tilted_irradiance"
_STC_IRRADIANCE_W_M2 = 1000.0  # kWp is the power at 1000 W/m² (standard test conditions)
_TIME_FORMAT = "%Y-%m-%dT%H:%M"


def gti_to_power_w(array: PvArray, gti_w_m2: float) -> float:
    """AC power of one array in W for an irradiance on its plane (negative irradiance counts as 0)."""
    dc_w = (
        max(0.0, gti_w_m2) / _STC_IRRADIANCE_W_M2 * array.kwp * 1000.0 * (1.0 - array.losses_percent / 100.0)
    )
    return array_power_w(array, dc_w)


def _floor_interval(moment: dt.datetime) -> dt.datetime:
    moment = moment.astimezone(dt.UTC).replace(second=0, microsecond=0)
    return moment - dt.timedelta(minutes=moment.minute % 15)


def _orientation(array: PvArray) -> tuple[str, str]:
    """The ``tilt`` and ``azimuth`` parameters of an array, as sent."""
    return f"{array.tilt_deg:g}", f"{south_azimuth_deg(array.azimuth_deg):g}"


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SourceError(f"{what} is not an object")
    return value


@register_source("pv", "open_meteo")
class OpenMeteoPv(HttpSource[OpenMeteoSource, PowerForecast]):
    default_base_url = "https://api.open-meteo.com"

    def _orientations(self) -> dict[tuple[str, str], list[PvArray]]:
        groups: dict[tuple[str, str], list[PvArray]] = {}
        for array in self.cfg.arrays:
            groups.setdefault(_orientation(array), []).append(array)
        return groups

    def requests(self, start: dt.datetime, end: dt.datetime) -> list[HttpRequest]:
        # A value covers the 15 minutes before its time: the first one that reaches into
        # [start, end) is stamped one interval after start (floored), the last at end (ceiled).
        first = _floor_interval(start) + INTERVAL
        last = _floor_interval(end - dt.timedelta(microseconds=1)) + INTERVAL
        return [
            HttpRequest(
                f"{self.base_url}/v1/forecast",
                {
                    "latitude": f"{self.cfg.latitude:g}",
                    "longitude": f"{self.cfg.longitude:g}",
                    "minutely_15": _VARIABLE,
                    "tilt": tilt,
                    "azimuth": azimuth,
                    "timezone": "UTC",
                    "start_minutely_15": first.strftime(_TIME_FORMAT),
                    "end_minutely_15": max(first, last).strftime(_TIME_FORMAT),
                },
            )
            for tilt, azimuth in self._orientations()
        ]

    def parse(self, request: HttpRequest, body: bytes) -> PowerForecast:
        key = (request.params.get("tilt", ""), request.params.get("azimuth", ""))
        arrays = self._orientations().get(key)
        if not arrays:
            raise SourceError(f"no configured array has tilt {key[0]} and azimuth {key[1]}")
        try:
            data = _object(json.loads(body.decode("utf-8")), "the answer")
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise SourceError("the answer is not JSON") from None
        if data.get("error") is True:
            raise SourceError(f"Open-Meteo: {str(data.get('reason', 'error'))[:160]}")
        units = _object(data.get("minutely_15_units", {}), "minutely_15_units")
        unit = units.get(_VARIABLE, "W/m²")
        if unit not in ("W/m²", "W/m2"):
            raise SourceError(f"{_VARIABLE} is in {str(unit)[:20]!r}, not W/m²")
        offset_s = number(data.get("utc_offset_seconds", 0), "utc_offset_seconds")
        if abs(offset_s) > 86_400:
            raise SourceError(f"utc_offset_seconds {offset_s:g} is not a time zone's offset")
        try:
            return PowerForecast(tuple(self._segments(data, arrays, dt.timedelta(seconds=offset_s))))
        except OverflowError:
            raise SourceError("a time is out of range") from None

    @staticmethod
    def _segments(data: dict[str, Any], arrays: list[PvArray], offset: dt.timedelta) -> list[Segment]:
        block = _object(data.get("minutely_15"), "minutely_15")
        times, values = block.get("time"), block.get(_VARIABLE)
        if not isinstance(times, list) or not isinstance(values, list):
            raise SourceError(f"minutely_15 has no time and {_VARIABLE} arrays")
        if len(times) != len(values):
            raise SourceError(f"minutely_15 has {len(times)} times but {len(values)} values")
        segments: list[Segment] = []
        for i, (stamp, value) in enumerate(zip(times, values, strict=True)):
            if not isinstance(stamp, str):
                raise SourceError(f"time {i} is not a string")
            try:
                local = dt.datetime.strptime(stamp, _TIME_FORMAT)
            except ValueError:
                raise SourceError(f"time {i} {stamp[:30]!r} is not yyyy-mm-ddThh:mm") from None
            end = (local - offset).replace(tzinfo=dt.UTC)
            if segments and end - INTERVAL < segments[-1][1]:
                raise SourceError(f"time {i} {stamp!r} overlaps the window before")
            if value is None:
                continue  # no model data for that window: leave it uncovered
            gti = number(value, f"{_VARIABLE} {i}")
            power_w = sum(gti_to_power_w(array, gti) for array in arrays)
            segments.append((end - INTERVAL, end, check_power_w(power_w, f"power at {stamp}")))
        return segments

    def error_reason(self, status: int, body: bytes) -> str:
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("reason"), str):
            return f"HTTP {status}: Open-Meteo: {data['reason'][:160]}"
        return super().error_reason(status, body)
