"""The fetcher's schedule, retries, failover, cache and currency handling, against a real HTTP server
(``tests/http_stub.py``) serving a small test-only source, on a clock whose waits move time at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

from controller.backoff import Backoff
from controller.health import HealthFacts, degradations
from controller.signals import PowerForecast, PriceSignal, PriceSlot
from controller.sources.base import HttpRequest, HttpSource, SourceContext, SourceError, register_source
from controller.sources.cache import SourceCache
from controller.sources.fetcher import (
    AUTH_RETRY_S,
    PRICE_MIN_INTERVAL_S,
    FetchedSource,
    PriceFeed,
    PvFeed,
    prices_in_site_currency,
)
from controller.sources.prices.common import FetchedPrices
from controller.sources.schedule import covered_until, local_days, publication_of
from tests.http_stub import Answer, HttpStub, Seen, http_stub

pytestmark = pytest.mark.timeout(60)

UTC = dt.UTC


class JumpClock:
    """A clock whose waits move its time forward at once (and let other tasks run)."""

    def __init__(self, start: dt.datetime) -> None:
        self._now = start
        self._mono = 0.0

    def now(self) -> dt.datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self._mono += seconds
        self._now += dt.timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)

    def timeout(self, seconds: float | None) -> asyncio.Timeout:
        return asyncio.timeout(None)


# ------------------------------------------------------------------ test sources


class MarketConfig(BaseModel):
    type: Literal["test_market"] = "test_market"
    base_url: str
    path: str = "/prices"
    exchange_rate: float | None = None


@register_source("prices", "test_market")
class MarketSource(HttpSource[MarketConfig, FetchedPrices]):
    """``GET {base}{path}?start=ISO&end=ISO`` -> ``{"currency": "EUR", "prices": [[start, end, value]]}``
    (a format of this test only)."""

    default_base_url: ClassVar[str] = "http://127.0.0.1:9"

    def requests(self, start: dt.datetime, end: dt.datetime) -> list[HttpRequest]:
        params = {"start": start.isoformat(), "end": end.isoformat()}
        return [HttpRequest(self.base_url + self.cfg.path, params=params)]

    def parse(self, request: HttpRequest, body: bytes) -> FetchedPrices:
        data = json.loads(body)
        if data.get("boom"):
            raise KeyError("a parser bug")
        slots = tuple(
            PriceSlot(dt.datetime.fromisoformat(a), dt.datetime.fromisoformat(b), v)
            for a, b, v in data["prices"]
        )
        return FetchedPrices(slots, data["currency"])


class PvConfig(BaseModel):
    type: Literal["test_pv"] = "test_pv"
    base_url: str


@register_source("pv", "test_pv")
class PvSource(HttpSource[PvConfig, PowerForecast]):
    default_base_url: ClassVar[str] = "http://127.0.0.1:9"

    def requests(self, start: dt.datetime, end: dt.datetime) -> list[HttpRequest]:
        return [HttpRequest(self.base_url + "/pv", params={"start": start.isoformat()})]

    def parse(self, request: HttpRequest, body: bytes) -> PowerForecast:
        rows = json.loads(body)
        return PowerForecast(
            tuple((dt.datetime.fromisoformat(a), dt.datetime.fromisoformat(b), w) for a, b, w in rows)
        )


class Market:
    """Hourly prices for whatever range is asked, up to ``published_until`` (None: any range)."""

    def __init__(self, currency: str = "EUR", value: float = 0.10) -> None:
        self.currency = currency
        self.value = value
        self.published_until: dt.datetime | None = None

    def __call__(self, seen: Seen) -> Answer:
        start = dt.datetime.fromisoformat(seen.query["start"])
        end = dt.datetime.fromisoformat(seen.query["end"])
        if self.published_until is not None:
            end = min(end, self.published_until)
        rows = []
        while start < end:
            rows.append([start.isoformat(), (start + dt.timedelta(hours=1)).isoformat(), self.value])
            start += dt.timedelta(hours=1)
        return Answer(200, json.dumps({"currency": self.currency, "prices": rows}).encode())


# ------------------------------------------------------------------ the feed under test

BERLIN = "Europe/Berlin"
# 15:00 in Berlin: tomorrow's prices are published.
AFTERNOON = dt.datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
MORNING = dt.datetime(2026, 12, 7, 8, 0, tzinfo=UTC)  # 09:00 in Berlin, before publication


class Received:
    def __init__(self) -> None:
        self.signals: list[tuple[str, PriceSignal]] = []

    def __call__(
        self, direction: Literal["import", "export"], signal: PriceSignal, received_at: dt.datetime
    ) -> None:
        self.signals.append((direction, signal))

    def slots(self) -> list[PriceSlot]:
        return [s for _, signal in self.signals for s in signal.slots]


class Setup:
    def __init__(self, stub: HttpStub, tmp: Path, clock: JumpClock, client: httpx.AsyncClient) -> None:
        self.stub, self.tmp, self.clock, self.client = stub, tmp, clock, client
        self.received = Received()

    def source(
        self, path: str = "/prices", where: str = "tariff.import.provider", exchange_rate: float | None = None
    ) -> FetchedSource:
        cfg = MarketConfig(base_url=self.stub.url, path=path, exchange_rate=exchange_rate)
        cache = SourceCache(self.tmp / "sources" / f"{where}.json", "digest")
        return FetchedSource(
            MarketSource(cfg, SourceContext()),
            where,
            self.clock,
            cache,
            min_interval_s=PRICE_MIN_INTERVAL_S,
            backoff=Backoff(initial_s=60.0, max_s=3600.0),
        )

    def feed(self, backup: bool = False, timezone: str = BERLIN, **source: Any) -> PriceFeed:
        return PriceFeed(
            "import",
            self.source(**source),
            self.source("/backup", "tariff.import.backup_provider") if backup else None,
            self.client,
            self.clock,
            currency="EUR",
            timezone=timezone,
            on_prices=self.received,
            rng=random.Random(7),
        )

    def requests(self, path: str = "/prices") -> list[Seen]:
        return [s for s in self.stub.seen if s.path == path]


@pytest.fixture
async def make_setup(tmp_path: Path) -> AsyncIterator[Callable[[dt.datetime], Any]]:
    with http_stub() as stub:
        clients: list[httpx.AsyncClient] = []

        def make(start: dt.datetime) -> Setup:
            client = httpx.AsyncClient(timeout=5.0)
            clients.append(client)
            return Setup(stub, tmp_path, JumpClock(start), client)

        yield make
        for client in clients:
            await client.aclose()


def ranges(seen: list[Seen]) -> list[tuple[dt.datetime, dt.datetime]]:
    return [
        (dt.datetime.fromisoformat(s.query["start"]), dt.datetime.fromisoformat(s.query["end"])) for s in seen
    ]


def berlin_midnight(day: int, month: int = 12) -> dt.datetime:
    return dt.datetime(2026, month, day, tzinfo=dt.timezone(dt.timedelta(hours=1))).astimezone(UTC)


# ------------------------------------------------------------------ schedule and cache


async def test_fetches_today_and_tomorrow_then_sleeps_until_the_next_publication(make_setup: Any) -> None:
    s: Setup = make_setup(AFTERNOON)
    s.stub.routes["/prices"] = Market()
    feed = s.feed()
    feed.load_cache()
    wait_s = await feed.step()
    assert ranges(s.requests()) == [(berlin_midnight(7), berlin_midnight(9))]
    assert len(s.received.slots()) == 48 and s.received.slots()[0].value_per_kwh == pytest.approx(0.10)
    # Next: tomorrow's publication at 12:00 Berlin (11:00 UTC), with up to a minute of jitter.
    next_poll = dt.datetime(2026, 12, 8, 11, 0, tzinfo=UTC)
    assert 0 <= wait_s - (next_poll - AFTERNOON).total_seconds() <= 60
    assert (s.tmp / "sources" / "tariff.import.provider.json").exists()


async def test_before_publication_only_today_is_fetched_and_it_waits_for_publication(make_setup: Any) -> None:
    s: Setup = make_setup(MORNING)
    s.stub.routes["/prices"] = Market()
    feed = s.feed()
    wait_s = await feed.step()
    assert ranges(s.requests()) == [(berlin_midnight(7), berlin_midnight(8))]
    publication = dt.datetime(2026, 12, 7, 11, 0, tzinfo=UTC)
    assert 0 <= wait_s - (publication - MORNING).total_seconds() <= 60
    s.clock.advance(wait_s)
    await feed.step()
    assert ranges(s.requests())[1] == (berlin_midnight(8), berlin_midnight(9))  # only tomorrow now


async def test_a_restart_uses_the_cache_without_asking_again(make_setup: Any) -> None:
    s: Setup = make_setup(AFTERNOON)
    s.stub.routes["/prices"] = Market(value=0.21)
    await s.feed().step()
    assert len(s.requests()) == 1
    restarted = s.feed()  # a new daemon: a new feed on the same cache directory
    s.received.signals.clear()
    s.clock.advance(600)
    restarted.load_cache()
    assert len(s.received.slots()) == 48  # handed to the site at once, from disk
    assert {round(slot.value_per_kwh, 9) for slot in s.received.slots()} == {0.21}
    wait_s = await restarted.step()
    assert len(s.requests()) == 1  # nothing fetched: today and tomorrow are known
    assert wait_s > 12 * 3600


async def test_a_corrupt_cache_file_is_logged_and_ignored(make_setup: Any) -> None:
    s: Setup = make_setup(AFTERNOON)
    s.stub.routes["/prices"] = Market()
    (s.tmp / "sources").mkdir()
    (s.tmp / "sources" / "tariff.import.provider.json").write_text('{"version": 1, "config": "digest", "segm')
    feed = s.feed()
    with capture_logs() as logs:
        feed.load_cache()
    assert [e["event"] for e in logs] == ["source_cache_corrupt"]
    assert not s.received.signals
    await feed.step()
    assert len(s.requests()) == 1
    # The next write replaced it with a good file.
    assert json.loads((s.tmp / "sources" / "tariff.import.provider.json").read_text())["segments"]


async def test_cached_prices_older_than_yesterday_are_dropped(make_setup: Any) -> None:
    s: Setup = make_setup(AFTERNOON)
    s.stub.routes["/prices"] = Market()
    await s.feed().step()
    s.clock.advance(3 * 86400)
    s.received.signals.clear()
    s.feed().load_cache()
    assert not s.received.signals  # two days old: nothing from it reaches the site


@pytest.mark.parametrize(
    ("now", "hours"),
    [
        (dt.datetime(2026, 10, 25, 6, 0, tzinfo=UTC), 25),  # autumn: clocks back, a 25-hour day
        (dt.datetime(2026, 3, 29, 6, 0, tzinfo=UTC), 23),  # spring: clocks forward, a 23-hour day
    ],
)
async def test_a_dst_day_is_asked_for_as_its_local_length(
    make_setup: Any, now: dt.datetime, hours: int
) -> None:
    s: Setup = make_setup(now)
    s.stub.routes["/prices"] = Market()
    feed = s.feed()
    await feed.step()
    ((start, end),) = ranges(s.requests())
    assert start.astimezone(dt.UTC).hour in (22, 23)  # local midnight in UTC
    assert (end - start) == dt.timedelta(hours=hours)
    assert len(s.received.slots()) == hours
    today = local_days(now, BERLIN, 1)[0]
    assert feed.covers(today)


# ------------------------------------------------------------------ failures


async def test_failures_back_off_are_logged_once_and_honour_retry_after(make_setup: Any) -> None:
    s: Setup = make_setup(dt.datetime(2026, 12, 7, 11, 0, tzinfo=UTC))  # 12:00 Berlin: not late yet
    s.stub.routes["/prices"] = Answer(503, b"maintenance")
    feed = s.feed()
    with capture_logs() as logs:
        waits = []
        for _ in range(3):
            waits.append(await feed.step())
            s.clock.advance(waits[-1])
    assert len(s.requests()) == 3
    assert all(w >= 60 for w in waits)  # never more than one request a minute
    assert max(waits[1:]) > 60  # it backs off
    failed = [e for e in logs if e["event"] == "source_failed"]
    assert len(failed) == 1 and "HTTP 503" in failed[0]["reason"]
    (problem,) = feed.problems()
    assert "tariff.import.provider (test_market) failing since 2026-12-07T11:00:00Z" in problem
    assert "HTTP 503: maintenance" in problem
    s.stub.routes["/prices"] = Answer(429, b"", {"Retry-After": "5400"})
    assert await feed.step() >= 5400
    s.stub.routes["/prices"] = Market()
    with capture_logs() as logs:
        s.clock.advance(5400)
        await feed.step()
    assert [e["event"] for e in logs if e["event"].startswith("source_")] == ["source_recovered"]
    assert feed.problems() == []
    assert len(s.received.slots()) == 48


async def test_requests_to_one_source_are_at_least_a_minute_apart(make_setup: Any) -> None:
    s: Setup = make_setup(AFTERNOON)
    times: list[float] = []

    def stamped(seen: Seen) -> Answer:
        times.append(s.clock.monotonic())
        return Answer(500, b"")

    s.stub.routes["/prices"] = stamped
    feed = s.feed()
    for _ in range(3):
        await feed.step()  # no advance between steps: the source's own limit must hold
    assert len(times) == 3
    assert all(b - a >= 60 for a, b in itertools.pairwise(times))


async def test_an_unexpected_parser_error_is_a_failure_not_a_crash(make_setup: Any) -> None:
    s: Setup = make_setup(AFTERNOON)
    s.stub.routes["/prices"] = Answer(200, b'{"boom": true}')
    feed = s.feed()
    with capture_logs() as logs:
        wait_s = await feed.step()
    assert wait_s >= 60
    assert any(e["event"] == "source_parse_failed" and e["source"].startswith("tariff.import") for e in logs)
    assert "unexpected KeyError" in feed.problems()[0]


async def test_after_three_failures_the_backup_is_asked_for_the_same_range(make_setup: Any) -> None:
    s: Setup = make_setup(AFTERNOON)
    s.stub.routes["/prices"] = Answer(502, b"")
    backup = Market(value=0.33)
    s.stub.routes["/backup"] = backup
    feed = s.feed(backup=True)
    for _ in range(2):
        s.clock.advance(await feed.step())
    assert not s.requests("/backup")  # two failures: not yet
    await feed.step()
    assert ranges(s.requests("/backup")) == ranges(s.requests())[-1:]
    assert {round(slot.value_per_kwh, 9) for slot in s.received.slots()} == {0.33}
    assert len(feed.problems()) == 1  # the provider still fails: still shown


async def test_an_empty_answer_for_a_needed_day_asks_the_backup(make_setup: Any) -> None:
    s: Setup = make_setup(AFTERNOON)
    market = Market()
    market.published_until = berlin_midnight(8)  # no tomorrow
    s.stub.routes["/prices"] = market
    s.stub.routes["/backup"] = Market(value=0.5)
    feed = s.feed(backup=True)
    await feed.step()
    assert ranges(s.requests("/backup")) == [(berlin_midnight(7), berlin_midnight(9))]
    assert feed.covers(local_days(AFTERNOON, BERLIN)[1])


async def test_an_auth_error_is_not_retried_for_an_hour_and_fails_over_at_once(make_setup: Any) -> None:
    s: Setup = make_setup(AFTERNOON)
    s.stub.routes["/prices"] = Answer(401, b"invalid token")
    s.stub.routes["/backup"] = Market(value=0.4)
    feed = s.feed(backup=True)
    with capture_logs() as logs:
        await feed.step()
        assert len(s.requests("/backup")) == 1  # at once, not after three tries
        for _ in range(5):  # tomorrow's prices arrive: the day after is asked from the backup
            s.clock.advance(600)
            await feed.step()
    assert len(s.requests()) == 1  # not again within the hour
    assert len([e for e in logs if e["event"] == "source_failed"]) == 1
    assert "HTTP 401: invalid token" in feed.problems()[0]
    s.clock.advance(AUTH_RETRY_S)
    for slots in feed.known.values():
        slots.clear()  # prices gone: it must ask again
    await feed.step()
    assert len(s.requests()) == 2  # an hour later the provider is tried again


async def test_late_prices_are_warned_once_and_shown_in_health(make_setup: Any) -> None:
    s: Setup = make_setup(dt.datetime(2026, 12, 7, 10, 30, tzinfo=UTC))  # 11:30 Berlin
    market = Market()
    market.published_until = berlin_midnight(8)
    s.stub.routes["/prices"] = market
    feed = s.feed()
    waits = []
    with capture_logs() as logs:
        while s.clock.now() < dt.datetime(2026, 12, 7, 15, 0, tzinfo=UTC):  # until 16:00 Berlin
            waits.append(await feed.step())
            s.clock.advance(waits[-1])
    late = [e for e in logs if e["event"] == "prices_late"]
    assert len(late) == 1 and late[0]["source"] == "tariff.import.provider (test_market)"
    assert late[0]["day"] == "2026-12-08"
    # Today at once, then nothing until 12:00 Berlin, then every 15 minutes (with jitter).
    assert 1800 <= waits[0] <= 1860
    assert all(0.9 * 900 <= w <= 1.1 * 900 for w in waits[1:])
    assert 14 <= len(s.requests()) - 1 <= 18
    (problem,) = feed.problems()
    assert "import prices for 2026-12-08 not published by 14:00 Europe/Berlin" in problem
    facts = HealthFacts(
        mqtt_connected=True,
        safe_mode_reasons=(),
        chargers_away_s={},
        plan_age_s=0,
        has_plan=True,
        replan_interval_s=300,
        stale_meters=(),
        source_problems=tuple(feed.problems()),
    )
    assert degradations(facts) == [{"what": "sources", "why": problem}]
    market.published_until = None
    s.clock.advance(900)
    await feed.step()
    assert feed.problems() == []


# ------------------------------------------------------------------ currency


async def test_prices_in_another_currency_are_converted_with_the_exchange_rate(make_setup: Any) -> None:
    s: Setup = make_setup(AFTERNOON)
    s.stub.routes["/prices"] = Market(currency="SEK", value=1.0)
    feed = s.feed(exchange_rate=0.087)
    await feed.step()
    assert {round(slot.value_per_kwh, 9) for slot in s.received.slots()} == {0.087}


async def test_another_currency_without_an_exchange_rate_is_a_source_error(make_setup: Any) -> None:
    s: Setup = make_setup(AFTERNOON)
    s.stub.routes["/prices"] = Market(currency="SEK", value=1.0)
    feed = s.feed()
    await feed.step()
    assert not s.received.signals
    assert "prices are in SEK; set exchange_rate on tariff.import.provider" in feed.problems()[0]


def test_prices_in_site_currency_converts_only_other_currencies() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    hour = dt.timedelta(hours=1)
    eur = FetchedPrices((PriceSlot(start + hour, start + 2 * hour, 0.2),), "EUR")
    sek = FetchedPrices((PriceSlot(start, start + hour, 2.0),), "SEK")
    slots = prices_in_site_currency([eur, sek], "EUR", 0.1, "tariff.export.provider")
    assert [s.value_per_kwh for s in slots] == [pytest.approx(0.2), pytest.approx(0.2)]
    assert slots[0].start == start  # sorted
    with pytest.raises(
        SourceError, match=r"prices are in SEK; set exchange_rate on tariff\.export\.provider"
    ):
        prices_in_site_currency([sek], "EUR", None, "tariff.export.provider")


# ------------------------------------------------------------------ PV


async def test_pv_is_fetched_hourly_and_not_again_after_a_restart_within_the_hour(make_setup: Any) -> None:
    s: Setup = make_setup(AFTERNOON)
    rows = [[AFTERNOON.isoformat(), (AFTERNOON + dt.timedelta(hours=1)).isoformat(), 1500.0]]
    s.stub.routes["/pv"] = Answer(200, json.dumps(rows).encode())
    got: list[tuple[str, PowerForecast]] = []

    def feed() -> PvFeed:
        cfg = PvConfig(base_url=s.stub.url)
        source = FetchedSource(
            PvSource(cfg, SourceContext()),
            "forecast.pv_sources[0]",
            s.clock,
            SourceCache(s.tmp / "sources" / "pv.json", "pv-digest"),
            min_interval_s=600.0,
            backoff=Backoff(initial_s=600.0, max_s=3 * 3600.0),
        )
        return PvFeed(
            source,
            s.client,
            s.clock,
            key="test_pv",
            timezone=BERLIN,
            on_pv=lambda k, f, _: got.append((k, f)),
        )

    first = feed()
    first.load_cache()
    assert await first.step() == pytest.approx(3600.0)
    assert len(s.stub.seen) == 1 and got[0][0] == "test_pv" and got[0][1].segments[0][2] == 1500.0
    s.clock.advance(1200)
    restarted = feed()
    restarted.load_cache()
    assert len(got) == 2  # from the cache, at once
    wait_s = await restarted.step()
    assert len(s.stub.seen) == 1 and wait_s == pytest.approx(2400.0)
    s.clock.advance(wait_s)
    s.stub.routes["/pv"] = Answer(500, b"")
    assert await restarted.step() >= 600  # a failure waits at least ten minutes (six calls an hour)
    assert len(s.stub.seen) == 2 and restarted.problems()


# ------------------------------------------------------------------ schedule


def test_covered_until_stops_at_the_first_gap() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
    hour = dt.timedelta(hours=1)
    assert covered_until([(t0 + hour, t0 + 2 * hour), (t0, t0 + hour)], t0) == t0 + 2 * hour
    assert covered_until([(t0, t0 + hour), (t0 + 2 * hour, t0 + 3 * hour)], t0) == t0 + hour
    assert covered_until([(t0 + hour, t0 + 2 * hour)], t0) == t0  # nothing from the start


def test_octopus_publishes_in_the_uk_afternoon_and_markets_at_noon_cet() -> None:
    day = dt.date(2026, 7, 1)
    assert publication_of("octopus").first_poll_on(day) == dt.datetime(2026, 7, 1, 15, 0, tzinfo=UTC)
    assert publication_of("octopus").late_on(day) == dt.datetime(2026, 7, 1, 19, 0, tzinfo=UTC)
    assert publication_of("entsoe").first_poll_on(day) == dt.datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    assert publication_of("entsoe").late_on(dt.date(2026, 12, 1)) == dt.datetime(
        2026, 12, 1, 13, 0, tzinfo=UTC
    )
