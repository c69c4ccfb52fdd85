"""The daemon's fetching of market prices and PV forecasts: one task per price direction (its provider,
then its backup) and one per PV source, on the injected clock, with one shared HTTP client.

Prices: on start the disk cache goes to the site at once; today and tomorrow (local days of the
site) are fetched unless known. Once tomorrow is known the task sleeps until the next publication;
while it is missing after publication it polls every 15 minutes; still missing at the market's late
time, it warns once (``prices_late``). A failure backs off (Retry-After honoured, an auth error waits
an hour); after three failures, an auth error or an answer without a needed day the backup is asked
for the same range. Meanwhile the site keeps what it has. PV: hourly, at once on start unless cached
within the hour. Every problem shows in ``/health``; nothing here crashes the daemon.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
import structlog

from controller import __version__
from controller.backoff import Backoff
from controller.clock import Clock
from controller.config import SiteConfig
from controller.signals import PowerForecast, PriceSignal, PriceSlot
from controller.signals.payload import Segment
from controller.sources.base import HttpSource, SourceAuthError, SourceContext, SourceError, find_source
from controller.sources.cache import CachedData, SourceCache, config_digest
from controller.sources.http_client import SourceBusy, fetch_source
from controller.sources.prices.common import FetchedPrices
from controller.sources.pv import sum_forecasts
from controller.sources.schedule import DayRange, covered_until, local_days, publication_of
from controller.sources.status import SourceStatus

__all__ = [
    "FetchedSource",
    "PriceFeed",
    "PvFeed",
    "SourceFetchers",
    "http_client",
    "prices_in_site_currency",
    "prices_into",
    "source_instance",
]

if TYPE_CHECKING:
    from controller.app import Daemon
    from controller.mqtt.client import SignalKind
    from controller.site_inputs import SiteInputs

log = structlog.get_logger("controller.sources")

Direction = Literal["import", "export"]
PricesCallback = Callable[[Direction, PriceSignal, dt.datetime], None]
PvCallback = Callable[[str, PowerForecast, dt.datetime], None]

PRICE_MIN_INTERVAL_S = 60.0  # at most one request per source per minute
# forecast.solar's free tier allows 12 calls an hour per IP: stay at half of that.
PV_MIN_INTERVAL_S = 600.0
PV_REFRESH_S = 3600.0
POLL_S = 15 * 60.0
AUTH_RETRY_S = 3600.0
MAX_RETRY_AFTER_S = 24 * 3600.0
FAILOVER_AFTER = 3
PRICE_BACKOFF = Backoff(initial_s=PRICE_MIN_INTERVAL_S, factor=2.0, max_s=3600.0)
PV_BACKOFF = Backoff(initial_s=PV_MIN_INTERVAL_S, factor=2.0, max_s=3 * 3600.0)
HTTP_TIMEOUT = httpx.Timeout(20.0, connect=10.0)
USER_AGENT = f"v2x-controller/{__version__} (home EV charging controller)"


def http_client() -> httpx.AsyncClient:
    """The one client every source shares: bounded timeouts, a User-Agent naming the project."""
    return httpx.AsyncClient(timeout=HTTP_TIMEOUT, headers={"User-Agent": USER_AGENT}, follow_redirects=True)


def prices_in_site_currency(
    answers: Sequence[FetchedPrices], currency: str, exchange_rate: float | None, where: str
) -> list[PriceSlot]:
    """Every slot of ``answers`` per kWh in ``currency``, sorted; a slot in another currency is
    multiplied by ``exchange_rate`` (raises SourceError without one)."""
    slots: list[PriceSlot] = []
    for answer in answers:
        factor = 1.0
        if answer.currency.upper() != currency.upper():
            if exchange_rate is None:
                raise SourceError(f"prices are in {answer.currency}; set exchange_rate on {where}")
            factor = exchange_rate
        slots += [PriceSlot(s.start, s.end, s.value_per_kwh * factor) for s in answer.slots]
    return sorted(slots, key=lambda s: s.start)


class FetchedSource:
    """One configured source as the fetcher runs it: its status, its cache file, its rate limit."""

    def __init__(
        self,
        source: HttpSource[Any, Any],
        where: str,
        clock: Clock,
        cache: SourceCache | None,
        *,
        min_interval_s: float,
        backoff: Backoff,
    ) -> None:
        self.source = source
        self.where = where
        self.clock = clock
        self.cache = cache
        self.min_interval_s = min_interval_s
        self.backoff = backoff
        self.status = SourceStatus(f"{where} ({source.type_name})")
        self.exchange_rate: float | None = getattr(source.cfg, "exchange_rate", None)
        self._last_request: float | None = None
        self._blocked_until: float | None = None

    @property
    def name(self) -> str:
        return self.status.source

    def blocked_s(self) -> float:
        """Seconds until an auth error may be retried (0: not blocked)."""
        if self._blocked_until is None:
            return 0.0
        return max(0.0, self._blocked_until - self.clock.monotonic())

    async def fetch(self, client: httpx.AsyncClient, start: dt.datetime, end: dt.datetime) -> list[Any]:
        """The source's answers for ``[start, end)``; every failure is a SourceError."""
        if self._last_request is not None:
            await self.clock.sleep(self._last_request + self.min_interval_s - self.clock.monotonic())
        self._last_request = self.clock.monotonic()
        try:
            return await fetch_source(client, self.source, start, end)
        except SourceError:
            raise
        except Exception as exc:  # a parser bug must not take the daemon down
            log.exception("source_parse_failed", source=self.name)
            raise SourceError(f"unexpected {type(exc).__name__}: {str(exc)[:120]}") from exc

    def failed(self, exc: SourceError, rng: random.Random) -> float:
        """Record a failure; the seconds to wait before asking again."""
        self.status.failed(str(exc) or type(exc).__name__, self.clock.now())
        if isinstance(exc, SourceAuthError):
            self._blocked_until = self.clock.monotonic() + AUTH_RETRY_S
            return AUTH_RETRY_S
        wait_s = self.backoff.spread_s(self.status.failures, rng)
        if isinstance(exc, SourceBusy) and exc.retry_after_s is not None:
            wait_s = max(wait_s, min(exc.retry_after_s, MAX_RETRY_AFTER_S))
        return wait_s

    def succeeded(self, count: int) -> None:
        self._blocked_until = None
        self.status.succeeded(self.clock.now(), count)

    async def save(self, fetched_at: dt.datetime, segments: Sequence[Segment]) -> None:
        if self.cache is None:
            return
        try:
            await asyncio.to_thread(self.cache.save, CachedData(fetched_at, tuple(segments)))
        except OSError as exc:
            log.warning("source_cache_write_failed", source=self.name, reason=str(exc))


class PriceFeed:
    """One price direction: today and tomorrow from the provider, the backup when it fails."""

    def __init__(
        self,
        direction: Direction,
        primary: FetchedSource,
        backup: FetchedSource | None,
        client: httpx.AsyncClient,
        clock: Clock,
        *,
        currency: str,
        timezone: str,
        on_prices: PricesCallback,
        rng: random.Random | None = None,
    ) -> None:
        self.direction = direction
        self.sources = [primary] + ([backup] if backup is not None else [])
        self.client = client
        self.clock = clock
        self.currency = currency
        self.timezone = timezone
        self.on_prices = on_prices
        self.rng = rng or random.Random()
        self.publication = publication_of(primary.source.type_name)
        self.known: dict[str, dict[dt.datetime, PriceSlot]] = {s.name: {} for s in self.sources}
        self.late_day: dt.date | None = None
        """A day whose prices were late (warned once); None once they arrived."""

    @property
    def primary(self) -> FetchedSource:
        return self.sources[0]

    @property
    def backup(self) -> FetchedSource | None:
        return self.sources[1] if len(self.sources) > 1 else None

    async def run(self) -> None:
        self.load_cache()
        while True:
            try:
                wait_s = await self.step()
            except Exception:  # a bug here must not end the daemon's TaskGroup
                log.exception("price_fetch_failed", direction=self.direction)
                wait_s = POLL_S
            await self.clock.sleep(max(1.0, wait_s))

    def load_cache(self) -> None:
        """The cached prices of each source to the site, oldest fetch first (the newest wins)."""
        keep_after = self._yesterday_start(self.clock.now())
        cached = [(s, s.cache.load(keep_after)) for s in self.sources if s.cache is not None]
        for source, data in sorted(
            ((s, d) for s, d in cached if d is not None and d.segments), key=lambda sd: sd[1].fetched_at
        ):
            slots = [PriceSlot(*segment) for segment in data.segments]
            self._remember(source, slots)
            log.info("prices_from_cache", source=source.name, slots=len(slots))
            self._hand_over(slots, data.fetched_at)

    def covers(self, day: DayRange, since: dt.datetime | None = None) -> bool:
        """Whether the known prices cover ``day`` without a gap, from ``since`` when it falls within
        the day (the hours of today already gone need no prices)."""
        start = day.start if since is None else min(day.end, max(day.start, since))
        spans = ((s.start, s.end) for slots in self.known.values() for s in slots.values())
        return covered_until(spans, start) >= day.end

    def _lacking(self, days: list[DayRange]) -> list[DayRange]:
        """The days not covered from the current hour on."""
        this_hour = self.clock.now().replace(minute=0, second=0, microsecond=0)
        return [day for day in days if not self.covers(day, this_hour)]

    async def step(self) -> float:
        """Fetch what is missing now; the seconds until the next step."""
        now = self.clock.now()
        today, tomorrow = local_days(now, self.timezone)
        self._forget_before(self._yesterday_start(now))
        first_poll = self.publication.first_poll_on(today.day)
        needed = [today] + ([tomorrow] if now >= first_poll else [])
        missing = self._lacking(needed)
        wait_s = await self._fetch_missing(missing) if missing else None
        now = self.clock.now()
        self._check_late(now, today, tomorrow)
        if wait_s is not None:
            return wait_s
        if now >= first_poll and not self.covers(tomorrow):
            return self._poll_s()  # published late: keep asking
        wake = first_poll if now < first_poll else self.publication.first_poll_on(today.day + dt.timedelta(1))
        return (wake - now).total_seconds() + self.rng.uniform(0.0, 60.0)

    async def _fetch_missing(self, missing: list[DayRange]) -> float | None:
        """Ask the provider (and the backup when needed) for the missing days; None when all arrived,
        else the seconds to wait before asking again."""
        start, end = missing[0].start, missing[-1].end
        primary, backup = self.primary, self.backup
        wait_s: float | None = primary.blocked_s() or None
        ask_backup = wait_s is not None
        if wait_s is None:
            try:
                await self._fetch_into(primary, start, end)
            except SourceError as exc:
                wait_s = primary.failed(exc, self.rng)
                ask_backup = primary.status.failures >= FAILOVER_AFTER or isinstance(exc, SourceAuthError)
            else:
                ask_backup = bool(self._lacking(missing))
        if ask_backup and backup is not None and not backup.blocked_s():
            try:
                await self._fetch_into(backup, start, end)
            except SourceError as exc:
                backup_wait_s = backup.failed(exc, self.rng)
                wait_s = backup_wait_s if wait_s is None else min(wait_s, max(backup_wait_s, POLL_S))
        if not self._lacking(missing):
            return None
        return self._poll_s() if wait_s is None else wait_s

    async def _fetch_into(self, source: FetchedSource, start: dt.datetime, end: dt.datetime) -> None:
        answers = await source.fetch(self.client, start, end)
        if not all(isinstance(a, FetchedPrices) for a in answers):
            raise SourceError("not a price source")
        slots = prices_in_site_currency(answers, self.currency, source.exchange_rate, source.where)
        now = self.clock.now()
        source.succeeded(len(slots))
        log.info("prices_fetched", source=source.name, slots=len(slots), start=start.isoformat())
        if not slots:
            return
        self._remember(source, slots)
        self._hand_over(slots, now)
        kept = sorted(self.known[source.name].values(), key=lambda s: s.start)
        await source.save(now, [(s.start, s.end, s.value_per_kwh) for s in kept])

    def _remember(self, source: FetchedSource, slots: Sequence[PriceSlot]) -> None:
        self.known[source.name].update((slot.start, slot) for slot in slots)

    def _hand_over(self, slots: Sequence[PriceSlot], issued_at: dt.datetime) -> None:
        try:
            self.on_prices(self.direction, PriceSignal(tuple(slots), issued_at), self.clock.now())
        except Exception:
            log.exception("prices_not_taken", direction=self.direction)

    def _forget_before(self, moment: dt.datetime) -> None:
        for slots in self.known.values():
            for start in [start for start, slot in slots.items() if slot.end <= moment]:
                del slots[start]

    def _yesterday_start(self, now: dt.datetime) -> dt.datetime:
        return local_days(now - dt.timedelta(days=1), self.timezone, 1)[0].start

    def _poll_s(self) -> float:
        return POLL_S * self.rng.uniform(0.9, 1.1)

    def _check_late(self, now: dt.datetime, today: DayRange, tomorrow: DayRange) -> None:
        if self.covers(tomorrow):
            if self.late_day is not None:
                log.info("prices_arrived", direction=self.direction, day=self.late_day.isoformat())
            self.late_day = None
        elif now >= self.publication.late_on(today.day) and self.late_day != tomorrow.day:
            self.late_day = tomorrow.day
            log.warning(
                "prices_late",
                source=self.primary.name,
                direction=self.direction,
                day=tomorrow.day.isoformat(),
                due_by=self.publication.late_on(today.day).isoformat(),
            )

    def problems(self) -> list[str]:
        found = [p for p in (s.status.problem() for s in self.sources) if p is not None]
        if self.late_day is not None:
            late = self.publication.late.strftime("%H:%M")
            found.append(
                f"{self.direction} prices for {self.late_day.isoformat()} not published by {late} "
                f"{self.publication.timezone} ({self.primary.name})"
            )
        return found


class PvFeed:
    """One PV forecast service: hourly, at once on start unless cached within the hour."""

    def __init__(
        self,
        source: FetchedSource,
        client: httpx.AsyncClient,
        clock: Clock,
        *,
        key: str,
        timezone: str,
        on_pv: PvCallback,
        rng: random.Random | None = None,
    ) -> None:
        self.source = source
        self.key = key
        """The name the forecast is handed over under: the source's type (with its index when two
        sources share a type)."""
        self.client = client
        self.clock = clock
        self.timezone = timezone
        self.on_pv = on_pv
        self.rng = rng or random.Random()
        self.fetched_at: dt.datetime | None = None

    async def run(self) -> None:
        self.load_cache()
        while True:
            try:
                wait_s = await self.step()
            except Exception:
                log.exception("pv_fetch_failed", source=self.source.name)
                wait_s = PV_REFRESH_S
            await self.clock.sleep(max(1.0, wait_s))

    def load_cache(self) -> None:
        if self.source.cache is None:
            return
        data = self.source.cache.load(self.clock.now() - dt.timedelta(days=1))
        if data is not None and data.segments:
            self.fetched_at = data.fetched_at
            log.info("pv_forecast_from_cache", source=self.source.name, windows=len(data.segments))
            self._hand_over(PowerForecast(data.segments, data.fetched_at))

    async def step(self) -> float:
        now = self.clock.now()
        if self.fetched_at is not None and now < self.fetched_at + dt.timedelta(seconds=PV_REFRESH_S):
            return (self.fetched_at - now).total_seconds() + PV_REFRESH_S
        days = local_days(now, self.timezone)
        try:
            answers = await self.source.fetch(self.client, days[0].start, days[-1].end)
            if not all(isinstance(a, PowerForecast) for a in answers):
                raise SourceError("not a PV forecast source")
        except SourceError as exc:
            return self.source.failed(exc, self.rng)
        segments = sum_forecasts(answers).segments
        now = self.clock.now()
        self.source.succeeded(len(segments))
        self.fetched_at = now
        log.info("pv_forecast_fetched", source=self.source.name, windows=len(segments))
        if segments:
            self._hand_over(PowerForecast(segments, now))
            await self.source.save(now, segments)
        return PV_REFRESH_S

    def _hand_over(self, forecast: PowerForecast) -> None:
        try:
            self.on_pv(self.key, forecast, self.clock.now())
        except Exception:
            log.exception("pv_forecast_not_taken", source=self.source.name)

    def problems(self) -> list[str]:
        problem = self.source.status.problem()
        return [] if problem is None else [problem]


def source_instance(cfg: Any, kind: Literal["prices", "pv"], ctx: SourceContext) -> HttpSource[Any, Any]:
    """The registered source class of ``cfg.type``, made for ``cfg``."""
    return find_source(kind, cfg.type)(cfg, ctx)


def cache_dir(cfg: SiteConfig) -> Path:
    """``sources/`` beside the SQLite file."""
    return cfg.storage.path.parent / "sources"


def prices_into(inputs: SiteInputs, on_signal: Callable[[SignalKind], None]) -> PricesCallback:
    """The daemon's taking of fetched prices, exactly as of an MQTT price message: into the inputs,
    then ``on_signal`` (the event router's, which asks for a re-plan)."""

    def take(direction: Direction, signal: PriceSignal, received_at: dt.datetime) -> None:
        inputs.update_prices(direction, signal, received_at)
        on_signal("import_prices" if direction == "import" else "export_prices")

    return take


class SourceFetchers:
    """Every configured source's task, the shared client (only when a source is configured), and
    what ``/health`` shows of them."""

    def __init__(
        self,
        cfg: SiteConfig,
        clock: Clock,
        *,
        on_prices: PricesCallback,
        on_pv: PvCallback,
        ctx: SourceContext | None = None,
    ) -> None:
        self.client: httpx.AsyncClient | None = None
        self.ctx = ctx or SourceContext(currency=cfg.site.currency, timezone=cfg.site.timezone)
        self.price_feeds: list[PriceFeed] = []
        self.pv_feeds: list[PvFeed] = []
        self._cache_dir = cache_dir(cfg)
        timezone = cfg.site.timezone
        directions: tuple[tuple[Direction, Any], ...] = (
            ("import", cfg.tariff.import_),
            ("export", cfg.tariff.export),
        )
        for direction, price in directions:
            if price.provider is None:
                continue
            primary = self._fetched(price.provider, "prices", f"tariff.{direction}.provider", clock)
            backup = None
            if price.backup_provider is not None:
                backup = self._fetched(
                    price.backup_provider, "prices", f"tariff.{direction}.backup_provider", clock
                )
            self.price_feeds.append(
                PriceFeed(
                    direction,
                    primary,
                    backup,
                    self._shared_client(),
                    clock,
                    currency=cfg.site.currency,
                    timezone=timezone,
                    on_prices=on_prices,
                )
            )
        types = [pv.type for pv in cfg.forecast.pv_sources]
        for i, pv in enumerate(cfg.forecast.pv_sources):
            fetched = self._fetched(pv, "pv", f"forecast.pv_sources[{i}]", clock)
            key = pv.type if types.count(pv.type) == 1 else f"{pv.type}[{i}]"
            self.pv_feeds.append(
                PvFeed(fetched, self._shared_client(), clock, key=key, timezone=timezone, on_pv=on_pv)
            )

    @classmethod
    def for_daemon(cls, daemon: Daemon) -> SourceFetchers:
        """The daemon's: prices go into its inputs the way MQTT's do (then a re-plan), PV forecasts to
        its forecast service."""
        on_prices = prices_into(daemon.inputs, daemon.router.handle_signal)

        def on_pv(source: str, forecast: PowerForecast, received_at: dt.datetime) -> None:
            daemon.forecasts.update_fetched_pv(source, forecast, received_at)
            daemon.router.handle_signal("pv_forecast")  # re-planned on, as an MQTT forecast is

        return cls(daemon.cfg, daemon.clock, on_prices=on_prices, on_pv=on_pv)

    def _shared_client(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = http_client()
        return self.client

    def _fetched(self, cfg: Any, kind: Literal["prices", "pv"], where: str, clock: Clock) -> FetchedSource:
        file_name = where.replace("[", "-").replace("]", "").replace(".", "-") + f"-{cfg.type}.json"
        cache = SourceCache(self._cache_dir / file_name, config_digest(cfg.model_dump_json()))
        pv = kind == "pv"
        return FetchedSource(
            source_instance(cfg, kind, self.ctx),
            where,
            clock,
            cache,
            min_interval_s=PV_MIN_INTERVAL_S if pv else PRICE_MIN_INTERVAL_S,
            backoff=PV_BACKOFF if pv else PRICE_BACKOFF,
        )

    def tasks(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """``(task name, coroutine)`` for each feed, to run in the daemon's TaskGroup."""
        named: list[tuple[str, Coroutine[Any, Any, None]]] = [
            (f"prices:{feed.direction}", feed.run()) for feed in self.price_feeds
        ]
        named += [(f"pv:{feed.source.where}", feed.run()) for feed in self.pv_feeds]
        return named

    def problems(self) -> list[str]:
        found = [p for feed in self.price_feeds for p in feed.problems()]
        return found + [p for feed in self.pv_feeds for p in feed.problems()]

    def statuses(self) -> list[dict[str, Any]]:
        sources = [s for feed in self.price_feeds for s in feed.sources]
        sources += [feed.source for feed in self.pv_feeds]
        return [s.status.as_dict() for s in sources]

    def details(self) -> dict[str, Any]:
        """``{"sources": [...]}`` for ``/health`` (nothing when no source is configured)."""
        return {"sources": self.statuses()} if self.client is not None else {}

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
