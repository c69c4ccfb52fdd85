"""The daemon's install and image stay slim and reproducible (no live Docker needed)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Never loaded by the daemon: plots and sweeps (the sim extra), cvxpy's default solvers.
NOT_AT_RUNTIME = {"matplotlib", "dask", "scs", "osqp", "cvxpy", "pandas"}


def requirement_name(spec: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", spec)
    assert match is not None, spec
    return match.group(0).lower().replace("_", "-")


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pinned() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt pins exact versions: {line!r}"
            pins[requirement_name(name)] = version
    return pins


def test_runtime_dependencies_leave_out_what_the_daemon_never_loads() -> None:
    names = {requirement_name(spec) for spec in pyproject()["project"]["dependencies"]}
    assert names.isdisjoint(NOT_AT_RUNTIME), names & NOT_AT_RUNTIME
    assert "cvxpy-base" in names and "highspy" in names


def test_constraints_pin_every_runtime_dependency_and_nothing_of_the_sim_extra() -> None:
    pins = pinned()
    for spec in pyproject()["project"]["dependencies"]:
        assert requirement_name(spec) in pins, f"{spec} is not pinned in constraints.txt"
    assert set(pins).isdisjoint(NOT_AT_RUNTIME), set(pins) & NOT_AT_RUNTIME


def test_the_image_builds_on_an_exact_base_tag_with_the_constraints() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base.group(1)), base.group(1)
    assert "--constraint constraints.txt ." in dockerfile


def test_the_build_context_leaves_out_venvs_history_and_tests() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "**/node_modules", "tests", "benchmarks", "**/*.sqlite"} <= ignored
