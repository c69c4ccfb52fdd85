"""Scenario files: exact formats, resampling, and every bad input named by file, row and column."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from sim.scenario import (
    Scenario,
    ScenarioError,
    Trip,
    load_scenario,
    load_series_csv,
    load_trips_csv,
    write_series_csv,
    write_trips_csv,
)
from tests.test_sim_support import START, STEP, tiny_config, tiny_series, tiny_trips

HEADER = "timestamp,import_price_eur_per_kwh,export_price_eur_per_kwh,load_kw,pv_kw"
ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rows(start: datetime, count: int, step: timedelta = STEP, value: str = "0.2,0.1,0.5,0.0") -> list[str]:
    return [f"{(start + i * step).strftime('%Y-%m-%dT%H:%M:%SZ')},{value}" for i in range(count)]


def test_series_round_trip(tmp_path: Path) -> None:
    series = tiny_series(1.0)
    path = tmp_path / "s.csv"
    write_series_csv(path, series)
    back = load_series_csv(path, STEP)
    assert back.start == series.start and back.steps == series.steps
    np.testing.assert_allclose(back.load_w, series.load_w, atol=0.5)
    np.testing.assert_allclose(back.import_price_per_kwh, series.import_price_per_kwh, atol=1e-5)


def test_trips_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_trips_csv(path, tiny_trips())
    assert load_trips_csv(path, tiny_config()) == tiny_trips()


def test_hourly_series_is_held_on_the_plan_grid(tmp_path: Path) -> None:
    lines = [HEADER, "2024-03-04T00:00:00Z,0.1,0.05,1.0,0", "2024-03-04T01:00:00+00:00,0.3,0.1,2.0,0.5"]
    series = load_series_csv(write(tmp_path / "h.csv", lines), STEP)
    assert series.steps == 8
    assert series.load_w.tolist() == [1000.0] * 4 + [2000.0] * 4
    assert series.pv_w[4] == 500.0


def test_five_minute_series_is_averaged_and_a_partial_step_dropped(tmp_path: Path) -> None:
    lines = [HEADER, *rows(START, 7, timedelta(minutes=5))]
    lines[2] = lines[2].replace(",0.5,", ",2.0,")
    series = load_series_csv(write(tmp_path / "f.csv", lines), STEP)
    assert series.steps == 2
    assert series.load_w[0] == pytest.approx(1000.0)
    assert series.load_w[1] == pytest.approx(500.0)


def test_offsets_are_converted_to_utc_and_columns_may_be_reordered(tmp_path: Path) -> None:
    lines = [
        "pv_kw,load_kw,timestamp,export_price_eur_per_kwh,import_price_eur_per_kwh",
        "0,1,2024-03-04T01:00:00+01:00,0.1,0.2",
        "0,1,2024-03-04T01:15:00+01:00,0.1,0.2",
    ]
    series = load_series_csv(write(tmp_path / "o.csv", lines), STEP)
    assert series.start == START
    assert series.import_price_per_kwh[0] == 0.2


SERIES_ERRORS = [
    ([], None, None, "is empty"),
    (
        ["time,import_price_eur_per_kwh,export_price_eur_per_kwh,load_kw,pv_kw"],
        0,
        None,
        "missing column(s) timestamp",
    ),
    ([HEADER + ",extra"], 0, None, "unknown column(s) extra"),
    ([HEADER, "2024-03-04T00:00:00Z,0.2,0.1,0.5"], 1, None, "has 4 fields"),
    (
        [HEADER, "yesterday,0.2,0.1,0.5,0", "2024-03-04T00:15:00Z,0.2,0.1,0.5,0"],
        1,
        "timestamp",
        "not an ISO 8601",
    ),
    (
        [HEADER, "2024-03-04T00:00:00,0.2,0.1,0.5,0", "2024-03-04T00:15:00Z,0.2,0.1,0.5,0"],
        1,
        "timestamp",
        "no UTC offset",
    ),
    ([HEADER, *rows(START, 1), "2024-03-04T00:15:00Z,0.2,0.1,abc,0"], 2, "load_kw", "'abc' is not a number"),
    (
        [HEADER, *rows(START, 1), "2024-03-04T00:15:00Z,nan,0.1,1,0"],
        2,
        "import_price_eur_per_kwh",
        "not a finite",
    ),
    ([HEADER, *rows(START, 1), "2024-03-04T00:15:00Z,0.2,0.1,-1,0"], 2, "load_kw", "below 0"),
    (
        [HEADER, *rows(START, 1), "2024-03-04T00:15:00Z,95,0.1,1,0"],
        2,
        "import_price_eur_per_kwh",
        "wrong unit",
    ),
    ([HEADER, *rows(START, 1), "2024-03-04T00:15:00Z,0.2,0.1,1,5000"], 2, "pv_kw", "wrong unit"),
    ([HEADER, *rows(START, 3, STEP), "2024-03-04T01:00:00Z,0.2,0.1,1,0"], 4, "timestamp", "is 0:30:00 after"),
    ([HEADER, *rows(START, 2, STEP), "2024-03-04T00:15:00Z,0.2,0.1,1,0"], 3, "timestamp", "is not after"),
    ([HEADER, *rows(START, 1)], None, None, "at least 2 are needed"),
    ([HEADER, *rows(START + timedelta(minutes=5), 3, STEP)], 1, "timestamp", "not on the 0:15:00 plan grid"),
    ([HEADER, *rows(START, 3, timedelta(minutes=7))], None, None, "not a multiple or a divisor"),
    ([HEADER, *rows(START, 2, timedelta(minutes=20))], None, None, "not a multiple or a divisor"),
]


@pytest.mark.parametrize(("lines", "row", "column", "message"), SERIES_ERRORS)
def test_bad_series_names_file_row_and_column(
    tmp_path: Path, lines: list[str], row: int | None, column: str | None, message: str
) -> None:
    path = write(tmp_path / "bad.csv", lines) if lines else tmp_path / "bad.csv"
    if not lines:
        path.write_text("", encoding="utf-8")
    with pytest.raises(ScenarioError) as caught:
        load_series_csv(path, STEP)
    error = caught.value
    assert error.source == str(path)
    assert message in error.message
    if row is not None:
        assert error.row == row and f"row {row}" in str(error)
    if column is not None:
        assert error.column == column and f"column {column}" in str(error)


def test_missing_and_binary_files_are_scenario_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_series_csv(tmp_path / "nope.csv", STEP)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_series_csv(binary, STEP)


TRIPS_HEADER = "vehicle,depart,arrive,energy_kwh"
TRIP_ERRORS = [
    (["vehicle,depart,arrive"], 0, None, "missing column(s) energy_kwh"),
    (
        [TRIPS_HEADER, "bus,2024-03-04T07:00:00Z,2024-03-04T08:00:00Z,3"],
        1,
        "vehicle",
        "unknown vehicle 'bus'; known: car",
    ),
    ([TRIPS_HEADER, "car,2024-03-04T07:00:00Z,2024-03-04T06:00:00Z,3"], 1, "arrive", "not after it departs"),
    ([TRIPS_HEADER, "car,2024-03-04T07:00:00Z,2024-03-04T08:00:00Z,-1"], 1, "energy_kwh", "below 0"),
    ([TRIPS_HEADER, "car,2024-03-04T07:00:00Z,2024-03-04T08:00:00Z,41"], 1, "energy_kwh", "above 40"),
    ([TRIPS_HEADER, "car,2024-03-04 07:00,2024-03-04T08:00:00Z,1"], 1, "depart", "no UTC offset"),
    (
        [
            TRIPS_HEADER,
            "car,2024-03-04T07:00:00Z,2024-03-04T12:00:00Z,3",
            "car,2024-03-04T11:00:00Z,2024-03-04T13:00:00Z,3",
        ],
        2,
        "depart",
        "before the trip in row 1",
    ),
]


@pytest.mark.parametrize(("lines", "row", "column", "message"), TRIP_ERRORS)
def test_bad_trips_name_file_row_and_column(
    tmp_path: Path, lines: list[str], row: int, column: str | None, message: str
) -> None:
    path = write(tmp_path / "trips.csv", lines)
    with pytest.raises(ScenarioError) as caught:
        load_trips_csv(path, tiny_config())
    assert caught.value.row == row and caught.value.column == column
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_header_only_trips_file_means_no_trips(tmp_path: Path) -> None:
    assert load_trips_csv(write(tmp_path / "t.csv", [TRIPS_HEADER]), tiny_config()) == ()


def test_scheduled_trips_snap_to_steps_and_take_the_weekday_target() -> None:
    config = tiny_config()
    depart = START + timedelta(hours=7, minutes=8)  # Monday, rounds to 07:15
    wednesday = START + timedelta(days=2, hours=7)  # no rule on Wednesday: default target
    trips = (
        Trip("car", depart, depart + timedelta(minutes=3), 2.0),
        Trip("car", wednesday, wednesday + timedelta(hours=2), 2.0),
    )
    scenario = Scenario(config, tiny_series(3), trips)
    first, second = scenario.scheduled_trips
    assert (first.depart_index, first.arrive_index) == (29, 30)  # at least one step away
    assert first.target_soc_percent == 70
    assert second.target_soc_percent == config.vehicles[0].default_target_soc_percent


def test_load_scenario_reads_the_shipped_example() -> None:
    examples = ROOT / "sim" / "examples"
    scenario = load_scenario(examples / "home.yaml", examples / "series.csv", examples / "trips.csv")
    assert scenario.steps == 21 * 96
    assert scenario.series.start == datetime(2023, 5, 1, tzinfo=UTC)
    assert len(scenario.scheduled_trips) == len(scenario.trips) > 10
    assert scenario.name.startswith("example-home 2023-05-01")
