"""The retail price formula: presets, overrides, time-of-use grid fees and the formula on the plan grid."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from controller.config import PriceConfig
from controller.config.retail import RetailConfig
from controller.signals import (
    RETAIL_PRESETS,
    Timeline,
    fixed_per_day,
    grid_fee_on_grid,
    prices_on_grid,
    retail_price_at,
    retail_rates,
    retail_table,
)
from tests.test_signals import T0, H, Q, timeline_of

DOCS = Path(__file__).resolve().parent.parent / "docs" / "tariffs.md"
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def cfg_with(retail: dict[str, Any] | None, **price: Any) -> PriceConfig:
    return PriceConfig.model_validate({"dynamic_topic": "p", "retail": retail, **price})


def local(text: str, tz: zoneinfo.ZoneInfo = BERLIN) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz)


# ------------------------------------------------------------ published worked examples


def test_dutch_dynamic_hourly_price_as_published() -> None:
    # https://jeroen.nl/dynamische-energie/prijsopbouw, "Voorbeeld voor 20 augustus 2023", 08:00-09:00:
    # inkoop 12 ct + energiebelasting 12.599 ct + Tibber's opslag 1.8 ct = 26.399 ct excl. btw;
    # with 21 % btw 31.94279 ct per kWh. (No grid fee per kWh: Dutch network fees are per connection.)
    cfg = cfg_with({"preset": "NL-2023", "supplier_markup_per_kwh": 0.018})
    at = local("2023-08-20T08:00", zoneinfo.ZoneInfo("Europe/Amsterdam"))
    assert retail_price_at(cfg, 0.12, at, "Europe/Amsterdam") == pytest.approx(0.3194279, abs=1e-9)


def test_german_dynamic_tariff_example_as_published() -> None:
    # https://stadtwerke-hamm.de/tr/privatkunden/energie/strom/haushaltsstrom/hammerstromdynamik,
    # "Beispielrechnung dynamischer Strompreis" (2025 levies): Dienstleistungsentgelt 2.2 ct,
    # Netznutzungsentgelt 6.76 ct, Konzessionsabgabe 1.99 ct, Stromsteuer 2.050 ct, Offshore-Netzumlage
    # 0.816 ct, KWKG-Umlage 0.277 ct, StromNEV-Umlage 1.558 ct: 15.651 ct net + Börsenpreis, 18.62 ct
    # gross (19 % USt.) + Börsenpreis gross. The preset DE-2025 holds the tax and the three levies; the
    # network fee and the municipality's Konzessionsabgabe are the grid fee.
    cfg = cfg_with(
        {"preset": "DE-2025", "supplier_markup_per_kwh": 0.022, "grid_fee_per_kwh": 0.0676 + 0.0199}
    )
    at = local("2025-06-01T12:00")
    assert retail_price_at(cfg, 0.0, at, "Europe/Berlin") == pytest.approx(0.1862, abs=5e-5)
    assert retail_price_at(cfg, 0.0, at, "Europe/Berlin") / 1.19 == pytest.approx(0.15651, abs=1e-9)
    spot = 0.0873
    assert retail_price_at(cfg, spot, at, "Europe/Berlin") == pytest.approx((0.15651 + spot) * 1.19)


def test_belgian_price_by_hand() -> None:
    # No published all-in example of a Belgian dynamic contract was found (docs/tariffs.md says so):
    # the formula by hand, with the federal excise of the preset and 6 % VAT.
    cfg = cfg_with({"preset": "BE-2025", "supplier_markup_per_kwh": 0.01, "grid_fee_per_kwh": 0.09})
    at = local("2025-02-03T19:00", zoneinfo.ZoneInfo("Europe/Brussels"))
    expected = (0.08 + 0.01 + 0.04748 + 0.09) * 1.06
    assert retail_price_at(cfg, 0.08, at, "Europe/Brussels") == pytest.approx(expected, abs=1e-12)


def test_multiplier_and_markup_come_before_the_retail_formula() -> None:
    cfg = cfg_with(
        {"energy_tax_per_kwh": 0.1, "vat_percent": 10, "supplier_markup_per_kwh": 0.02},
        dynamic_multiplier=1.5,
        dynamic_markup_per_kwh=0.03,
    )
    at = local("2025-06-01T12:00")
    assert retail_price_at(cfg, 0.2, at, "Europe/Berlin") == pytest.approx((0.3 + 0.03 + 0.02 + 0.1) * 1.1)


# ---------------------------------------------------------------------------- presets


@pytest.mark.parametrize(
    ("name", "tax", "vat", "currency"),
    [
        ("NL-2025", 0.10154, 21, "EUR"),
        ("NL-2026", 0.09160, 21, "EUR"),
        ("DE-2026", 0.0205 + 0.00941 + 0.00446 + 0.01559, 19, "EUR"),
        ("BE-2026", 0.04748, 6, "EUR"),
        ("DK-2025", 0.720, 25, "DKK"),
        ("DK-2026", 0.008, 25, "DKK"),  # cut to the EU minimum for 2026 and 2027
        ("SE-2026", 0.360, 25, "SEK"),
        ("AT-2025", 0.015, 20, "EUR"),
        ("AT-2026", 0.001, 20, "EUR"),
    ],
)
def test_presets_by_name(name: str, tax: float, vat: float, currency: str) -> None:
    rates = retail_rates(RetailConfig(preset=name))
    assert rates.energy_tax_per_kwh == pytest.approx(tax, abs=1e-12)
    assert rates.vat_percent == vat
    assert rates.currency == currency


def test_preset_names_are_case_insensitive() -> None:
    assert RetailConfig(preset="nl-2026").preset == "NL-2026"


def test_every_preset_is_dated_and_documented_with_a_source() -> None:
    text = DOCS.read_text()
    for name, preset in RETAIL_PRESETS.items():
        assert re.fullmatch(r"(NL|DE|BE|DK|SE|AT)-20\d\d", name)
        assert preset.valid_from.year == int(name[3:]) and preset.valid_until > preset.valid_from
        assert 0 <= preset.energy_tax_per_kwh < 1 and 0 < preset.vat_percent < 30
        assert f"`{name}`" in text, f"{name} is not in docs/tariffs.md"


def test_a_written_value_overrides_the_preset() -> None:
    rates = retail_rates(RetailConfig(preset="NL-2025", vat_percent=9))
    assert (rates.vat_percent, rates.energy_tax_per_kwh) == (9, 0.10154)
    rates = retail_rates(RetailConfig(preset="SE-2026", energy_tax_per_kwh=0.264))  # e.g. a northern rate
    assert (rates.vat_percent, rates.energy_tax_per_kwh) == (25, 0.264)
    assert retail_rates(RetailConfig(preset="DK-2026", energy_tax_per_kwh=0.0)).energy_tax_per_kwh == 0.0


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(ValidationError) as info:
        RetailConfig(preset="NL-1999")
    message = str(info.value)
    assert "'NL-1999' is not a known preset" in message
    assert all(name in message for name in RETAIL_PRESETS)


def test_without_a_preset_both_taxes_must_be_written() -> None:
    with pytest.raises(ValidationError, match="no energy_tax_per_kwh and vat_percent"):
        RetailConfig()
    with pytest.raises(ValidationError, match="no vat_percent"):
        RetailConfig(energy_tax_per_kwh=0.1)
    assert retail_rates(RetailConfig(energy_tax_per_kwh=0, vat_percent=0)).currency is None


# --------------------------------------------------------------- time-of-use grid fees

# §14a EnWG module 3 as a network operator publishes it: NT at night, HT in the evening peak, ST else.
MODULE_3 = {
    "preset": "DE-2026",
    "grid_fee_per_kwh": 0.08,
    "grid_fee_windows": [
        {"start": "00:00", "end": "06:00", "fee_per_kwh": 0.02},
        {"start": "17:00", "end": "21:00", "fee_per_kwh": 0.12},
    ],
}


def test_grid_fee_windows_on_a_quarter_hour_grid() -> None:
    rates = retail_rates(RetailConfig.model_validate(MODULE_3))
    start = local("2026-01-12T05:30").astimezone(dt.UTC)
    fees = grid_fee_on_grid(rates, BERLIN, start, Q, 4)
    assert fees.tolist() == pytest.approx([0.02, 0.02, 0.08, 0.08])


def test_grid_fee_is_the_mean_over_a_step_that_straddles_a_window_edge() -> None:
    rates = retail_rates(RetailConfig.model_validate(MODULE_3))
    start = local("2026-01-12T16:30").astimezone(dt.UTC)
    fees = grid_fee_on_grid(rates, BERLIN, start, H, 2)
    assert fees.tolist() == pytest.approx([(0.08 + 0.12) / 2, 0.12])


def test_window_past_midnight_belongs_to_the_day_it_opened() -> None:
    cfg = RetailConfig.model_validate(
        {
            "energy_tax_per_kwh": 0,
            "vat_percent": 0,
            "grid_fee_per_kwh": 0.1,
            "grid_fee_windows": [{"start": "22:00", "end": "06:00", "fee_per_kwh": 0.01, "days": ["Friday"]}],
        }
    )
    rates = retail_rates(cfg)
    friday = local("2026-01-16T00:00").astimezone(dt.UTC)  # a Friday
    fees = grid_fee_on_grid(rates, BERLIN, friday, H, 48)
    assert fees[:6].tolist() == pytest.approx([0.1] * 6)  # Friday early morning: Thursday's night
    assert fees[22:30].tolist() == pytest.approx([0.01] * 8)  # Friday 22:00 to Saturday 06:00
    assert fees[30] == pytest.approx(0.1)


def test_window_up_to_24_00_and_months() -> None:
    cfg = RetailConfig.model_validate(
        {
            "energy_tax_per_kwh": 0,
            "vat_percent": 0,
            "grid_fee_per_kwh": 0.1,
            "grid_fee_windows": [
                {"start": "20:00", "end": "24:00", "fee_per_kwh": 0.3, "months": [12, 1, 2, 3]},
                {"start": "23:00", "end": "02:00", "fee_per_kwh": 0.05, "months": [3]},
            ],
        }
    )
    assert cfg.grid_fee_windows[0].end == dt.time(0, 0) and cfg.grid_fee_windows[0].months == [1, 2, 3, 12]
    rates = retail_rates(cfg)
    march_31 = local("2026-03-31T20:00").astimezone(dt.UTC)
    fees = grid_fee_on_grid(rates, BERLIN, march_31, H, 7)
    # 20-24: the first window (it wins over the second at 23:00); April 1st 00-02: March's window still.
    assert fees.tolist() == pytest.approx([0.3, 0.3, 0.3, 0.3, 0.05, 0.05, 0.1])
    april = local("2026-04-01T20:00").astimezone(dt.UTC)
    assert grid_fee_on_grid(rates, BERLIN, april, H, 4).tolist() == pytest.approx([0.1] * 4)


@pytest.mark.parametrize(
    ("day", "hours", "night_hours"),
    [("2026-03-29", 23, 5), ("2026-10-25", 25, 7), ("2026-01-12", 24, 6)],
    ids=["spring-forward", "fall-back", "ordinary"],
)
def test_grid_fee_windows_follow_local_time_on_dst_days(day: str, hours: int, night_hours: int) -> None:
    rates = retail_rates(RetailConfig.model_validate(MODULE_3))
    start = local(f"{day}T00:00").astimezone(dt.UTC)
    end = (local(f"{day}T00:00") + dt.timedelta(days=1)).astimezone(dt.UTC)
    assert (end - start) / H == hours
    fees = grid_fee_on_grid(rates, BERLIN, start, H, hours)
    assert fees[:night_hours].tolist() == pytest.approx([0.02] * night_hours)  # 00:00-06:00 local
    assert fees[night_hours] == pytest.approx(0.08)
    peak = np.flatnonzero(np.isclose(fees, 0.12))
    assert peak.tolist() == list(range(hours - 7, hours - 3))  # 17:00-21:00 local


@pytest.mark.parametrize(
    ("window", "text"),
    [
        ({"start": "25:00", "end": "06:00"}, "time of day"),
        ({"start": "22:00", "end": "06:00", "months": [13]}, "13 is not a month"),
        ({"start": "22:00", "end": "06:00", "months": []}, "at least 1"),
        ({"start": "22:00", "end": "06:00", "days": ["someday"]}, "not a weekday"),
    ],
)
def test_broken_grid_fee_windows(window: dict[str, Any], text: str) -> None:
    retail = {"preset": "DE-2026", "grid_fee_windows": [{"fee_per_kwh": 0.1, **window}]}
    with pytest.raises(ValidationError, match=text):
        RetailConfig.model_validate(retail)


# ------------------------------------------------------------------ on the plan grid


def test_retail_applies_to_dynamic_prices_on_the_grid() -> None:
    cfg = cfg_with(MODULE_3, dynamic_multiplier=1.0)
    start = local("2026-01-12T16:00").astimezone(dt.UTC)
    tl = timeline_of([0.10, 0.20, 0.05], start=start)
    grid = prices_on_grid(cfg, cfg, tl, Timeline(), "Europe/Berlin", start, Q, 12)
    tax = RETAIL_PRESETS["DE-2026"].energy_tax_per_kwh
    expected = (
        [(0.10 + tax + 0.08) * 1.19] * 4 + [(0.20 + tax + 0.12) * 1.19] * 4 + [(0.05 + tax + 0.12) * 1.19] * 4
    )
    assert grid.import_per_kwh.tolist() == pytest.approx(expected)
    assert grid.import_known.all()


def test_filled_steps_pay_the_grid_fee_of_their_own_time() -> None:
    cfg = cfg_with(MODULE_3)
    day_start = local("2026-01-12T00:00").astimezone(dt.UTC)
    tl = timeline_of([0.10] * 24, start=day_start)  # one day of prices, none for the next
    grid = prices_on_grid(cfg, cfg, tl, tl, "Europe/Berlin", day_start + 24 * H, H, 24)
    assert not grid.import_known.any()
    tax = RETAIL_PRESETS["DE-2026"].energy_tax_per_kwh
    assert grid.import_per_kwh[3] == pytest.approx((0.10 + tax + 0.02) * 1.19)  # 03:00, NT
    assert grid.import_per_kwh[18] == pytest.approx((0.10 + tax + 0.12) * 1.19)  # 18:00, HT
    assert grid.import_per_kwh[12] == pytest.approx((0.10 + tax + 0.08) * 1.19)  # noon, ST


def test_configured_prices_that_fill_gaps_are_already_retail() -> None:
    cfg = cfg_with({"preset": "NL-2026"}, static_price_per_kwh=0.30)
    grid = prices_on_grid(cfg, cfg, timeline_of([0.1]), Timeline(), "UTC", T0, H, 2)
    assert grid.import_per_kwh.tolist() == pytest.approx([(0.1 + 0.0916) * 1.21, 0.30])
    assert grid.export_per_kwh.tolist() == pytest.approx([0.30, 0.30])
    with pytest.raises(ValueError, match="retail applies to market prices only"):
        PriceConfig.model_validate({"static_price_per_kwh": 0.30, "retail": {"preset": "NL-2026"}})


def test_the_documented_example_config_is_valid() -> None:
    text = DOCS.read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block is not None
    price = PriceConfig.model_validate(yaml.safe_load(block[1])["tariff"]["import"])
    assert price.retail is not None and len(price.retail.grid_fee_windows) == 2
    assert retail_rates(price.retail).energy_tax_per_kwh == RETAIL_PRESETS["DE-2026"].energy_tax_per_kwh


def test_nothing_changes_without_retail() -> None:
    plain = cfg_with(None, dynamic_multiplier=1.21, dynamic_markup_per_kwh=0.15)
    zero = cfg_with(
        {"energy_tax_per_kwh": 0, "vat_percent": 0}, dynamic_multiplier=1.21, dynamic_markup_per_kwh=0.15
    )
    day = [h / 100 for h in range(24)]
    tl = timeline_of([*day, 0.5])
    grids = [prices_on_grid(c, c, tl, tl, "Europe/Berlin", T0 + 20 * H, Q, 40) for c in (plain, zero)]
    assert grids[0].import_per_kwh.tolist() == pytest.approx(grids[1].import_per_kwh.tolist())
    assert grids[0].import_per_kwh[0] == pytest.approx(0.20 * 1.21 + 0.15)
    assert grids[0].import_known.tolist() == grids[1].import_known.tolist()
    with_retail = cfg_with({"preset": "AT-2025"}, dynamic_multiplier=1.21, dynamic_markup_per_kwh=0.15)
    taxed = prices_on_grid(with_retail, with_retail, tl, tl, "Europe/Berlin", T0 + 20 * H, Q, 40)
    assert taxed.import_per_kwh.tolist() == pytest.approx(((grids[0].import_per_kwh + 0.015) * 1.2).tolist())
    at = local("2025-01-15T12:00")
    assert retail_price_at(plain, 0.2, at, "Europe/Berlin") == pytest.approx(0.2 * 1.21 + 0.15)


def test_market_to_retail_table_per_slot() -> None:
    cfg = cfg_with(MODULE_3)
    slots = [(local("2026-01-12T03:00"), 0.05), (local("2026-01-12T18:00"), 0.30)]
    rows = retail_table(cfg, slots, "Europe/Berlin")
    tax = RETAIL_PRESETS["DE-2026"].energy_tax_per_kwh
    assert [(r[0], r[1]) for r in rows] == slots
    assert [r[2] for r in rows] == pytest.approx([(0.05 + tax + 0.02) * 1.19, (0.30 + tax + 0.12) * 1.19])
    with pytest.raises(ValueError, match="UTC offset"):
        retail_price_at(cfg, 0.1, dt.datetime(2026, 1, 12), "Europe/Berlin")


def test_standing_charge_per_day_of_the_month() -> None:
    cfg = RetailConfig(preset="NL-2026", fixed_per_month=30.0)
    assert fixed_per_day(cfg, dt.date(2026, 2, 10)) == pytest.approx(30 / 28)
    assert fixed_per_day(cfg, dt.date(2024, 2, 10)) == pytest.approx(30 / 29)
    assert fixed_per_day(cfg, dt.date(2026, 1, 31)) == pytest.approx(30 / 31)
    assert sum(fixed_per_day(cfg, dt.date(2026, 4, d)) for d in range(1, 31)) == pytest.approx(30.0)
