"""``v2x prices``: an installer's check of the configured price providers (and PV services with
``--pv``): fetch once from each, print today's and tomorrow's prices and what each source did."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import zoneinfo
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from controller.config import ConfigError, PriceConfig, SiteConfig, load_config
from controller.signals import PowerForecast, PriceSlot
from controller.signals.payload import Segment
from controller.signals.retail import retail_price_at
from controller.sources.base import SourceContext, SourceError
from controller.sources.fetcher import http_client, prices_in_site_currency, source_instance
from controller.sources.http_client import fetch_source
from controller.sources.prices.common import FetchedPrices
from controller.sources.pv import sum_forecasts
from controller.sources.schedule import local_days

__all__ = ["cmd_prices", "register"]

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


@dataclass
class _Result:
    where: str
    type_name: str
    direction: Literal["import", "export", "pv"]
    price: PriceConfig | None = None
    error: str | None = None
    retail_included: bool = False
    slots: list[PriceSlot] = field(default_factory=list)
    pv_w: list[Segment] = field(default_factory=list)
    """PV sources: (start, end, W) windows."""

    @property
    def spans(self) -> list[tuple[dt.datetime, dt.datetime]]:
        return [(s.start, s.end) for s in self.slots] + [(start, end) for start, end, _ in self.pv_w]

    @property
    def name(self) -> str:
        return f"{self.where} ({self.type_name})"


def _configured(cfg: SiteConfig, with_pv: bool) -> list[tuple[_Result, Any]]:
    found: list[tuple[_Result, Any]] = []
    for direction, price in (("import", cfg.tariff.import_), ("export", cfg.tariff.export)):
        for role in ("provider", "backup_provider"):
            source_cfg = getattr(price, role)
            if source_cfg is not None:
                where = f"tariff.{direction}.{role}"
                found.append((_Result(where, source_cfg.type, direction, price), source_cfg))  # type: ignore[arg-type]
    if with_pv:
        for i, pv in enumerate(cfg.forecast.pv_sources):
            found.append((_Result(f"forecast.pv_sources[{i}]", pv.type, "pv"), pv))
    return found


async def _fetch_one(
    result: _Result, source_cfg: Any, cfg: SiteConfig, start: dt.datetime, end: dt.datetime
) -> None:
    ctx = SourceContext(currency=cfg.site.currency, timezone=cfg.site.timezone)
    try:
        source = source_instance(source_cfg, "pv" if result.direction == "pv" else "prices", ctx)
        async with http_client() as client:
            answers = await fetch_source(client, source, start, end)
        if result.direction == "pv":
            forecast: PowerForecast = sum_forecasts(answers)
            result.pv_w = sorted(forecast.segments)
            return
        prices: list[FetchedPrices] = answers
        result.retail_included = any(a.retail for a in prices)
        result.slots = prices_in_site_currency(
            prices, cfg.site.currency, getattr(source_cfg, "exchange_rate", None), result.where
        )
    except SourceError as exc:
        result.error = str(exc) or type(exc).__name__
    except Exception as exc:  # a parser bug: said, not a traceback
        result.error = f"unexpected {type(exc).__name__}: {str(exc)[:120]}"


async def _fetch_all(cfg: SiteConfig, with_pv: bool, now: dt.datetime) -> list[_Result]:
    days = local_days(now, cfg.site.timezone)
    configured = _configured(cfg, with_pv)
    await asyncio.gather(*(_fetch_one(r, c, cfg, days[0].start, days[-1].end) for r, c in configured))
    return [r for r, _ in configured]


def _delivered_today(result: _Result, today_start: dt.datetime, today_end: dt.datetime) -> bool:
    return any(start < today_end and end > today_start for start, end in result.spans)


def _retail(result: _Result, slot: PriceSlot, timezone: str) -> float | None:
    if result.price is None or result.price.retail is None or result.retail_included:
        return None
    return retail_price_at(result.price, slot.value_per_kwh, slot.start, timezone)


def _as_json(results: list[_Result], cfg: SiteConfig, tz: zoneinfo.ZoneInfo, ok: bool) -> dict[str, Any]:
    def local(moment: dt.datetime) -> str:
        return moment.astimezone(tz).isoformat()

    sources = []
    for r in results:
        spans = r.spans
        entry: dict[str, Any] = {
            "source": r.name,
            "direction": r.direction,
            "ok": r.error is None,
            "error": r.error,
            "slots": len(spans),
            "first": local(spans[0][0]) if spans else None,
            "last": local(spans[-1][1]) if spans else None,
        }
        if r.direction == "pv":
            entry["forecast_w"] = [{"start": local(a), "end": local(b), "w": w} for a, b, w in r.pv_w]
        else:
            entry["retail_included"] = r.retail_included
            entry["prices"] = [
                {
                    "start": local(s.start),
                    "end": local(s.end),
                    "market": s.value_per_kwh,
                    "retail": _retail(r, s, cfg.site.timezone),
                }
                for s in r.slots
            ]
        sources.append(entry)
    return {"ok": ok, "currency": cfg.site.currency, "timezone": cfg.site.timezone, "sources": sources}


def _when(start: dt.datetime, end: dt.datetime, tz: zoneinfo.ZoneInfo) -> str:
    return f"{start.astimezone(tz):%Y-%m-%d %H:%M}-{end.astimezone(tz):%H:%M}"


def _print_sources(results: list[_Result], tz: zoneinfo.ZoneInfo, out: TextIO) -> None:
    for r in results:
        spans = r.spans
        if r.error is not None:
            print(f"error  {r.name}: {r.error}", file=out)
        elif not spans:
            print(f"empty  {r.name}: nothing for today or tomorrow", file=out)
        else:
            first, last = spans[0][0].astimezone(tz), spans[-1][1].astimezone(tz)
            unit = "windows" if r.direction == "pv" else "slots"
            print(
                f"ok     {r.name}: {len(spans)} {unit}, {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M}",
                file=out,
            )


def _print_human(results: list[_Result], cfg: SiteConfig, tz: zoneinfo.ZoneInfo, out: TextIO) -> None:
    site = cfg.site
    print(f"site {site.name!r}: prices in {site.currency} per kWh, times in {site.timezone}", file=out)
    _print_sources(results, tz, out)
    for r in results:
        if r.pv_w:
            print(f"\nPV forecast (W) from {r.name}:", file=out)
            for start, end, watts in r.pv_w:
                print(f"  {_when(start, end, tz)}  {watts:8.0f} W", file=out)
        if not r.slots:
            continue
        print(f"\n{r.direction} prices from {r.name}:", file=out)
        label = "retail" if r.retail_included else "market"
        for slot in r.slots:
            retail = _retail(r, slot, site.timezone)
            line = f"  {_when(slot.start, slot.end, tz)}  {label} {slot.value_per_kwh:8.4f}"
            print(line + (f"  retail {retail:8.4f}" if retail is not None else ""), file=out)


def cmd_prices(args: argparse.Namespace, out: TextIO) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"{exc.source}: {len(exc.issues)} problem(s)", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return EXIT_BAD_INPUT
    now = dt.datetime.now(dt.UTC)
    results = asyncio.run(_fetch_all(cfg, args.pv, now))
    today = local_days(now, cfg.site.timezone, 1)[0]
    providers = [r for r in results if r.direction != "pv"]
    ok = bool(providers) and all(_delivered_today(r, today.start, today.end) for r in providers)
    tz = zoneinfo.ZoneInfo(cfg.site.timezone)
    if args.json:
        print(json.dumps(_as_json(results, cfg, tz, ok), indent=2), file=out)
    else:
        _print_human(results, cfg, tz, out)
        if not results:
            print("no price provider configured (tariff.import.provider): nothing to fetch", file=out)
    return EXIT_OK if ok else EXIT_FAILURE


def register(sub: Any) -> None:
    """Add ``v2x prices`` to the ``v2x`` subcommands."""
    p = sub.add_parser(
        "prices",
        help="fetch today's and tomorrow's prices from the configured providers once and print them",
        description="Fetch once from every configured price provider (provider and backup_provider, "
        "import and export; PV forecast services too with --pv) and print today's and tomorrow's "
        "prices per slot in the site's currency and time zone (with the retail price where "
        "tariff.*.retail is set), and per source: ok or the reason it failed. Exit 0 when every "
        "configured provider delivered prices for today, 1 otherwise, 2 on a bad config.",
    )
    p.add_argument("--config", required=True, help="site config YAML")
    p.add_argument("--json", action="store_true", help="print the same as JSON")
    p.add_argument("--pv", action="store_true", help="also fetch the PV forecast services")
    p.set_defaults(handler=cmd_prices)
