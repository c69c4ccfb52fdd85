"""Changed copies of a site config, for sweeps and "what if" runs; always re-validated.

Names: a few aliases that apply to every vehicle, or a dotted path into the config where ``*``
stands for every item of a list::

    degradation_cost_per_kwh=0.02      -> vehicles.*.degradation_cost_per_kwh
    reserve_percent=30                 -> vehicles.*.reserve = {percent: 30}
    horizon_hours=36                   -> site.horizon_hours
    replan_interval_minutes=15         -> site.replan_interval_minutes
    vehicles.0.max_soc_percent=95      (any dotted path)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from controller.config import ConfigError, ConfigIssue, SiteConfig, issues_from_validation_error

__all__ = ["ALIASES", "apply_overrides", "no_discharge", "parse_value"]

ALIASES: dict[str, str] = {
    "degradation_cost_per_kwh": "vehicles.*.degradation_cost_per_kwh",
    "reserve_percent": "vehicles.*.reserve",
    "max_soc_percent": "vehicles.*.max_soc_percent",
    "horizon_hours": "site.horizon_hours",
    "replan_interval_minutes": "site.replan_interval_minutes",
    "import_limit_kw": "site.grid.import_limit_kw",
    "export_limit_kw": "site.grid.export_limit_kw",
}


def parse_value(text: str) -> Any:
    """A sweep value: int, float, true/false, or the text itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text.strip()


def _assign(node: Any, parts: list[str], value: Any, path: str) -> None:
    head, rest = parts[0], parts[1:]
    if isinstance(node, list):
        targets = range(len(node)) if head == "*" else [_index(head, len(node), path)]
        for i in targets:
            if rest:
                _assign(node[i], rest, value, path)
            else:
                node[i] = value
        return
    if not isinstance(node, dict):
        raise ConfigError("overrides", [ConfigIssue(path, "does not lead into the config", "check the path")])
    if rest:
        if head not in node or node[head] is None:
            node[head] = {}
        _assign(node[head], rest, value, path)
    else:
        node[head] = value


def _index(text: str, length: int, path: str) -> int:
    try:
        index = int(text)
    except ValueError:
        raise ConfigError(
            "overrides", [ConfigIssue(path, f"{text!r} is not a list index", "use a number or *")]
        ) from None
    if not 0 <= index < length:
        raise ConfigError(
            "overrides", [ConfigIssue(path, f"index {index} is out of range", f"use 0-{length - 1}")]
        )
    return index


def apply_overrides(config: SiteConfig, overrides: Mapping[str, Any]) -> SiteConfig:
    """A validated copy of ``config`` with ``overrides`` applied; raises ``ConfigError``."""
    if not overrides:
        return config
    data = config.model_dump(by_alias=True, exclude_unset=False)
    for name, value in overrides.items():
        path = ALIASES.get(name, name)
        if path == "vehicles.*.reserve":
            value = {"percent": value}
        _assign(data, path.split("."), value, name)
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("overrides", issues_from_validation_error(exc)) from None


def no_discharge(config: SiteConfig) -> SiteConfig:
    """The same site with V2G and V2H forbidden for every car (V2L stays as configured)."""
    return apply_overrides(config, {"vehicles.*.permissions.v2g": False, "vehicles.*.permissions.v2h": False})
