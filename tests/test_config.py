"""Site config: the shipped examples load, and every broken config names its field and a fix."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.cli import main
from controller.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [ROOT / "configs" / "home.example.yaml", ROOT / "configs" / "minimal.yaml"]


def example_tree() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "configs" / "home.example.yaml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_shipped_examples_load(path: Path) -> None:
    cfg = load_config(path, env={})
    assert cfg.site.plan_step_minutes == 15
    assert cfg.vehicles and cfg.chargers


def test_home_example_content() -> None:
    cfg = load_config(EXAMPLES[0], env={})
    charger = cfg.chargers[0]
    assert charger.bidirectional and charger.ocpp_versions[0].value == "2.1"
    vehicle = cfg.vehicles[0]
    assert vehicle.permissions.v2g and vehicle.home_charger == charger.id
    assert vehicle.reserve_percent == pytest.approx(80 * 17 / 100 / 77 * 100)
    assert vehicle.departures["monday"].time.hour == 7
    assert cfg.meters[0].format.value == "shelly_pro3em"
    assert cfg.tariff.import_.dynamic_topic == "energy/prices/import"
    assert cfg.mqtt.username is None and cfg.mqtt.password is None  # ${MQTT_USER:-} -> empty -> unset


def test_env_substitution_reads_secrets() -> None:
    cfg = load_config(EXAMPLES[0], env={"MQTT_PASSWORD": "s3cret", "MQTT_HOST": "broker.lan"})
    assert cfg.mqtt.host == "broker.lan"
    assert cfg.mqtt.password is not None and cfg.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg.mqtt)


def broken(mutate: Any) -> dict[str, Any]:
    data = copy.deepcopy(example_tree())
    mutate(data)
    return data


def _set(path: list[Any], value: Any) -> Any:
    def mutate(data: Any) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _delete(path: list[Any]) -> Any:
    def mutate(data: Any) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


BROKEN_CASES = [
    (
        "reserve_percent_above_100",
        _set(["vehicles", 0, "reserve"], {"percent": 150}),
        "vehicles[0].reserve.percent",
        "150 is above 100",
    ),
    (
        "capacity_wrong_type",
        _set(["vehicles", 0, "usable_capacity_kwh"], "lots"),
        "vehicles[0].usable_capacity_kwh",
        "not a number",
    ),
    (
        "capacity_negative",
        _set(["vehicles", 0, "usable_capacity_kwh"], -5),
        "vehicles[0].usable_capacity_kwh",
        "-5 is not above 0",
    ),
    (
        "missing_import_limit",
        _delete(["site", "grid", "import_limit_kw"]),
        "site.grid.import_limit_kw",
        "is required",
    ),
    ("missing_tariff", _delete(["tariff"]), "tariff", "is required"),
    (
        "unknown_home_charger",
        _set(["vehicles", 0, "home_charger"], "nope"),
        "vehicles[0].home_charger",
        "unknown charger 'nope'",
    ),
    (
        "reserve_above_target",
        _set(["vehicles", 0, "reserve"], {"percent": 85}),
        "vehicles[0].departures.monday.target_soc_percent",
        "not above the reserve 85",
    ),
    (
        "v2g_without_export",
        _set(["site", "grid", "export_limit_kw"], 0),
        "site.grid.export_limit_kw",
        "export limit is 0",
    ),
    ("unknown_field", _set(["vehicles", 0, "colour"], "red"), "vehicles[0].colour", "not a known field"),
    ("bad_timezone", _set(["site", "timezone"], "Mars/Olympus"), "site.timezone", "unknown timezone"),
    (
        "bad_weekday",
        _set(["vehicles", 0, "departures", "funday"], {"time": "08:00", "target_soc_percent": 80}),
        "vehicles[0].departures",
        "not a weekday",
    ),
    (
        "bad_ocpp_version",
        _set(["chargers", 0, "ocpp_versions"], ["3.0"]),
        "chargers[0].ocpp_versions[0]",
        "'3.0' is not allowed",
    ),
    (
        "plain_password",
        _set(["chargers", 0, "auth"], {"password_hash": "hunter2"}),
        "chargers[0].auth.password_hash",
        "hash-password",
    ),
    (
        "meter_unknown_vehicle",
        _set(["meters", 1], {"id": "soc", "role": "vehicle_soc", "topic": "car/soc", "vehicle": "ghost"}),
        "meters[1].vehicle",
        "unknown vehicle 'ghost'",
    ),
    ("json_meter_without_path", _set(["meters", 1, "format"], "json"), "meters[1]", "json_path"),
    (
        "duplicate_charger",
        lambda d: d["chargers"].append(copy.deepcopy(d["chargers"][0])),
        "chargers[1].id",
        "duplicate id",
    ),
    (
        "discharge_not_bidirectional",
        _set(["chargers", 0, "bidirectional"], False),
        "chargers[0]",
        "bidirectional is false",
    ),
    ("bad_step", _set(["site", "plan_step_minutes"], 7), "site.plan_step_minutes", "7 is not allowed"),
    (
        "efficiency_above_one",
        _set(["vehicles", 0, "charge_efficiency"], 1.3),
        "vehicles[0].charge_efficiency",
        "1.3 is above 1",
    ),
    (
        "fallback_above_limit",
        _set(["site", "grid", "fallback_import_limit_kw"], 40),
        "site.grid",
        "fallback_import_limit_kw 40",
    ),
]


@pytest.mark.parametrize(("name", "mutate", "path", "text"), BROKEN_CASES, ids=[c[0] for c in BROKEN_CASES])
def test_broken_config_names_field(name: str, mutate: Any, path: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(broken(mutate), env={})
    rendered = [str(issue) for issue in info.value.issues]
    assert any(r.startswith(path + ":") and text in r for r in rendered), rendered


def test_missing_env_var_names_field() -> None:
    data = broken(_set(["mqtt", "password"], "${MQTT_SECRET}"))
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert [str(i) for i in info.value.issues] == [
        "mqtt.password: environment variable MQTT_SECRET is not set (export MQTT_SECRET=...)"
    ]


def test_several_problems_reported_together() -> None:
    def mutate(data: dict[str, Any]) -> None:
        data["vehicles"][0]["usable_capacity_kwh"] = -1
        data["chargers"][0]["max_charge_kw"] = "fast"

    with pytest.raises(ConfigError) as info:
        parse_config(broken(mutate), env={})
    paths = {issue.path for issue in info.value.issues}
    assert {"vehicles[0].usable_capacity_kwh", "chargers[0].max_charge_kw"} <= paths


def test_reserve_in_km_converted_with_consumption() -> None:
    cfg = parse_config(broken(_set(["vehicles", 0, "reserve"], {"km": 100})), env={})
    assert cfg.vehicles[0].reserve_percent == pytest.approx(17 / 77 * 100)


def test_unquoted_yaml_time_is_read_as_hh_mm(tmp_path: Path) -> None:
    text = (ROOT / "configs" / "home.example.yaml").read_text().replace('time: "10:00"', "time: 10:00")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert load_config(path, env={}).vehicles[0].departures["saturday"].time.hour == 10


@pytest.mark.parametrize(
    ("text", "where"),
    [("site: [unclosed\n", "line 2"), ("- just\n- a list\n", "(top level)"), ("", "(top level)")],
)
def test_malformed_yaml_and_wrong_shapes(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.issues[0].path.startswith(where)


def test_cli_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert main(["check-config", str(EXAMPLES[0])], out=out) == 0
    text = out.getvalue()
    assert "OK" in text and "vehicle family-ev: 77 kWh" in text and "charger wallbox-garage" in text


def test_cli_check_config_failure_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(broken(_set(["vehicles", 0, "reserve"], {"percent": 150}))))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "vehicles[0].reserve.percent: 150 is above 100" in err


def test_cli_missing_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_cli_schema_is_json_schema() -> None:
    out = io.StringIO()
    assert main(["schema"], out=out) == 0
    schema = json.loads(out.getvalue())
    assert schema["type"] == "object"
    assert {"site", "tariff"} <= set(schema["required"])
    assert "import" in json.dumps(schema["$defs"]["TariffConfig"])


def test_cli_hash_password_roundtrip(monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.passwords import verify_password

    monkeypatch.setattr("sys.stdin", io.StringIO("wallbox-secret\n"))
    out = io.StringIO()
    assert main(["hash-password", "--stdin"], out=out) == 0
    stored = out.getvalue().strip()
    assert verify_password("wallbox-secret", stored)
    assert not verify_password("wrong", stored)
