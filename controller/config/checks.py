"""Cross-field checks: problems no single field shows (unknown ids, targets below the reserve,
overlapping price windows, clashing ports), each with the path it is about and a fix."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from controller.config.errors import ConfigIssue, Loc, _loc_to_path
from controller.config.fields import WEEKDAYS, _num, is_loopback
from controller.config.retail_presets import RETAIL_PRESETS
from controller.config.sources import EnergiDataServiceSource, NordPoolSource
from controller.domain import MeterRole

if TYPE_CHECKING:
    from controller.config.inputs import TimeOfUseWindow
    from controller.config.models import SiteConfig
    from controller.config.sources import PriceSource

_PARTIAL = "partial"
"""Validation context key: skip SiteConfig's cross-field validator (parse_config runs it itself)."""


def _overlaps(first: Loc, second: Loc) -> bool:
    """Does one location contain the other (``"*"`` matching any index)?"""
    return all(a == b or "*" in (a, b) for a, b in zip(first, second, strict=False))


@dataclass
class _Checks:
    """Collects cross-field problems. On a config with field errors the checks run on a repaired copy
    (bad values dropped for their defaults, bad list items dropped): ``where`` maps a location in the
    copy to the one the user wrote, and a problem that reads a ``repaired`` value is not reported,
    since it would be about a value the user did not write."""

    where: Callable[[Loc], Loc] = lambda loc: loc
    repaired: tuple[Loc, ...] = ()
    issues: list[ConfigIssue] = field(default_factory=list)

    def add(self, loc: Loc, message: str, fix: str, *, uses: Iterable[Loc] = ()) -> None:
        read = [self.where(loc), *(self.where(u) for u in uses)]
        if any(_overlaps(r, bad) for r in read for bad in self.repaired):
            return
        self.issues.append(ConfigIssue(_loc_to_path(read[0]), message, fix))


def _cross_field_issues(cfg: SiteConfig, checks: _Checks | None = None) -> list[ConfigIssue]:
    checks = checks if checks is not None else _Checks()
    _check_ids(cfg, checks)
    _check_vehicles(cfg, checks)
    _check_chargers(cfg, checks)
    _check_meters(cfg, checks)
    _check_home_batteries(cfg, checks)
    _check_tariff(cfg, checks)
    _check_price_sources(cfg, checks)
    _check_retail_currency(cfg, checks)
    _check_connections(cfg, checks)
    return checks.issues


def _check_ids(cfg: SiteConfig, checks: _Checks) -> None:
    id_lists = {
        "chargers": [c.id for c in cfg.chargers],
        "vehicles": [v.id for v in cfg.vehicles],
        "meters": [m.id for m in cfg.meters],
        "home_batteries": [b.id for b in cfg.home_batteries],
    }
    for kind, ids in id_lists.items():
        seen: dict[str, int] = {}
        for i, item_id in enumerate(ids):
            if item_id in seen:
                checks.add(
                    (kind, i, "id"),
                    f"duplicate id {item_id!r}",
                    "give each one its own id",
                    uses=[(kind, seen[item_id], "id")],
                )
            seen.setdefault(item_id, i)


def _check_vehicles(cfg: SiteConfig, checks: _Checks) -> None:
    charger_ids = {c.id for c in cfg.chargers}
    v2g_vehicles: list[Loc] = []
    for i, v in enumerate(cfg.vehicles):
        at: Loc = ("vehicles", i)
        if v.home_charger is not None and v.home_charger not in charger_ids:
            checks.add(
                (*at, "home_charger"),
                f"unknown charger {v.home_charger!r}",
                f"use one of {sorted(charger_ids)} or add the charger under chargers",
                uses=[("chargers", "*", "id")],
            )
        reserve = v.reserve_percent
        reserve_uses = [(*at, "reserve"), (*at, "consumption_kwh_per_100km"), (*at, "usable_capacity_kwh")]
        if reserve >= 100:
            checks.add(
                (*at, "reserve"),
                f"reserve is {reserve:.0f} % of the battery",
                "lower the reserve",
                uses=reserve_uses,
            )
        for day, rule in v.departures.items():
            target_at = (*at, "departures", day, "target_soc_percent")
            if rule.target_soc_percent <= reserve:
                checks.add(
                    target_at,
                    f"target {rule.target_soc_percent:g} % is not above the reserve {reserve:.0f} %",
                    "raise the target or lower the reserve",
                    uses=reserve_uses,
                )
            if rule.target_soc_percent > v.max_soc_percent:
                checks.add(
                    target_at,
                    f"target {rule.target_soc_percent:g} % is above max_soc_percent {v.max_soc_percent:g}",
                    "lower the target or raise max_soc_percent",
                    uses=[(*at, "max_soc_percent")],
                )
        if v.default_target_soc_percent <= reserve:
            checks.add(
                (*at, "default_target_soc_percent"),
                f"{v.default_target_soc_percent:g} % is not above the reserve {reserve:.0f} %",
                "raise the target or lower the reserve",
                uses=reserve_uses,
            )
        if v.default_target_soc_percent > v.max_soc_percent:
            checks.add(
                (*at, "default_target_soc_percent"),
                f"{v.default_target_soc_percent:g} % is above max_soc_percent {v.max_soc_percent:g}",
                "lower default_target_soc_percent or raise max_soc_percent",
                uses=[(*at, "max_soc_percent")],
            )
        if v.max_soc_percent <= reserve:
            checks.add(
                (*at, "max_soc_percent"),
                f"{v.max_soc_percent:g} % is not above the reserve {reserve:.0f} %",
                "raise max_soc_percent",
                uses=reserve_uses,
            )
        if v.permissions.v2g:
            v2g_vehicles.append((*at, "permissions"))
        index = next((j for j, c in enumerate(cfg.chargers) if c.id == v.home_charger), None)
        if index is not None and (v.permissions.v2g or v.permissions.v2h):
            charger = cfg.chargers[index]
            if not charger.bidirectional:
                checks.add(
                    (*at, "permissions"),
                    f"V2G/V2H allowed but charger {charger.id!r} is not bidirectional",
                    "turn off v2g/v2h or use a bidirectional charger",
                    uses=[(*at, "home_charger"), ("chargers", index, "bidirectional")],
                )
    if v2g_vehicles and cfg.site.grid.export_limit_kw <= 0:
        checks.add(
            ("site", "grid", "export_limit_kw"),
            "a vehicle allows V2G but the export limit is 0",
            "set export_limit_kw to the export your connection allows",
            uses=v2g_vehicles,
        )


def _check_chargers(cfg: SiteConfig, checks: _Checks) -> None:
    for i, c in enumerate(cfg.chargers):
        if c.negative_limit_means_discharge and not c.bidirectional:
            checks.add(
                ("chargers", i, "negative_limit_means_discharge"),
                "is true but the charger is not bidirectional, so it would never be used",
                "set bidirectional: true and max_discharge_kw, or remove negative_limit_means_discharge",
                uses=[("chargers", i, "bidirectional")],
            )


def _check_meters(cfg: SiteConfig, checks: _Checks) -> None:
    vehicle_ids = {v.id for v in cfg.vehicles}
    for i, m in enumerate(cfg.meters):
        if m.vehicle is not None and m.vehicle not in vehicle_ids:
            checks.add(
                ("meters", i, "vehicle"),
                f"unknown vehicle {m.vehicle!r}",
                f"use one of {sorted(vehicle_ids)}",
                uses=[("vehicles", "*", "id")],
            )
    grid_meters = [i for i, m in enumerate(cfg.meters) if m.role is MeterRole.GRID]
    if len(grid_meters) > 1:
        checks.add(
            ("meters", grid_meters[1], "role"),
            "more than one grid meter",
            "keep one meter with role grid",
            uses=[("meters", grid_meters[0], "role")],
        )


_BATTERY_ROLES = (MeterRole.BATTERY, MeterRole.BATTERY_SOC)


def _battery_meter_ids(cfg: SiteConfig, checks: _Checks) -> None:
    battery_ids = {b.id for b in cfg.home_batteries}
    for i, m in enumerate(cfg.meters):
        if m.battery is not None and m.battery not in battery_ids:
            checks.add(
                ("meters", i, "battery"),
                f"unknown home battery {m.battery!r}",
                f"use one of {sorted(battery_ids)} or add the battery under home_batteries"
                if battery_ids
                else "add the battery under home_batteries",
                uses=[("home_batteries", "*", "id")],
            )
        elif m.battery is not None and m.role not in _BATTERY_ROLES:
            checks.add(
                ("meters", i, "battery"),
                f"is set but role {m.role.value} does not read a battery",
                "remove battery, or set role to battery or battery_soc",
                uses=[("meters", i, "role")],
            )


def _check_home_batteries(cfg: SiteConfig, checks: _Checks) -> None:
    """Each battery has what its control needs: observe reads power and SoC from meters, mqtt needs
    a SoC meter, modbus reads both from the device (a SoC meter beside it would compete)."""
    _battery_meter_ids(cfg, checks)
    meter_topics = {m.topic: m.id for m in cfg.meters}
    for i, b in enumerate(cfg.home_batteries):
        at: Loc = ("home_batteries", i, "control")
        roles = {m.role for m in cfg.meters if m.battery == b.id}
        mode = b.control.mode
        if mode == "modbus":
            for j, m in enumerate(cfg.meters):
                if m.battery == b.id and m.role is MeterRole.BATTERY_SOC:
                    checks.add(
                        ("meters", j, "role"),
                        f"battery {b.id!r} is read over Modbus (control: modbus), its SoC from the device",
                        "remove this meter, or use control: mqtt or observe for that battery",
                        uses=[(*at, "mode"), ("meters", j, "battery")],
                    )
            continue
        needed = _BATTERY_ROLES if mode == "observe" else (MeterRole.BATTERY_SOC,)
        missing = [r.value for r in needed if r not in roles]
        if missing:
            needs = "its power and SoC" if mode == "observe" else "its SoC"
            checks.add(
                (*at, "mode"),
                f"control {mode} needs {needs} from meters, but no meter with role {' or '.join(missing)} "
                f"names battery {b.id!r}",
                f"add a meter with role {missing[0]} and battery: {b.id}",
                uses=[("meters", "*", "battery"), ("meters", "*", "role")],
            )
        topic = getattr(b.control, "setpoint_topic", None)
        if topic is not None and topic in meter_topics:
            checks.add(
                (*at, "setpoint_topic"),
                f"is also the topic of meter {meter_topics[topic]!r}: the setpoints would be read as readings",
                "give the setpoints a topic of their own",
                uses=[("meters", "*", "topic")],
            )


_DAY_S = 86_400


def _weekly_spans(window: TimeOfUseWindow) -> list[tuple[int, int]]:
    """The seconds of the week ``window`` covers, as [start, end) spans (as ``signals._tou_price``
    reads it: the part after midnight belongs to the day the window opened)."""
    start = window.start.hour * 3600 + window.start.minute * 60 + window.start.second
    end = window.end.hour * 3600 + window.end.minute * 60 + window.end.second
    spans: list[tuple[int, int]] = []
    for day in window.days:
        base = WEEKDAYS.index(day) * _DAY_S
        if start < end:
            spans.append((base + start, base + end))
        elif start == end:
            spans.append((base, base + _DAY_S))
        else:
            spans.append((base + start, base + _DAY_S))
            next_day = (base + _DAY_S) % (7 * _DAY_S)
            if end > 0:
                spans.append((next_day, next_day + end))
    return spans


def _first_overlap(first: TimeOfUseWindow, second: TimeOfUseWindow) -> int | None:
    shared = [
        max(a0, b0)
        for a0, a1 in _weekly_spans(first)
        for b0, b1 in _weekly_spans(second)
        if a0 < b1 and b0 < a1
    ]
    return min(shared) if shared else None


def _check_tariff(cfg: SiteConfig, checks: _Checks) -> None:
    for name, price in (("import", cfg.tariff.import_), ("export", cfg.tariff.export)):
        windows = price.time_of_use
        for j in range(1, len(windows)):
            for i in range(j):
                second = _first_overlap(windows[i], windows[j])
                if second is None:
                    continue
                day, rest = divmod(second, _DAY_S)
                when = f"{WEEKDAYS[day]} {rest // 3600:02d}:{rest % 3600 // 60:02d}"
                checks.add(
                    ("tariff", name, "time_of_use", j),
                    f"overlaps time_of_use[{i}] from {when}, where time_of_use[{i}] sets the price",
                    "change start, end or days so that no two windows cover the same time",
                    uses=[("tariff", name, "time_of_use", i)],
                )
                break


# Providers whose price already holds taxes and fees: a retail formula on top would count them twice.
_RETAIL_PROVIDERS = ("tibber", "octopus")


def _source_currency(source: PriceSource, site_currency: str) -> str | None:
    """The currency a provider publishes in, where the config alone says it (None: not known)."""
    fixed = {"entsoe": "EUR", "awattar": "EUR", "octopus": "GBP"}
    if source.type in fixed:
        return fixed[source.type]
    if isinstance(source, EnergiDataServiceSource | NordPoolSource):
        return source.currency or site_currency
    return None


def _check_retail_currency(cfg: SiteConfig, checks: _Checks) -> None:
    for name, price in (("import", cfg.tariff.import_), ("export", cfg.tariff.export)):
        retail = price.retail
        if retail is None or retail.preset is None or retail.energy_tax_per_kwh is not None:
            continue  # the energy tax is the preset's only amount in a currency
        preset = RETAIL_PRESETS[retail.preset]
        if preset.currency != cfg.site.currency.upper():
            checks.add(
                ("tariff", name, "retail", "preset"),
                f"{retail.preset} is in {preset.currency} but site.currency is {cfg.site.currency}",
                f"use a preset in {cfg.site.currency}, or write energy_tax_per_kwh in {cfg.site.currency}",
                uses=[("site", "currency")],
            )


def _check_price_sources(cfg: SiteConfig, checks: _Checks) -> None:
    site_currency = cfg.site.currency
    for name, price in (("import", cfg.tariff.import_), ("export", cfg.tariff.export)):
        at: Loc = ("tariff", name)
        provider, backup = price.provider, price.backup_provider
        if provider is not None and provider.type in _RETAIL_PROVIDERS and price.retail is not None:
            checks.add(
                (*at, "retail"),
                f"{provider.type} prices already include taxes and fees; retail would add them again",
                f"remove retail, or use a market price provider instead of {provider.type}",
                uses=[(*at, "provider")],
            )
        if provider is not None and backup is not None and backup == provider:
            checks.add(
                (*at, "backup_provider"),
                "is the same source as provider, so it cannot stand in when the provider fails",
                "name another provider (or another area/zone) as backup_provider, or remove it",
                uses=[(*at, "provider")],
            )
        for role, source in (("provider", provider), ("backup_provider", backup)):
            currency = None if source is None else _source_currency(source, site_currency)
            if source is None or currency is None or source.exchange_rate is not None:
                continue
            if currency.upper() != site_currency.upper():
                checks.add(
                    (*at, role, "exchange_rate"),
                    f"{source.type} prices are in {currency}, the site's currency is {site_currency}",
                    f"set exchange_rate ({site_currency} per {currency}) on tariff.{name}.{role}",
                    uses=[(*at, role), ("site", "currency")],
                )


def _check_connections(cfg: SiteConfig, checks: _Checks) -> None:
    tls = cfg.mqtt.tls
    files = [name for name in ("ca_file", "cert_file", "key_file") if getattr(tls, name) is not None]
    if not tls.enabled and (files or tls.insecure_skip_verify):
        settings = " and ".join(files or ["insecure_skip_verify"])
        password = " and the password" if cfg.mqtt.password is not None else ""
        checks.add(
            ("mqtt", "tls", "enabled"),
            f"is false but mqtt.tls sets {settings}: the connection{password} would go unencrypted",
            f"set mqtt.tls.enabled: true, or remove {settings} to connect without TLS",
            uses=[("mqtt", "tls"), ("mqtt", "password")],
        )
    if tls.enabled and tls.key_file is not None and tls.cert_file is None:
        checks.add(
            ("mqtt", "tls", "key_file"),
            "is set without cert_file",
            "add cert_file, the client certificate, or remove key_file",
            uses=[("mqtt", "tls")],
        )
    if cfg.api.enabled and cfg.api.port == cfg.ocpp.port and _hosts_overlap(cfg.api.host, cfg.ocpp.host):
        checks.add(
            ("api", "port"),
            f"{cfg.api.port} is also ocpp.port; the daemon could not listen on both",
            "give the HTTP API its own port, e.g. 8080",
            uses=[("api",), ("ocpp", "port"), ("ocpp", "host")],
        )
    # A charging profile is renewed only when less than half of its validity is left, and only when a
    # plan or dispatch sends one: with a validity under two re-plan intervals it can lapse in between.
    replan_minutes = cfg.site.replan_interval_minutes
    if cfg.ocpp.profile_validity_hours * 60 < 2 * replan_minutes:
        least_hours = math.ceil(round(replan_minutes / 30 * 1000, 6)) / 1000  # rounded up: it must pass
        checks.add(
            ("ocpp", "profile_validity_hours"),
            f"{_num(cfg.ocpp.profile_validity_hours)} h is less than twice site.replan_interval_minutes "
            f"({_num(replan_minutes)} min): a charging profile can lapse between two plans",
            f"set ocpp.profile_validity_hours to at least {_num(least_hours)}, "
            "or lower site.replan_interval_minutes",
            uses=[("site", "replan_interval_minutes")],
        )
    if cfg.grid_signals.guaranteed_import_kw > cfg.site.grid.import_limit_kw:
        checks.add(
            ("grid_signals", "guaranteed_import_kw"),
            f"{cfg.grid_signals.guaranteed_import_kw:g} kW is above site.grid.import_limit_kw",
            "lower it to at most the import limit",
            uses=[("site", "grid", "import_limit_kw")],
        )


def _hosts_overlap(first: str, second: str) -> bool:
    wildcard = ("0.0.0.0", "::", "")
    return first == second or first in wildcard or second in wildcard


def unauthenticated_charger_warnings(cfg: SiteConfig) -> list[str]:
    """One line per charger that connects without a password to an OCPP listener other machines can
    reach: anyone on that network could connect as it and start charging or discharging. Not an
    error: a charger without Basic auth on a private LAN says so with ``allow_unauthenticated``."""
    host = cfg.ocpp.host
    if is_loopback(host):
        return []
    scheme = "wss" if cfg.ocpp.tls is not None else "ws"
    where = f"{scheme}://{host}:{cfg.ocpp.port}"
    lines = []
    for i, c in enumerate(cfg.chargers):
        if c.auth is not None or c.allow_unauthenticated:
            continue
        lines.append(
            f"charger {c.id!r} has no password and the OCPP listener {where} is reachable from other "
            f"machines: anyone on that network can connect as {c.id!r}; set chargers[{i}].auth.password_hash "
            f"(from `v2x hash-password`), or ocpp.host: 127.0.0.1, or, on a network you trust, "
            f"chargers[{i}].allow_unauthenticated: true"
        )
    return lines
