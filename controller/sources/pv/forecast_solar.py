"""forecast.solar (https://doc.forecast.solar/api): an estimate of the AC power of each array.

Request: ``GET /estimate/{lat}/{lon}/{dec}/{az}/{kwp}`` (with a paid plan's key
``/{key}/estimate/...``), ``dec`` the tilt (0 flat .. 90 vertical, integer), ``az`` -180..180
(0 south, -90 east, 90 west, integer), ``kwp`` the modules' peak power. One request per
orientation: arrays that share tilt and azimuth are asked for as one plane of their summed kWp (the
estimate scales with kWp) and split back by kWp, so that each is clipped at its own inverter.
``time=iso8601`` asks for timestamps with their UTC offset (the documented default is local time
without one, ``2017-09-18 01:00:00``, which is still read, in ``message.info.timezone``).

Answer: ``{"result": {"watts": {"2024-04-26T07:00:00+02:00": 270, ...}, "watt_hours_period": ...},
"message": {"code": 0, "type": "success", "info": {"timezone": "Europe/Amsterdam", ...},
"ratelimit": {...}}}`` (the layout of the API docs and of the ``forecast_solar`` client's test
fixtures, home-assistant-libs/forecast_solar). Errors: ``{"result": null, "message": {"code": 429,
"type": "error", "text": "Rate limit for API calls reached."}}`` with the HTTP status (429 rate limit,
400/422 bad plane, 401/403 key).

Windows: ``watts`` are the power at each timestamp (irregular at sunrise and sunset, hourly between).
The window between two timestamps gets the mean of its two ends, i.e. power linear in between: that
is how the service's own ``watt_hours_period`` is computed (89 Wh for 06:20:17-07:00 with 0 W and
270 W at the ends), so the energy of the windows matches the service's. The night between the last
and the first timestamp of two days (both 0 W) is a 0 W window. The estimate is used as published
(the service models the system's losses itself); ``losses_percent`` is not applied again.
"""

from __future__ import annotations

import datetime as dt
import json
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from controller.config.sources import ForecastSolarSource, PvArray
from controller.signals import PowerForecast
from controller.signals.payload import MAX_SLOT, Segment
from controller.sources.base import HttpRequest, HttpSource, SourceError, register_source
from controller.sources.pv.common import array_power_w, check_power_w, number, south_azimuth_deg

__all__ = ["ForecastSolarPv", "watts_to_windows"]

_LOCAL_FORMAT = "%Y-%m-%d %H:%M:%S"


def _orientation(array: PvArray) -> tuple[int, int]:
    """``dec`` and ``az`` as the service takes them (whole degrees)."""
    return round(array.tilt_deg), round(south_azimuth_deg(array.azimuth_deg))


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SourceError(f"{what} is not an object")
    return value


def _zone(message: dict[str, Any]) -> ZoneInfo | None:
    info = message.get("info")
    name = info.get("timezone") if isinstance(info, dict) else None
    if not isinstance(name, str):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SourceError(f"unknown time zone {name[:40]!r} in message.info") from None


def _instant(stamp: Any, zone: ZoneInfo | None) -> dt.datetime:
    """A timestamp with an offset, or local time of ``zone`` (in a repeated hour at the end of
    summer time, the first of the two; that hour is at night, 0 W either way)."""
    if not isinstance(stamp, str):
        raise SourceError("a timestamp of result.watts is not a string")
    try:
        moment = dt.datetime.fromisoformat(stamp)
    except ValueError:
        raise SourceError(f"timestamp {stamp[:30]!r} is not a date and time") from None
    if moment.tzinfo is None:
        if zone is None:
            raise SourceError(f"timestamp {stamp!r} has no offset and message.info has no timezone")
        moment = moment.replace(tzinfo=zone)
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        raise SourceError(f"timestamp {stamp!r} is out of range") from None


def watts_to_windows(samples: list[tuple[dt.datetime, float]]) -> list[Segment]:
    """Power samples (UTC, W) into windows between consecutive samples, each the mean of its two
    ends; a gap longer than a day is left uncovered."""
    ordered = sorted(samples)
    windows: list[Segment] = []
    for (t0, w0), (t1, w1) in pairwise(ordered):
        if t1 == t0:
            raise SourceError(f"timestamp {t0.isoformat()} appears twice")
        if t1 - t0 <= MAX_SLOT:
            windows.append((t0, t1, (w0 + w1) / 2.0))
    return windows


@register_source("pv", "forecast_solar")
class ForecastSolarPv(HttpSource[ForecastSolarSource, PowerForecast]):
    default_base_url = "https://api.forecast.solar"

    def _orientations(self) -> dict[tuple[int, int], list[PvArray]]:
        groups: dict[tuple[int, int], list[PvArray]] = {}
        for array in self.cfg.arrays:
            groups.setdefault(_orientation(array), []).append(array)
        return groups

    def requests(self, start: dt.datetime, end: dt.datetime) -> list[HttpRequest]:
        # The service answers today and the next day(s) of its plan whatever the range asked for.
        root = self.base_url
        if self.cfg.api_key_env is not None:
            root = f"{root}/{self.ctx.secret(self.cfg.api_key_env, 'forecast.solar')}"
        site = f"{self.cfg.latitude:g}/{self.cfg.longitude:g}"
        return [
            HttpRequest(
                f"{root}/estimate/{site}/{dec}/{az}/{sum(a.kwp for a in arrays):g}",
                {"time": "iso8601"},
                {"Accept": "application/json"},
            )
            for (dec, az), arrays in self._orientations().items()
        ]

    def _arrays_of(self, request: HttpRequest) -> list[PvArray]:
        parts = request.url.split("?")[0].rstrip("/").split("/")
        try:
            key = (int(parts[-3]), int(parts[-2]))
        except (IndexError, ValueError):
            raise SourceError(f"{request.url[:80]!r} is not an estimate request") from None
        arrays = self._orientations().get(key)
        if not arrays:
            raise SourceError(f"no configured array has tilt {key[0]} and azimuth {key[1]}")
        return arrays

    def parse(self, request: HttpRequest, body: bytes) -> PowerForecast:
        arrays = self._arrays_of(request)
        try:
            data = _object(json.loads(body.decode("utf-8")), "the answer")
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise SourceError("the answer is not JSON") from None
        message = _object(data.get("message"), "message")
        if message.get("type") == "error":
            raise SourceError(f"forecast.solar: {str(message.get('text', 'error'))[:160]}")
        result = _object(data.get("result"), "result")
        watts = _object(result.get("watts"), "result.watts")
        zone = _zone(message)
        total_kwp = sum(a.kwp for a in arrays)
        samples: list[tuple[dt.datetime, float]] = []
        for stamp, value in watts.items():
            plane_w = check_power_w(number(value, f"watts at {stamp[:30]}"), "power")
            # The plane's estimate shared by kWp, each array clipped at its inverter.
            site_w = sum(array_power_w(a, plane_w * a.kwp / total_kwp) for a in arrays)
            samples.append((_instant(stamp, zone), site_w))
        return PowerForecast(tuple(watts_to_windows(samples)))

    def error_reason(self, status: int, body: bytes) -> str:
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            data = None
        message = data.get("message") if isinstance(data, dict) else None
        if isinstance(message, dict) and isinstance(message.get("text"), str):
            return f"HTTP {status}: forecast.solar: {message['text'][:160]}"
        return super().error_reason(status, body)
