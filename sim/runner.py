"""Run strategies by name on a scenario: one run, a comparison of all, one point of a sweep."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from sim.baselines import SmartCharging, Uncontrolled
from sim.engine import ProgressCallback, SimResult, Strategy, simulate
from sim.information import ForecastModel, InformationModel, PriceKnowledge, TripInfo, make_forecast
from sim.metrics import Metrics, compute_metrics
from sim.overrides import apply_overrides, no_discharge
from sim.plant import Plant
from sim.scenario import Scenario

__all__ = [
    "STRATEGIES",
    "RunOptions",
    "make_strategy",
    "run_point",
    "run_strategy",
    "strategy_names",
]

STRATEGIES = ("uncontrolled", "smart", "mpc", "perfect")
NO_DISCHARGE_SUFFIX = "-no-discharge"


def strategy_names(with_no_discharge: bool = False) -> tuple[str, ...]:
    extra = ("mpc" + NO_DISCHARGE_SUFFIX, "perfect" + NO_DISCHARGE_SUFFIX) if with_no_discharge else ()
    return (*STRATEGIES, *extra)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How the controller's world is modelled (see ``sim.information``)."""

    forecast: str = "daemon"
    """Load and PV forecast model: daemon (the daemon's own forecasts from the measured history),
    noisy (an error model around the actuals), oracle (the actuals, for diagnosis)."""
    load_forecast: str | None = None
    """Overrides ``forecast`` for the home load."""
    pv_forecast: str | None = None
    """Overrides ``forecast`` for PV (e.g. ``noisy`` for a weather-service forecast)."""
    seed: int = 0
    prices: Literal["day-ahead", "all"] = "day-ahead"
    trip_info: TripInfo = "schedule"
    """What mpc knows of the trips after the announced next departure: the weekly schedule (what the
    daemon has), the weekly schedule alone with no departure announced (``schedule-only``), or, for
    diagnosis, the driver's calendar (times; energy as ``trip_energy`` says)."""
    trip_energy: Literal["estimate", "actual"] = "estimate"
    """With the calendar: each trip's energy as the mean of past trips, or the true energy."""
    publication_hour_local: float = 12.0
    """Day-ahead prices for the next local day are published at this hour, local time in the site's
    ``site.timezone`` (delivery days follow it, daylight saving time included)."""
    nowcast: bool = False
    """Diagnosis: the current step's load and PV known exactly (see ``sim.information``)."""

    def _model(self, name: str, which: Literal["load", "pv"], scenario: Scenario) -> ForecastModel:
        seed = self.seed + (0 if which == "load" else 1)
        return make_forecast(name, which, scenario.config.forecast, seed)

    def information(self, scenario: Scenario, plant: Plant) -> InformationModel:
        load_model = self._model(self.load_forecast or self.forecast, "load", scenario)
        pv_model = self._model(self.pv_forecast or self.forecast, "pv", scenario)
        prices = PriceKnowledge(
            publication_hour_local=self.publication_hour_local,
            all_known=self.prices == "all",
        )
        return InformationModel(
            scenario,
            plant,
            load_model,
            pv_model,
            prices,
            trip_energy=self.trip_energy,
            nowcast=self.nowcast,
            trip_info=self.trip_info,
        )


def make_strategy(name: str, scenario: Scenario) -> Strategy:
    """A strategy for ``scenario.config``; ``perfect`` also gets the actuals (it is the bound)."""
    config = scenario.config
    if name == "uncontrolled":
        return Uncontrolled(config)
    if name == "smart":
        return SmartCharging(config)
    if name == "mpc":
        from sim.controlled import ModelPredictiveControl

        return ModelPredictiveControl(config)
    if name == "perfect":
        from sim.controlled import PerfectForesight

        return PerfectForesight(scenario)
    raise ValueError(f"unknown strategy {name!r}; use one of {', '.join(strategy_names(True))}")


def run_strategy(
    scenario: Scenario,
    name: str,
    options: RunOptions | None = None,
    progress: ProgressCallback | None = None,
) -> SimResult:
    """Run one strategy; ``<name>-no-discharge`` runs it with V2G and V2H forbidden."""
    options = options or RunOptions()
    base = name.removesuffix(NO_DISCHARGE_SUFFIX)
    if base != name:
        scenario = scenario.with_config(no_discharge(scenario.config))
    plant = Plant(scenario)
    info = options.information(scenario, plant)
    strategy = make_strategy(base, scenario)
    result = simulate(scenario, strategy, info=info, plant=plant, progress=progress)
    result.strategy = name
    return result


def run_point(
    scenario: Scenario, strategy: str, overrides: dict[str, Any], options: RunOptions
) -> dict[str, Any]:
    """One sweep point (runs in a worker process): the metrics of ``strategy`` under ``overrides``.

    Names of :class:`RunOptions` fields (``forecast``, ``seed`` …) change the options; the others
    change the config (see ``sim.overrides``).
    """
    option_names = set(RunOptions.__dataclass_fields__)
    option_values = {k: v for k, v in overrides.items() if k in option_names}
    config_values = {k: v for k, v in overrides.items() if k not in option_names}
    config = apply_overrides(scenario.config, config_values)
    options = replace(options, **option_values)
    metrics: Metrics = compute_metrics(run_strategy(scenario.with_config(config), strategy, options))
    return {"overrides": overrides, "metrics": metrics.to_dict()}
