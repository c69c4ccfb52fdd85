"""Site config: the shipped examples load, and every broken config names its field and a fix."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from controller.cli import main
from controller.config import ConfigError, load_config, parse_config
from controller.config.checks import unauthenticated_charger_warnings
from tests.conftest import EXAMPLE_ENV

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [
    ROOT / "configs" / "home.example.yaml",
    ROOT / "configs" / "minimal.yaml",
    ROOT / "configs" / "market.example.yaml",
]


def example_tree() -> dict[str, Any]:
    """The home example as written, with the charger's password hash it reads from the environment."""
    data = yaml.safe_load((ROOT / "configs" / "home.example.yaml").read_text())
    assert isinstance(data, dict)
    assert data["chargers"][0]["auth"]["password_hash"] == "${V2X_CHARGER_PASSWORD_HASH}"
    data["chargers"][0]["auth"]["password_hash"] = EXAMPLE_ENV["V2X_CHARGER_PASSWORD_HASH"]
    return data


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_shipped_examples_load(path: Path) -> None:
    cfg = load_config(path, env=EXAMPLE_ENV)
    assert cfg.site.plan_step_minutes == 15
    assert cfg.vehicles and cfg.chargers


def test_home_example_content() -> None:
    cfg = load_config(EXAMPLES[0], env=EXAMPLE_ENV)
    charger = cfg.chargers[0]
    assert charger.bidirectional and charger.ocpp_versions[0].value == "2.1"
    vehicle = cfg.vehicles[0]
    assert vehicle.permissions.v2g and vehicle.home_charger == charger.id
    assert vehicle.reserve_percent == pytest.approx(80 * 17 / 100 / 77 * 100)
    assert vehicle.departures["monday"].time.hour == 7
    assert cfg.meters[0].format.value == "shelly_pro3em"
    assert cfg.tariff.import_.dynamic_topic == "energy/prices/import"
    assert cfg.mqtt.username is None and cfg.mqtt.password is None  # ${MQTT_USER:-} -> empty -> unset


def test_home_example_commented_settings_are_valid_when_uncommented(tmp_path: Path) -> None:
    """The optional settings the example shows commented out load as written once uncommented."""
    text = EXAMPLES[0].read_text()
    commented = "  # accepted_id_tokens: "
    assert commented in text
    assert load_config(EXAMPLES[0], env=EXAMPLE_ENV).ocpp.accepted_id_tokens is None  # absent: any token
    enabled = tmp_path / "home.yaml"
    enabled.write_text(text.replace(commented, "  accepted_id_tokens: "))
    assert load_config(enabled, env=EXAMPLE_ENV).ocpp.accepted_id_tokens == ["04A1B2C3D4E5F6"]


def test_env_substitution_reads_secrets() -> None:
    cfg = load_config(EXAMPLES[0], env={**EXAMPLE_ENV, "MQTT_PASSWORD": "s3cret", "MQTT_HOST": "broker.lan"})
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
        "return_before_departure",
        _set(
            ["vehicles", 0, "departures"],
            {"monday": {"time": "07:30", "target_soc_percent": 80, "return_time": "7:00"}},
        ),
        "vehicles[0].departures.monday",
        "return_time 07:00 is not after time 07:30",
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
        "timezone_too_long",
        _set(["site", "timezone"], "Europe/" + "x" * 300),
        "site.timezone",
        "unknown timezone",
    ),
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
        "fallback_import_limit_kw 40 is above import_limit_kw 17.3 (lower it)",
    ),
    ("nan_passes_no_bound", _set(["meters", 0, "scale"], float("nan")), "meters[0].scale", "not a finite"),
    (
        "scale_infinite",
        _set(["meters", 0, "scale"], float("-inf")),
        "meters[0].scale",
        "-inf is not a finite",
    ),
    (
        "scale_zero",
        _set(["meters", 0, "scale"], 0),
        "meters[0].scale",
        "is 0, which turns every reading into 0 (use the multiplier to W",
    ),
    (
        "negative_limit_on_a_charge_only_charger",
        lambda d: d["chargers"].append({"id": "carport", "negative_limit_means_discharge": True}),
        "chargers[1].negative_limit_means_discharge",
        "not bidirectional, so it would never be used (set bidirectional: true",
    ),
    (
        "time_of_use_windows_overlap",
        _set(
            ["tariff", "export"],
            {
                "static_price_per_kwh": 0.05,
                "time_of_use": [
                    {"start": "22:00", "end": "06:00", "price_per_kwh": 0.02, "days": ["sunday"]},
                    {"start": "21:00", "end": "23:00", "price_per_kwh": 0.0},
                ],
            },
        ),
        "tariff.export.time_of_use[1]",
        "overlaps time_of_use[0] from sunday 22:00, where time_of_use[0] sets the price",
    ),
    (
        "time_of_use_overlap_after_midnight",
        _set(
            ["tariff", "import"],
            {
                "static_price_per_kwh": 0.3,
                "time_of_use": [
                    {"start": "22:00", "end": "06:00", "price_per_kwh": 0.1, "days": ["sunday"]},
                    {"start": "05:30", "end": "07:00", "price_per_kwh": 0.2, "days": ["monday"]},
                ],
            },
        ),
        "tariff.import.time_of_use[1]",
        "from monday 05:30",
    ),
    (
        "mqtt_tls_files_but_tls_off_with_password",
        lambda d: d["mqtt"].update(password="s3cret", tls={"enabled": False, "ca_file": "/etc/v2x/ca.pem"}),
        "mqtt.tls.enabled",
        "sets ca_file: the connection and the password would go unencrypted (set mqtt.tls.enabled: true",
    ),
    (
        "mqtt_tls_skip_verify_but_tls_off",
        _set(["mqtt", "tls"], {"insecure_skip_verify": True}),
        "mqtt.tls.enabled",
        "sets insecure_skip_verify: the connection would go unencrypted",
    ),
    (
        "mqtt_tls_key_without_certificate",
        _set(["mqtt", "tls"], {"enabled": True, "key_file": "/etc/v2x/client.key"}),
        "mqtt.tls.key_file",
        "is set without cert_file",
    ),
    ("mqtt_host_empty", _set(["mqtt", "host"], ""), "mqtt.host", "is empty (write the broker's name"),
    (
        "ocpp_host_empty",
        _set(["ocpp", "host"], "  "),
        "ocpp.host",
        "is empty (write an address of this machine",
    ),
    (
        "ocpp_host_not_a_host",
        _set(["ocpp", "host"], "not a host!!"),
        "ocpp.host",
        "'not a host!!' is not a host name or IP address",
    ),
    ("api_host_not_a_host", _set(["api", "host"], "http://gateway"), "api.host", "is not a host name"),
    (
        "infinite_limit",
        _set(["site", "grid", "import_limit_kw"], float("inf")),
        "site.grid.import_limit_kw",
        "inf is not a finite number",
    ),
    (
        "departure_time_out_of_range",
        _set(["vehicles", 0, "departures", "monday", "time"], 25 * 60 + 30),  # unquoted 25:30
        "vehicles[0].departures.monday.time",
        "1530 is not a time of day",
    ),
    (
        "departure_time_with_offset",
        _set(["vehicles", 0, "departures", "monday", "time"], "07:30+02:00"),
        "vehicles[0].departures.monday.time",
        "is not a time of day",
    ),
    (
        "same_weekday_twice",
        _set(["vehicles", 0, "departures", "Monday"], {"time": "09:00", "target_soc_percent": 70}),
        "vehicles[0].departures",
        "monday is listed twice (keep one entry per day)",
    ),
    (
        "tou_unknown_day",
        _set(
            ["tariff", "import"],
            {
                "static_price_per_kwh": 0.3,
                "time_of_use": [{"start": "17:00", "end": "21:00", "price_per_kwh": 0.5, "days": ["funday"]}],
            },
        ),
        "tariff.import.time_of_use[0].days",
        "'funday' is not a weekday (use one of monday,",
    ),
    ("api_port_is_ocpp_port", _set(["api", "port"], 9000), "api.port", "9000 is also ocpp.port"),
    ("storage_path_empty", _set(["storage", "path"], ""), "storage.path", "is not a file name"),
    ("currency_not_text", _set(["site", "currency"], 978), "site.currency", "978 is not text"),
    ("empty_topic", _set(["meters", 0, "topic"], ""), "meters[0].topic", "is empty"),
    (
        "reserve_both_ways",
        _set(["vehicles", 0, "reserve"], {"percent": 20, "km": 80}),
        "vehicles[0].reserve",
        "has both percent and km (set exactly one of them)",
    ),
    (
        "default_target_above_max_soc",
        _set(["vehicles", 0, "default_target_soc_percent"], 95),
        "vehicles[0].default_target_soc_percent",
        "95 % is above max_soc_percent 90 (lower default_target_soc_percent or raise max_soc_percent)",
    ),
    (
        "profile_validity_shorter_than_two_replans",
        lambda d: (
            d["site"].update(replan_interval_minutes=45) or d.update(ocpp={"profile_validity_hours": 1})
        ),
        "ocpp.profile_validity_hours",
        "1 h is less than twice site.replan_interval_minutes (45 min): a charging profile can lapse "
        "between two plans (set ocpp.profile_validity_hours to at least 1.5, or lower "
        "site.replan_interval_minutes)",
    ),
    (
        "json_path_with_an_empty_part",
        lambda d: d["meters"][1].update(format="json", json_path=".."),
        "meters[1].json_path",
        "json path '..' has an empty part (write dotted keys",
    ),
    (
        "json_path_on_a_format_that_ignores_it",
        lambda d: d["meters"].append({"id": "heat", "role": "home", "topic": "heat/w", "json_path": "x.y"}),
        "meters[2]",
        "json_path is set but format plain does not read it (remove json_path, or set format: json)",
    ),
    *[
        (
            f"{'_'.join(str(k) for k in where)}_{name}",
            _set(list(where), topic),
            ".".join(str(k) for k in where).replace(".0.", "[0]."),
            problem,
        )
        for where in [
            ("meters", 0, "topic"),
            ("mqtt", "base_topic"),
            ("mqtt", "discovery_prefix"),
            ("tariff", "import", "dynamic_topic"),
            ("tariff", "export", "dynamic_topic"),
            ("grid_signals", "limit_topic"),
            ("grid_signals", "outage_topic"),
            ("forecast", "pv_forecast_topic"),
            ("vehicles", 0, "v2l_cutoff_topic"),
        ]
        for name, topic, problem in [
            ("plus", "meters/+/power", "has a + or # wildcard (write "),
            ("hash", "energy/#", "has a + or # wildcard (write "),
            ("blank", "   ", "is empty"),
        ]
    ],
    (
        "hash_with_absurd_iterations",
        _set(
            ["chargers", 0, "auth", "password_hash"],
            "pbkdf2_sha256$999999999999$c2FsdHNhbHRzYWx0c2FsdA==$vlhkvOyxKPwkRHKfmilz4YbEdNOcxS7cCWmAgWWILh4=",
        ),
        "chargers[0].auth.password_hash",
        "is not a password hash",
    ),
]


@pytest.mark.parametrize(("name", "mutate", "path", "text"), BROKEN_CASES, ids=[c[0] for c in BROKEN_CASES])
def test_broken_config_names_field(name: str, mutate: Any, path: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(broken(mutate), env={})
    rendered = [str(issue) for issue in info.value.issues]
    assert any(r.startswith(path + ":") and text in r for r in rendered), rendered
    assert all(issue.fix for issue in info.value.issues), rendered  # every problem says how to fix it


@pytest.mark.parametrize(("name", "mutate", "path", "text"), BROKEN_CASES, ids=[c[0] for c in BROKEN_CASES])
def test_broken_config_exits_2_through_the_cli(
    name: str, mutate: Any, path: str, text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / f"{name}.yaml"
    file.write_text(yaml.safe_dump(broken(mutate), allow_unicode=True))
    assert main(["check-config", str(file)]) == 2
    captured = capsys.readouterr()
    assert f"  {path}:" in captured.err and text in captured.err, captured.err
    assert "OK" not in captured.out


def test_broken_configs_through_the_installed_command(tmp_path: Path) -> None:
    """The console script itself: exit codes and messages as a user sees them."""
    v2x = Path(sys.executable).with_name("v2x")
    cases = {
        "capacity.yaml": ("vehicles:\n  - id: car\n    usable_capacity_kwh: -1\n", "usable_capacity_kwh"),
        "yaml.yaml": ("site: {grid: [\n", "malformed YAML"),
        "env.yaml": ("site:\n  name: ${V2X_TEST_UNSET_NAME}\n", "environment variable V2X_TEST_UNSET_NAME"),
    }
    env = {k: v for k, v in os.environ.items() if k != "V2X_TEST_UNSET_NAME"} | EXAMPLE_ENV
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        done = subprocess.run(
            [str(v2x), "check-config", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 2 and expected in done.stderr, (name, done.stderr)
        assert "Traceback" not in done.stderr
    done = subprocess.run(
        [str(v2x), "check-config", str(EXAMPLES[0])], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr


def test_no_shipped_config_carries_a_password_hash() -> None:
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert "pbkdf2" not in path.read_text(), path


def test_home_example_without_the_password_hash_names_the_variable_and_the_fix() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLES[0], env={})
    assert [str(i) for i in info.value.issues] == [
        "chargers[0].auth.password_hash: environment variable V2X_CHARGER_PASSWORD_HASH is not set "
        '(export V2X_CHARGER_PASSWORD_HASH="$(v2x hash-password)": it asks for the password set in the '
        "charger and prints its hash)"
    ]


def _open_site(ocpp_host: str | None = None, **charger: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLES[1].read_text())
    data["chargers"][0].update(charger)
    if ocpp_host is not None:
        data["ocpp"] = {"host": ocpp_host}
    return data


def test_a_charger_without_a_password_on_an_open_listener_is_warned_about() -> None:
    (warning,) = unauthenticated_charger_warnings(parse_config(_open_site(), env={}))  # default 0.0.0.0
    assert "charger 'wallbox' has no password" in warning and "ws://0.0.0.0:9000" in warning
    assert "chargers[0].auth.password_hash" in warning and "v2x hash-password" in warning
    assert "chargers[0].allow_unauthenticated: true" in warning
    assert unauthenticated_charger_warnings(parse_config(_open_site("192.168.1.10"), env={}))
    quiet = [
        _open_site(allow_unauthenticated=True),
        _open_site("127.0.0.1"),
        _open_site("::1"),
        _open_site("localhost"),
        _open_site(auth={"password_hash": EXAMPLE_ENV["V2X_CHARGER_PASSWORD_HASH"]}),
    ]
    for data in quiet:
        assert unauthenticated_charger_warnings(parse_config(data, env={})) == [], data
    assert unauthenticated_charger_warnings(load_config(EXAMPLES[0], env=EXAMPLE_ENV)) == []


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


def test_field_and_cross_field_problems_reported_together() -> None:
    """A bad value does not hide a contradiction elsewhere: both come in one run."""

    def mutate(data: dict[str, Any]) -> None:
        data["vehicles"][0]["reserve"] = {"percent": 150}
        data["vehicles"][0]["home_charger"] = "garage"
        data["api"]["port"] = 9000  # also ocpp.port
        data["site"]["grid"]["import_limit_kw"] = "lots"

    with pytest.raises(ConfigError) as info:
        parse_config(broken(mutate), env={})
    assert [str(issue) for issue in info.value.issues] == [
        "site.grid.import_limit_kw: 'lots' is not a number (write a plain number)",
        "vehicles[0].reserve.percent: 150 is above 100 (use a value of at most 100)",
        "vehicles[0].home_charger: unknown charger 'garage' "
        "(use one of ['wallbox-garage'] or add the charger under chargers)",
        "api.port: 9000 is also ocpp.port; the daemon could not listen on both "
        "(give the HTTP API its own port, e.g. 8080)",
    ]


@pytest.mark.parametrize(
    "mutate",
    [
        # Taken on its own, the default export limit (0) would contradict the car's V2G permission.
        _set(["site", "grid", "export_limit_kw"], "lots"),
        # The default reserve (20 %) would be compared with targets the user set against another one.
        _set(["vehicles", 0, "reserve"], {"percent": "high"}),
        # Without its import limit the site would compare grid_signals against a stand-in.
        _delete(["site", "grid", "import_limit_kw"]),
        _set(["tariff", "import"], {"time_of_use": []}),
    ],
    ids=["default_export_limit", "default_reserve", "missing_site_value", "broken_tariff"],
)
def test_no_cross_field_problem_about_a_value_the_user_did_not_write(mutate: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(broken(mutate), env={})
    assert len(info.value.issues) == 1, [str(i) for i in info.value.issues]


def test_cross_field_problems_keep_the_index_the_user_wrote() -> None:
    """A list item that does not parse is left out of the cross-field checks; the others keep their index."""

    def mutate(data: dict[str, Any]) -> None:
        second = copy.deepcopy(data["vehicles"][0])
        second.update(id="second-car", home_charger="nowhere")
        data["vehicles"] = [{"id": "half-written"}, second]
        data["meters"] = [
            {"id": "no-topic"},
            *data["meters"],
            {"id": "grid2", "role": "grid", "topic": "m/2"},
        ]
        data["chargers"].append({"id": "wallbox-garage", "max_charge_kw": "fast"})

    with pytest.raises(ConfigError) as info:
        parse_config(broken(mutate), env={})
    rendered = [str(issue) for issue in info.value.issues]
    assert set(rendered) == {
        "vehicles[0].usable_capacity_kwh: is required (add this field)",
        "meters[0].role: is required (add this field)",
        "meters[0].topic: is required (add this field)",
        "chargers[1].max_charge_kw: 'fast' is not a number (write a plain number)",
        "chargers[1].id: duplicate id 'wallbox-garage' (give each one its own id)",
        "vehicles[1].home_charger: unknown charger 'nowhere' "
        "(use one of ['wallbox-garage'] or add the charger under chargers)",
        "meters[3].role: more than one grid meter (keep one meter with role grid)",
    }, rendered


def test_readme_check_config_example_is_what_the_command_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (ROOT / "README.md").read_text()
    found = re.search(
        r"```yaml\n(?P<config>.*?)```\s*\n\w*\s*\n```\n\$ v2x check-config broken\.yaml\n(?P<output>.*?)```",
        readme,
        re.DOTALL,
    )
    assert found, "README: a ```yaml block with broken.yaml, then the check-config output block"
    (tmp_path / "broken.yaml").write_text(found["config"])
    monkeypatch.chdir(tmp_path)
    assert main(["check-config", "broken.yaml"]) == 2
    captured = capsys.readouterr()
    assert captured.err == found["output"] and captured.out == ""


@pytest.mark.parametrize("path", [*EXAMPLES, ROOT / "sim" / "examples" / "home.yaml"], ids=lambda p: p.name)
def test_examples_validate_against_the_printed_json_schema(path: Path) -> None:
    out = io.StringIO()
    assert main(["schema"], out=out) == 0
    validator = jsonschema.Draft202012Validator(json.loads(out.getvalue()))
    errors = [
        f"{list(e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(yaml.safe_load(path.read_text()))
    ]
    assert errors == []
    bad = broken(_set(["vehicles", 0, "reserve"], {"percent": 150}))  # the schema is not just "an object"
    assert [list(e.absolute_path) for e in validator.iter_errors(bad)] == [
        ["vehicles", 0, "reserve", "percent"]
    ]


def test_reserve_in_km_converted_with_consumption() -> None:
    cfg = parse_config(broken(_set(["vehicles", 0, "reserve"], {"km": 100})), env={})
    assert cfg.vehicles[0].reserve_percent == pytest.approx(17 / 77 * 100)


def test_unquoted_yaml_time_is_read_as_hh_mm(tmp_path: Path) -> None:
    text = (ROOT / "configs" / "home.example.yaml").read_text().replace('time: "10:00"', "time: 10:00")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert load_config(path, env=EXAMPLE_ENV).vehicles[0].departures["saturday"].time.hour == 10


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


def test_secret_values_never_in_error_messages() -> None:
    def mutate(data: dict[str, Any]) -> None:
        data["mqtt"]["password"] = {"oops": "hunter2"}
        data["api"]["token"] = ["s3cr3t-token"]

    with pytest.raises(ConfigError) as info:
        parse_config(broken(mutate), env={})
    rendered = str(info.value)
    assert "mqtt.password: the value is not text" in rendered and "api.token:" in rendered
    assert "hunter2" not in rendered and "s3cr3t-token" not in rendered


def test_departure_times_as_people_write_them() -> None:
    def mutate(data: dict[str, Any]) -> None:
        data["vehicles"][0]["departures"] = {
            "Monday": {"time": "7:30", "target_soc_percent": 80},  # day names in any case
            "tuesday": {"time": 7 * 60 + 45, "target_soc_percent": 80},  # unquoted 07:45 in YAML 1.1
            "friday": {"time": "06:15:30", "target_soc_percent": 80, "return_time": "17:05"},
        }

    departures = parse_config(broken(mutate), env={}).vehicles[0].departures
    assert [(day, rule.time.isoformat()) for day, rule in departures.items()] == [
        ("monday", "07:30:00"),
        ("tuesday", "07:45:00"),
        ("friday", "06:15:30"),
    ]
    assert (
        departures["friday"].return_time is not None
        and departures["friday"].return_time.isoformat() == "17:05:00"
    )
    assert departures["monday"].return_time is None


def test_time_of_use_days_any_case_and_midnight_end() -> None:
    window = {"start": "22:00", "end": "24:00", "price_per_kwh": 0.1, "days": ["Saturday", "SUNDAY"]}
    data = broken(_set(["tariff", "import"], {"static_price_per_kwh": 0.3, "time_of_use": [window]}))
    parsed = parse_config(data, env={}).tariff.import_.time_of_use[0]
    assert parsed.days == ["saturday", "sunday"]  # what the tariff compares against
    assert parsed.end.isoformat() == "00:00:00"


def test_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join([*lines, "site: *a8", ""]))  # 10**9 strings once expanded
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "more than 200000 values" in str(info.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\xff\xfesite: 1\n", "(file): is not UTF-8 text (byte 0)"),
        (b"site: " + b"[" * 5000 + b"]" * 5000 + b"\n", "(file): is nested too deeply"),
        (b"site: " + b"[" * 40 + b"]" * 40 + b"\n", "nested deeper than 32 levels"),
        (b"# " + b"x" * (5 * 1024 * 1024) + b"\n", "(file): is larger than 4 MiB"),
    ],
    ids=["not_utf8", "deeper_than_the_parser", "deeper_than_allowed", "huge"],
)
def test_unreadable_files_are_problems_not_crashes(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert expected in str(info.value)


def test_cli_check_config_ok(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V2X_CHARGER_PASSWORD_HASH", EXAMPLE_ENV["V2X_CHARGER_PASSWORD_HASH"])
    out = io.StringIO()
    assert main(["check-config", str(EXAMPLES[0])], out=out) == 0
    text = out.getvalue()
    assert "OK" in text and "vehicle family-ev: 77 kWh" in text and "charger wallbox-garage" in text
    assert "WARNING" not in text
    monkeypatch.delenv("V2X_CHARGER_PASSWORD_HASH")
    assert main(["check-config", str(EXAMPLES[0])], out=out) == 2
    assert "V2X_CHARGER_PASSWORD_HASH is not set" in capsys.readouterr().err


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


def test_outage_max_age_defaults_to_15_minutes_and_null_never_expires() -> None:
    tree = example_tree()
    assert parse_config(tree, env={}).grid_signals.outage_max_age_s == 900
    tree["grid_signals"]["outage_max_age_s"] = None
    assert parse_config(tree, env={}).grid_signals.outage_max_age_s is None
    tree["grid_signals"]["outage_max_age_s"] = 0
    with pytest.raises(ConfigError) as raised:
        parse_config(tree, env={})
    assert "grid_signals.outage_max_age_s" in str(raised.value)


def test_a_key_given_twice_is_refused_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """YAML keeps the last of two equal keys without a word: a second reserve would lower the floor,
    a second meters block would drop the grid meter."""
    text = EXAMPLES[0].read_text()
    text = text.replace(
        "    reserve:\n      km: 80", "    reserve: {percent: 30}\n    reserve:\n      km: 80", 1
    )
    text += "\nmeters:\n  - {id: heat, role: home, topic: heat/w}\n"
    lines = text.splitlines()
    first_reserve = lines.index("    reserve: {percent: 30}") + 1
    first_meters, second_meters = [i + 1 for i, line in enumerate(lines) if line == "meters:"]
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert [str(issue) for issue in info.value.issues] == [
        f"line {first_reserve + 1}: key 'reserve' given twice (first on line {first_reserve}) "
        "(keep one of them: YAML would silently use only the last)",
        f"line {second_meters}: key 'meters' given twice (first on line {first_meters}) "
        "(keep one of them: YAML would silently use only the last)",
    ]
    assert main(["check-config", str(path)]) == 2
    assert f"  line {second_meters}: key 'meters' given twice" in capsys.readouterr().err


def test_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    """``<<: *base`` then a key of its own is how YAML reuses a block: not a key given twice."""
    path = tmp_path / "merge.yaml"
    path.write_text(
        "site: {grid: {import_limit_kw: 11}}\n"
        "tariff: {import: {static_price_per_kwh: 0.3}}\n"
        "vehicles:\n"
        "  - &car {id: a, usable_capacity_kwh: 60, max_charge_kw: 7}\n"
        "  - {<<: *car, id: b, max_charge_kw: 11}\n"
    )
    cfg = load_config(path, env={})
    assert [(v.id, v.usable_capacity_kwh, v.max_charge_kw) for v in cfg.vehicles] == [
        ("a", 60, 7),
        ("b", 60, 11),
    ]


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, "fallback"), ({"V2X_NAME": ""}, "fallback"), ({"V2X_NAME": "set"}, "set")],
    ids=["unset", "empty", "set"],
)
def test_env_default_applies_when_the_variable_is_unset_or_empty(env: dict[str, str], expected: str) -> None:
    data = broken(_set(["site", "name"], "${V2X_NAME:-fallback}"))
    assert parse_config(data, env=env).site.name == expected


def test_env_without_default_set_but_empty_is_empty() -> None:
    data = broken(_set(["mqtt", "username"], "${V2X_USER}"))
    assert parse_config(data, env={"V2X_USER": ""}).mqtt.username is None  # empty: no username


def _docs_mqtt_meters() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The meters block of docs/mqtt.md and the grid meters it offers in place of the first."""
    docs = (ROOT / "docs" / "mqtt.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", docs, re.DOTALL)
    meters = next(yaml.safe_load(b)["meters"] for b in blocks if b.startswith("meters:\n"))
    others = next(yaml.safe_load(b) for b in blocks if b.startswith("  - {id: grid, role: grid"))
    return meters, others


def test_docs_mqtt_meters_block_is_a_valid_config() -> None:
    meters, others = _docs_mqtt_meters()
    cfg = parse_config(broken(_set(["meters"], meters)), env={})
    assert [m.id for m in cfg.meters] == ["grid", "pv", "heatpump", "ev-soc", "ev-v2l"]
    assert others and all(m["role"] == "grid" for m in others)
    for grid in others:
        parse_config(broken(_set(["meters"], [grid, *meters[1:]])), env={})
