"""What the controller may know, and when: the simulator's information model.

A strategy never reads the scenario. It asks an :class:`InformationModel` for an
:class:`Observation` at the current step, and gets only what a real controller would have then:

* **prices** as published: day-ahead prices for a delivery day (local midnight to local midnight in
  the site's timezone, daylight saving time included) are published at ``publication_hour_local``
  (12:00 local) the day before. Past that point prices are forecast by repeating the last published
  day (persistence);
* **load and PV** as forecasts from a :class:`ForecastModel`. History models see only measured steps
  before now; the ``noisy`` error model perturbs the actuals with seeded, lead-time-growing errors
  (a synthetic forecast of known quality, for sensitivity studies);
* ``nowcast`` (off by default, for diagnosis): the current step's load and PV are known exactly, an
  idealisation of a controller that re-plans every few minutes on live meter readings;
* **vehicles**: SoC and plug state measured now (while away, the SoC last measured at home), and the
  next departure and target the driver announced (the daemon's one-off departure command or the
  charger's NotifyEVChargingNeeds). Trips beyond it are not known: the controller expects what its
  weekly schedule says (``controller.vehicles.scheduled_trips``). ``trip_info="schedule-only"``:
  the driver announces nothing (``departure_announced`` is False), so the controller has only its
  weekly schedule and the early-departure lead it learns from the unplugs it sees.
  ``trip_info="calendar"`` (for diagnosis) hands over the driver's trip calendar inside the horizon
  too, with each trip's energy estimated from the car's past trips (``trip_energy="actual"``: the
  true energy).
"""

from __future__ import annotations

import bisect
import math
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from controller.config import ForecastConfig
from sim.daemon_forecast import DaemonLoadForecast, DaemonPvForecast
from sim.plant import Plant
from sim.scenario import FloatArray, Scenario, ScheduledTrip, Series

__all__ = [
    "FORECAST_MODELS",
    "TRIP_INFO",
    "ForecastModel",
    "InformationModel",
    "KnownDeparture",
    "KnownTrip",
    "NoisyForecast",
    "Observation",
    "OracleForecast",
    "PriceKnowledge",
    "VehicleObservation",
    "make_forecast",
]

IntArray = npt.NDArray[np.int64]

TripInfo = Literal["schedule", "schedule-only", "calendar"]
TRIP_INFO: tuple[TripInfo, ...] = ("schedule", "schedule-only", "calendar")
"""What the controller learns of the trips (see the module docstring)."""


# ------------------------------------------------------------------------ prices


@dataclass(frozen=True, slots=True)
class PriceKnowledge:
    """When prices become known. ``all_known`` models a static or time-of-use tariff.

    Delivery days run from local midnight to local midnight in the site's timezone (23 or 25 hours
    on daylight-saving changes); the prices of day ``D + 1`` are published at
    ``publication_hour_local`` (local wall-clock time) on day ``D``.
    """

    publication_hour_local: float = 12.0
    all_known: bool = False

    def known_until(self, series: Series, timezone: str) -> IntArray:
        """Per step ``k``: the first step index whose price is not yet published at ``k``'s start.

        ``timezone`` is the IANA name of the delivery days' zone (the site's ``site.timezone``).
        """
        n = series.steps
        if self.all_known:
            return np.full(n, n, dtype=np.int64)
        zone = zoneinfo.ZoneInfo(timezone)
        publication = timedelta(hours=self.publication_hour_local)
        step_s = series.step.total_seconds()

        def instant(day: date, after_midnight: timedelta = timedelta(0)) -> datetime:
            """A local wall-clock time on ``day`` as an aware datetime (compares correctly with UTC)."""
            return (datetime.combine(day, time()) + after_midnight).replace(tzinfo=zone)

        def steps_until(moment: datetime) -> int:
            return math.ceil((moment - series.start).total_seconds() / step_s)

        # Per local day: when tomorrow's prices are published, and the ends of today and tomorrow.
        cache: dict[date, tuple[datetime, int, int]] = {}
        out = np.empty(n, dtype=np.int64)
        for k in range(n):
            now = series.time_at(k)
            today = now.astimezone(zone).date()
            known = cache.get(today)
            if known is None:
                tomorrow = today + timedelta(days=1)
                known = (
                    instant(today, publication),
                    steps_until(instant(tomorrow)),
                    steps_until(instant(tomorrow + timedelta(days=1))),
                )
                cache[today] = known
            published_at, end_of_today, end_of_tomorrow = known
            out[k] = end_of_tomorrow if now >= published_at else end_of_today
        return np.maximum(out, np.arange(1, n + 1))


def _persist_index(index: IntArray, known_until: int, steps_per_day: int, length: int) -> IntArray:
    """Where each step's price comes from: published, else the last published day repeated for the
    steps not yet published."""
    source = index.copy()
    late = source >= known_until
    if late.any():
        days_back = (source[late] - known_until) // steps_per_day + 1
        source[late] = source[late] - days_back * steps_per_day
    # Before the first day there is no earlier day to repeat: hold the last published price.
    source[source < 0] = known_until - 1
    np.clip(source, 0, length - 1, out=source)
    return source


# --------------------------------------------------------------------- forecasts


class ForecastModel(Protocol):
    """Forecast of one series for steps ``[k, k + steps)``."""

    @property
    def name(self) -> str: ...

    @property
    def uses_actuals(self) -> bool:
        """True only for synthetic error models that perturb the actuals; False for causal models."""
        ...

    def forecast(
        self, history: FloatArray, actual_ahead: FloatArray | None, k: int, steps: int, steps_per_day: int
    ) -> FloatArray:
        """``history`` holds the measured steps ``[0, k)``; ``actual_ahead`` is given only if uses_actuals."""
        ...


@dataclass(frozen=True, slots=True)
class NoisyForecast:
    """Actuals times ``1 + e``: ``e`` is AR(1) over lead time with standard deviation growing from
    ``sigma_now`` to ``sigma_day`` at 24 h; seeded per step, so runs are reproducible."""

    sigma_now: float = 0.05
    sigma_day: float = 0.3
    correlation: float = 0.9
    seed: int = 0
    name: str = "noisy"
    uses_actuals: bool = True

    def forecast(
        self, history: FloatArray, actual_ahead: FloatArray | None, k: int, steps: int, steps_per_day: int
    ) -> FloatArray:
        assert actual_ahead is not None
        rng = np.random.default_rng((self.seed, k))
        shocks = rng.standard_normal(steps)
        innovation = math.sqrt(1.0 - self.correlation**2)
        errors = np.empty(steps)
        state = shocks[0]
        for i in range(steps):
            if i:
                state = self.correlation * state + innovation * shocks[i]
            errors[i] = state
        lead_days = np.minimum(np.arange(steps) / steps_per_day, 1.0)
        sigma = self.sigma_now + (self.sigma_day - self.sigma_now) * np.sqrt(lead_days)
        out: FloatArray = np.maximum(0.0, actual_ahead * (1.0 + sigma * errors))
        return out


@dataclass(frozen=True, slots=True)
class OracleForecast:
    """The actuals themselves: for diagnosis only (how much do forecast errors cost?)."""

    name: str = "oracle"
    uses_actuals: bool = True

    def forecast(
        self, history: FloatArray, actual_ahead: FloatArray | None, k: int, steps: int, steps_per_day: int
    ) -> FloatArray:
        assert actual_ahead is not None
        return actual_ahead.copy()


FORECAST_MODELS = ("daemon", "noisy", "oracle")


def make_forecast(
    name: str, which: Literal["load", "pv"], settings: ForecastConfig | None = None, seed: int = 0
) -> ForecastModel:
    """A forecast model by name: ``daemon`` runs the daemon's own forecasts with ``settings``."""
    if name == "daemon":
        settings = settings or ForecastConfig()
        return DaemonLoadForecast(settings) if which == "load" else DaemonPvForecast(settings)
    if name == "noisy":
        return NoisyForecast(seed=seed)
    if name == "oracle":
        return OracleForecast()
    raise ValueError(f"unknown forecast model {name!r}; use one of {', '.join(FORECAST_MODELS)}")


# ------------------------------------------------------------------ observations


@dataclass(frozen=True, slots=True)
class KnownDeparture:
    at: datetime
    index: int
    target_soc_percent: float


@dataclass(frozen=True, slots=True)
class KnownTrip:
    """A trip in the driver's calendar; ``energy_kwh`` is the controller's estimate."""

    depart: datetime
    arrive: datetime
    depart_index: int
    arrive_index: int
    energy_kwh: float
    target_soc_percent: float


@dataclass(frozen=True, slots=True)
class VehicleObservation:
    vehicle_id: str
    plugged_in: bool
    soc_percent: float
    """Measured now when plugged in; while away, the SoC measured at departure."""
    soc_measured_at: datetime
    next_departure: KnownDeparture | None
    """The driver's next departure: announced to the controller unless ``departure_announced`` is
    False; the baselines charge for it either way."""
    trips: tuple[KnownTrip, ...] | None
    """Calendar trips that overlap the horizon, the one under way included; None when the calendar
    is not known (``trip_info`` ``schedule`` or ``schedule-only``, what the daemon has)."""
    departure_announced: bool = True
    """Whether the driver announces ``next_departure`` to the controller (False under
    ``trip_info="schedule-only"``: the daemon is told nothing)."""


@dataclass(frozen=True, eq=False)
class Observation:
    """What the controller knows at the start of step ``k``; arrays cover ``[k, k + steps)``."""

    k: int
    time: datetime
    step: timedelta
    vehicles: tuple[VehicleObservation, ...]
    import_price_per_kwh: FloatArray
    export_price_per_kwh: FloatArray
    price_known_steps: int
    load_w: FloatArray
    pv_w: FloatArray
    import_limit_w: float
    export_limit_w: float

    @property
    def steps(self) -> int:
        return len(self.load_w)


class InformationModel:
    """The only door from a strategy to the world; it answers for the current step only."""

    def __init__(
        self,
        scenario: Scenario,
        plant: Plant,
        load_forecast: ForecastModel | None = None,
        pv_forecast: ForecastModel | None = None,
        prices: PriceKnowledge | None = None,
        trip_energy: Literal["estimate", "actual"] = "estimate",
        initial_trip_energy_fraction: float = 0.2,
        nowcast: bool = False,
        trip_info: TripInfo = "schedule",
    ) -> None:
        if trip_info not in TRIP_INFO:
            raise ValueError(f"unknown trip_info {trip_info!r}; use one of {', '.join(TRIP_INFO)}")
        self._scenario = scenario
        self._series = scenario.series
        self._plant = plant
        settings = scenario.config.forecast
        self.load_forecast: ForecastModel = load_forecast or make_forecast("daemon", "load", settings)
        self.pv_forecast: ForecastModel = pv_forecast or make_forecast("daemon", "pv", settings)
        self.prices = prices or PriceKnowledge()
        self._known_until = self.prices.known_until(self._series, scenario.config.site.timezone)
        self._steps_per_day = round(timedelta(days=1) / self._series.step)
        self._trip_energy = trip_energy
        self._trip_calendar = trip_info == "calendar"
        self._announces = trip_info != "schedule-only"
        self._nowcast = nowcast
        grid = scenario.config.site.grid
        self.import_limit_w = 1000.0 * grid.import_limit_kw
        self.export_limit_w = 1000.0 * grid.export_limit_kw
        self._trips: list[list[ScheduledTrip]] = []
        self._departs: list[list[int]] = []
        self._initial_trip_kwh: list[float] = []
        for spec in plant.specs:
            trips = list(scenario.trips_of(spec.vehicle_id))
            self._trips.append(trips)
            self._departs.append([t.depart_index for t in trips])
            self._initial_trip_kwh.append(initial_trip_energy_fraction * spec.capacity_kwh)
        self._soc_seen = [plant.soc_percent(i) for i in range(len(plant.specs))]
        self._soc_seen_at = [scenario.series.start for _ in plant.specs]
        self._k = 0

    # The engine moves time; strategies cannot choose the step they observe.
    @property
    def k(self) -> int:
        return self._k

    def advance_to(self, k: int) -> None:
        if k < self._k:
            raise ValueError("time does not run backwards")
        self._k = k
        now = self._series.time_at(k)
        plugged = self._plant.plugged_in(k) if k < self._series.steps else ()
        for i, is_plugged in enumerate(plugged):
            if is_plugged:
                self._soc_seen[i] = self._plant.soc_percent(i)
                self._soc_seen_at[i] = now

    @property
    def steps_per_day(self) -> int:
        return self._steps_per_day

    @property
    def step(self) -> timedelta:
        return self._series.step

    @property
    def now(self) -> datetime:
        return self._series.time_at(self._k)

    def prices_published_until(self) -> int:
        """The first step whose prices are not published yet at this step (the series' end at most)."""
        n = self._series.steps
        return int(self._known_until[min(self._k, n - 1)])

    def published_prices(self, start: int, end: int) -> tuple[FloatArray, FloatArray]:
        """Import and export prices per kWh of steps ``[start, end)``, as published: none of them
        may lie beyond :meth:`prices_published_until`."""
        if end > self.prices_published_until():
            raise ValueError(f"prices up to step {end} are not published at step {self._k}")
        series = self._series
        return series.import_price_per_kwh[start:end], series.export_price_per_kwh[start:end]

    def live_site_w(self) -> float:
        """The home's net load without the cars as the grid meter shows it during this step (live)."""
        return self.live_load_w() - self.live_pv_w()

    def live_load_w(self) -> float:
        """The home's load as a home meter shows it during this step (live)."""
        return float(self._series.load_w[self._k])

    def live_batteries(self) -> tuple[tuple[str, float, float], ...]:
        """Each home battery as its meters show it now: (id, power over the last step W + charging,
        SoC percent)."""
        batteries = self._plant.batteries
        if batteries is None:
            return ()
        return tuple(
            (spec.battery_id, batteries.last_power_w[i], batteries.soc_percent(i))
            for i, spec in enumerate(batteries.specs)
        )

    def live_pv_w(self) -> float:
        """The PV output as a PV meter shows it during this step (live)."""
        return float(self._series.pv_w[self._k])

    def vehicles(self, horizon_steps: int) -> tuple[VehicleObservation, ...]:
        return tuple(self._vehicle(i, horizon_steps) for i in range(len(self._plant.specs)))

    def _trip_energy_estimate(self, i: int, trip: ScheduledTrip) -> float:
        if self._trip_energy == "actual":
            return trip.energy_kwh
        done = [t.energy_kwh for t in self._trips[i] if t.arrive_index <= self._k]
        return sum(done) / len(done) if done else self._initial_trip_kwh[i]

    def _vehicle(self, i: int, horizon_steps: int) -> VehicleObservation:
        k = self._k
        spec = self._plant.specs[i]
        trips = self._trips[i]
        plugged = k < self._series.steps and self._plant.plugged_in(k)[i]
        # Trips overlapping [k, k + horizon): first trip whose arrival is after k.
        first = bisect.bisect_right(self._departs[i], k) - 1
        first = max(first, 0)
        while first < len(trips) and trips[first].arrive_index <= k:
            first += 1
        known: list[KnownTrip] = []
        next_departure: KnownDeparture | None = None
        estimate: float | None = None
        for trip in trips[first:] if self._trip_calendar else ():
            if trip.depart_index >= k + horizon_steps:
                break
            if estimate is None:
                estimate = self._trip_energy_estimate(i, trip)
            energy = trip.energy_kwh if self._trip_energy == "actual" else estimate
            known.append(
                KnownTrip(
                    self._series.time_at(trip.depart_index),
                    self._series.time_at(trip.arrive_index),
                    trip.depart_index,
                    trip.arrive_index,
                    energy,
                    trip.target_soc_percent,
                )
            )
        for trip in trips[first:]:
            if trip.depart_index >= k:
                next_departure = KnownDeparture(
                    self._series.time_at(trip.depart_index), trip.depart_index, trip.target_soc_percent
                )
                break
        return VehicleObservation(
            vehicle_id=spec.vehicle_id,
            plugged_in=bool(plugged),
            soc_percent=self._soc_seen[i],
            soc_measured_at=self._soc_seen_at[i],
            next_departure=next_departure,
            trips=tuple(known) if self._trip_calendar else None,
            departure_announced=self._announces,
        )

    def observe(
        self, horizon_steps: int, vehicles: tuple[VehicleObservation, ...] | None = None
    ) -> Observation:
        """Prices, forecasts and vehicles for ``[now, now + horizon_steps)`` as known now.

        ``vehicles`` may pass this step's :meth:`vehicles` answer for the same horizon (saves work).
        """
        k = self._k
        series = self._series
        n = series.steps
        index = np.arange(k, k + horizon_steps, dtype=np.int64)
        known_until = int(self._known_until[min(k, n - 1)])
        spd = self._steps_per_day
        source = _persist_index(index, known_until, spd, n)  # one index for both directions
        import_price = series.import_price_per_kwh[source]
        export_price = series.export_price_per_kwh[source]
        load = self._forecast(self.load_forecast, series.load_w, horizon_steps)
        pv = self._forecast(self.pv_forecast, series.pv_w, horizon_steps)
        return Observation(
            k=k,
            time=series.time_at(k),
            step=series.step,
            vehicles=self.vehicles(horizon_steps) if vehicles is None else vehicles,
            import_price_per_kwh=import_price,
            export_price_per_kwh=export_price,
            price_known_steps=max(0, min(horizon_steps, known_until - k)),
            load_w=load,
            pv_w=pv,
            import_limit_w=self.import_limit_w,
            export_limit_w=self.export_limit_w,
        )

    def _forecast(self, model: ForecastModel, actual: FloatArray, steps: int) -> FloatArray:
        k = self._k
        history = actual[:k]
        ahead: FloatArray | None = None
        if model.uses_actuals:
            ahead = actual[k : k + steps]
            if len(ahead) < steps:  # past the end of the scenario: repeat the last day
                pad = np.resize(actual[-self._steps_per_day :], steps - len(ahead))
                ahead = np.concatenate([ahead, pad])
        out = model.forecast(history, ahead, k, steps, self._steps_per_day)
        if self._nowcast and k < len(actual):
            out = out.copy()
            out[0] = actual[k]
        return out
