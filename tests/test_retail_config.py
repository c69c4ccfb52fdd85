"""Broken ``tariff.*.retail`` sections: each problem named by its path, with a fix."""

from __future__ import annotations

from typing import Any

import pytest

from controller.config import ConfigError, parse_config
from controller.signals import RETAIL_PRESETS
from tests.test_config import broken


def with_retail(retail: Any) -> Any:
    def mutate(data: Any) -> None:
        data["tariff"]["import"]["retail"] = retail

    return mutate


def issues_of(retail: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(broken(with_retail(retail)), env={})
    assert all(issue.fix for issue in info.value.issues)
    return [f"{issue} | {issue.fix}" for issue in info.value.issues]


def test_a_retail_section_loads() -> None:
    retail = {
        "preset": "de-2026",
        "grid_fee_per_kwh": 0.08,
        "grid_fee_windows": [{"start": "22:00", "end": "24:00", "fee_per_kwh": 0.02, "months": [1, 2, 3]}],
        "fixed_per_month": 12.5,
    }
    cfg = parse_config(broken(with_retail(retail)), env={})
    assert cfg.tariff.import_.retail is not None and cfg.tariff.import_.retail.preset == "DE-2026"


def test_unknown_preset_names_the_path_and_the_known_presets() -> None:
    rendered = issues_of({"preset": "FR-2026"})
    assert len(rendered) == 1
    assert rendered[0].startswith("tariff.import.retail.preset: 'FR-2026' is not a known preset")
    assert all(name in rendered[0] for name in RETAIL_PRESETS)


@pytest.mark.parametrize(
    ("retail", "path", "text"),
    [
        ({"energy_tax_per_kwh": 0.1}, "tariff.import.retail", "no preset and no vat_percent"),
        ({"preset": "NL-2026", "vat_percent": 121}, "tariff.import.retail.vat_percent", "121"),
        (
            {"preset": "NL-2026", "grid_fee_windows": [{"start": "7", "end": "9:00", "fee_per_kwh": 0.1}]},
            "tariff.import.retail.grid_fee_windows[0].start",
            "",
        ),
        (
            {
                "preset": "NL-2026",
                "grid_fee_windows": [{"start": "7:00", "end": "9:00", "fee_per_kwh": 0.1, "months": [0]}],
            },
            "tariff.import.retail.grid_fee_windows[0].months",
            "0 is not a month",
        ),
        ({"preset": "NL-2026", "fixed_per_month": -5}, "tariff.import.retail.fixed_per_month", "-5"),
    ],
)
def test_broken_retail_sections(retail: dict[str, Any], path: str, text: str) -> None:
    rendered = issues_of(retail)
    assert any(r.startswith(path + ":") and text in r for r in rendered), rendered


def test_a_preset_in_another_currency_than_the_site_is_refused_with_the_fix() -> None:
    tree = {
        "site": {"currency": "EUR", "grid": {"import_limit_kw": 17}},
        "tariff": {"import": {"dynamic_topic": "p/import", "retail": {"preset": "DK-2026"}}},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(tree, env={})
    text = str(caught.value)
    assert "tariff.import.retail.preset" in text and "DK-2026 is in DKK but site.currency is EUR" in text
    assert "write energy_tax_per_kwh in EUR" in text
    tree["site"]["currency"] = "DKK"  # type: ignore[index]
    assert parse_config(tree, env={}).tariff.import_.retail is not None
