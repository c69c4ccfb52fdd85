"""``benchmarks/bench_sim.py`` runs on the public data or says it cannot: no silent synthetic year."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import bench_sim


def test_missing_public_data_is_an_error_not_a_synthetic_year(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = bench_sim.main(["--data-dir", str(tmp_path), "--days", "1", "--repeat", "0"])
    assert status == 2
    err = capsys.readouterr().err
    assert "no public data" in err and str(tmp_path) in err and "--synthetic" in err


def test_synthetic_runs_only_when_asked(tmp_path: Path) -> None:
    with pytest.raises(bench_sim.MissingDataError):
        bench_sim.scenario_for(1, tmp_path)
    scenario = bench_sim.scenario_for(1, tmp_path, synthetic=True)
    assert scenario.steps == 96


def test_the_split_adds_up_to_the_wall_time() -> None:
    split = dict(bench_sim.time_split(10.0, 3.0, 5.0))
    assert list(split.values()) == [3.0, 2.0, 5.0]
    assert sum(split.values()) == 10.0
