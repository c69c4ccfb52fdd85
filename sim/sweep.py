"""Parameter sweeps: every combination of a grid, run on a local process pool or a Dask cluster."""

from __future__ import annotations

import importlib
import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from typing import Any

from controller.config import ConfigError, ConfigIssue
from sim.information import FORECAST_MODELS, TRIP_INFO
from sim.overrides import apply_overrides, parse_value
from sim.runner import RunOptions, run_point
from sim.scenario import Scenario

__all__ = ["expand_grid", "parse_grid", "run_sweep", "validate_points"]

FORECASTS = FORECAST_MODELS
PointDone = Callable[[int, int, dict[str, Any]], None]


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """``["horizon_hours=24,36", "reserve_percent=20,30"]`` -> ``{name: [values]}``."""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip()
        if not sep or not name or not values.strip():
            raise ConfigError(
                "--param", [ConfigIssue(spec, "is not NAME=V1,V2,...", "write e.g. horizon_hours=24,36")]
            )
        if name in grid:
            raise ConfigError("--param", [ConfigIssue(name, "is given twice", "list all its values once")])
        grid[name] = [parse_value(v) for v in values.split(",") if v.strip()]
    return grid


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(grid[n] for n in names))]


def validate_points(scenario: Scenario, points: Sequence[Mapping[str, Any]], options: RunOptions) -> None:
    """Fail before any work starts: every point's config and options must be valid."""
    option_names = set(RunOptions.__dataclass_fields__)
    for point in points:
        config_values = {k: v for k, v in point.items() if k not in option_names}
        apply_overrides(scenario.config, config_values)
        option_values = {k: v for k, v in point.items() if k in option_names}
        checked = replace(options, **option_values)
        for name in ("forecast", "load_forecast", "pv_forecast"):
            model = getattr(checked, name)
            if model is not None and model not in FORECASTS:
                raise ConfigError(
                    "--param",
                    [ConfigIssue(name, f"unknown model {model!r}", f"use one of {', '.join(FORECASTS)}")],
                )
        if checked.prices not in ("day-ahead", "all"):
            raise ConfigError(
                "--param", [ConfigIssue("prices", f"{checked.prices!r}", "use day-ahead or all")]
            )
        if checked.trip_info not in TRIP_INFO:
            raise ConfigError(
                "--param",
                [ConfigIssue("trip_info", f"{checked.trip_info!r}", f"use one of {', '.join(TRIP_INFO)}")],
            )
        if checked.trip_energy not in ("estimate", "actual"):
            raise ConfigError(
                "--param", [ConfigIssue("trip_energy", f"{checked.trip_energy!r}", "use estimate or actual")]
            )
        if checked.trip_energy == "actual" and checked.trip_info != "calendar":
            raise ConfigError(
                "--param",
                [ConfigIssue("trip_energy", "'actual' needs trip_info calendar", "add trip_info=calendar")],
            )


def _local(
    scenario: Scenario, strategy: str, points: Sequence[dict[str, Any]], options: RunOptions, workers: int
) -> Iterator[tuple[int, dict[str, Any]]]:
    # spawn: workers start clean (no forked solver or thread state)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_point, scenario, strategy, p, options): i for i, p in enumerate(points)}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _dask(
    scenario: Scenario,
    strategy: str,
    points: Sequence[dict[str, Any]],
    options: RunOptions,
    address: str,
    timeout_s: float,
) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        # An untyped optional dependency: used through Any.
        distributed: Any = importlib.import_module("distributed")
    except ImportError:
        raise RuntimeError(
            "--dask needs Dask, which is not installed: pip install 'v2x-controller[sim]'"
        ) from None
    try:
        client = distributed.Client(address, timeout=f"{timeout_s}s")
    except (OSError, ValueError, TypeError) as exc:
        raise RuntimeError(f"--dask {address}: cannot reach the scheduler: {exc}") from None
    try:
        shared = client.scatter(scenario, broadcast=True)
        futures = [
            client.submit(
                run_point, shared, strategy, p, options, key=f"sim-point-{i}-{os.getpid()}", pure=False
            )
            for i, p in enumerate(points)
        ]
        index = {f.key: i for i, f in enumerate(futures)}
        for future in distributed.as_completed(futures):
            yield index[future.key], future.result()
    finally:
        client.close()


def run_sweep(
    scenario: Scenario,
    strategy: str,
    points: Sequence[dict[str, Any]],
    options: RunOptions | None = None,
    workers: int | None = None,
    dask_address: str | None = None,
    on_done: PointDone | None = None,
    dask_timeout_s: float = 10.0,
) -> list[dict[str, Any]]:
    """Run every point; results in the order of ``points``."""
    options = options or RunOptions()
    validate_points(scenario, points, options)
    if dask_address:
        stream = _dask(scenario, strategy, points, options, dask_address, dask_timeout_s)
    else:
        count = workers or os.cpu_count() or 1
        stream = _local(scenario, strategy, points, options, max(1, min(count, len(points))))
    results: list[dict[str, Any] | None] = [None] * len(points)
    for done, (i, result) in enumerate(stream, start=1):
        results[i] = result
        if on_done is not None:
            on_done(done, len(points), result)
    return [r for r in results if r is not None]
