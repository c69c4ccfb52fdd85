"""``v2x prices`` against a real HTTP server serving the aWATTar format: the table, ``--json``, the exit
codes and a failing provider."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.cli import main
from tests.http_stub import Answer, HttpStub, Seen, http_stub
from tests.test_sources_daemon import open_meteo

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = ROOT / "configs" / "minimal.yaml"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def awattar(value_eur_per_mwh: float, *, hours: int | None = None) -> Any:
    """aWATTar's ``/v1/marketdata`` answer for the asked range, hourly (the format of
    https://www.awattar.de/services/api, as in ``controller/sources/prices/awattar.py``)."""

    def answer(seen: Seen) -> Answer:
        start_ms, end_ms = int(seen.query["start"]), int(seen.query["end"])
        count = (end_ms - start_ms) // 3_600_000 if hours is None else hours
        data = [
            {
                "start_timestamp": start_ms + i * 3_600_000,
                "end_timestamp": start_ms + (i + 1) * 3_600_000,
                "marketprice": value_eur_per_mwh,
                "unit": "Eur/MWh",
            }
            for i in range(count)
        ]
        return Answer(200, json.dumps({"object": "list", "data": data, "url": "/de/v1/marketdata"}).encode())

    return answer


def write_config(tmp_path: Path, stub: HttpStub, backup: str | None = None, **price: Any) -> Path:
    tree = yaml.safe_load(MINIMAL.read_text())
    tree["site"].update(timezone="UTC", currency="EUR")
    imports: dict[str, Any] = {
        "provider": {"type": "awattar", "base_url": f"{stub.url}/main"},
        "retail": {"energy_tax_per_kwh": 0.10, "vat_percent": 10},
        **price,
    }
    if backup is not None:
        imports["backup_provider"] = {"type": "awattar", "base_url": f"{stub.url}/{backup}"}
    tree["tariff"]["import"] = imports
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["prices", *args], out=out)
    return code, out.getvalue()


def test_prints_market_and_retail_prices_per_slot(tmp_path: Path) -> None:
    with http_stub() as stub:
        stub.routes["/main/v1/marketdata"] = awattar(100.0)
        code, text = run("--config", str(write_config(tmp_path, stub)))
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0].endswith(": prices in EUR per kWh, times in UTC")
    assert lines[1].startswith("ok     tariff.import.provider (awattar): 48 slots, ")
    today = dt.datetime.now(dt.UTC).date()
    # 100 EUR/MWh = 0.10 per kWh; retail (0.10 + 0.10 tax) x 1.10 VAT = 0.22.
    assert f"  {today:%Y-%m-%d} 00:00-01:00  market   0.1000  retail   0.2200" in lines
    assert len([line for line in lines if "market" in line]) == 48


def test_json_output_holds_the_same(tmp_path: Path) -> None:
    with http_stub() as stub:
        stub.routes["/main/v1/marketdata"] = awattar(-20.0)
        code, text = run("--config", str(write_config(tmp_path, stub)), "--json")
    assert code == 0
    answer = json.loads(text)
    assert answer["ok"] is True and answer["currency"] == "EUR" and answer["timezone"] == "UTC"
    (source,) = answer["sources"]
    assert source["source"] == "tariff.import.provider (awattar)" and source["ok"] and source["slots"] == 48
    first = source["prices"][0]
    assert first["market"] == pytest.approx(-0.02)
    assert first["retail"] == pytest.approx((-0.02 + 0.10) * 1.10)
    assert dt.datetime.fromisoformat(first["start"]) == dt.datetime.combine(
        dt.datetime.now(dt.UTC).date(), dt.time(0), dt.UTC
    )


def test_a_failing_provider_is_named_with_its_reason_and_exits_1(tmp_path: Path) -> None:
    with http_stub() as stub:
        stub.routes["/main/v1/marketdata"] = awattar(80.0)
        stub.routes["/down/v1/marketdata"] = Answer(503, b'{"error": "maintenance"}')
        code, text = run("--config", str(write_config(tmp_path, stub, backup="down")))
        assert {s.path for s in stub.seen} == {"/main/v1/marketdata", "/down/v1/marketdata"}
    assert code == 1
    assert "ok     tariff.import.provider (awattar): 48 slots" in text
    assert "error  tariff.import.backup_provider (awattar): HTTP 503: maintenance" in text


def test_a_provider_without_prices_for_today_exits_1(tmp_path: Path) -> None:
    with http_stub() as stub:
        stub.routes["/main/v1/marketdata"] = awattar(80.0, hours=0)
        code, text = run("--config", str(write_config(tmp_path, stub)), "--json")
    assert code == 1
    assert json.loads(text)["sources"][0]["slots"] == 0


def test_pv_sources_are_fetched_with_pv_only(tmp_path: Path) -> None:
    with http_stub() as stub:
        stub.routes["/main/v1/marketdata"] = awattar(100.0)
        stub.routes["/v1/forecast"] = open_meteo
        path = write_config(tmp_path, stub)
        tree = yaml.safe_load(path.read_text())
        array = {"tilt_deg": 30, "azimuth_deg": 180, "kwp": 4, "losses_percent": 14}
        pv = {
            "type": "open_meteo",
            "latitude": 52.0,
            "longitude": 13.0,
            "arrays": [array],
            "base_url": stub.url,
        }
        tree["forecast"] = {"pv_sources": [pv]}
        path.write_text(yaml.safe_dump(tree))
        code, text = run("--config", str(path))
        assert not [s for s in stub.seen if s.path == "/v1/forecast"]  # not without --pv
        code, text = run("--config", str(path), "--pv")
    assert code == 0, text
    assert "ok     forecast.pv_sources[0] (open_meteo): " in text
    # 500 W/m² on 4 kWp with 14 % losses: 1720 W in every window.
    assert "      1720 W" in text
    code, text = run("--config", str(path), "--pv", "--json")  # the stub is gone: an error, exit 1
    answer = json.loads(text)
    assert code == 1 and not answer["ok"]
    assert [s["ok"] for s in answer["sources"]] == [False, False]


def test_a_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with http_stub() as stub:
        path = write_config(tmp_path, stub, static_price_per_kwh="cheap")
        code, _ = run("--config", str(path))
        assert not stub.seen
    assert code == 2
    assert "tariff.import.static_price_per_kwh" in capsys.readouterr().err


# ------------------------------------------------------------------ check-config on sources


def check_config(
    tmp_path: Path, imports: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    tree = yaml.safe_load(MINIMAL.read_text())
    tree["site"]["currency"] = "EUR"
    tree["tariff"]["import"] = imports
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(tree))
    code = main(["check-config", str(path)], out=io.StringIO())
    return code, capsys.readouterr().err


OCTOPUS = {"type": "octopus", "product_code": "AGILE-24-10-01", "region": "C", "exchange_rate": 1.17}


def test_check_config_refuses_retail_on_a_provider_whose_prices_include_taxes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = check_config(
        tmp_path, {"provider": OCTOPUS, "retail": {"energy_tax_per_kwh": 0.1, "vat_percent": 5}}, capsys
    )
    assert code == 2
    assert "tariff.import.retail: octopus prices already include taxes and fees" in err
    assert "remove retail" in err


def test_check_config_refuses_a_backup_equal_to_the_provider(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    awattar_de = {"type": "awattar", "country": "DE"}
    code, err = check_config(tmp_path, {"provider": awattar_de, "backup_provider": dict(awattar_de)}, capsys)
    assert code == 2
    assert "tariff.import.backup_provider: is the same source as provider" in err
    code, _ = check_config(
        tmp_path, {"provider": awattar_de, "backup_provider": {"type": "awattar", "country": "AT"}}, capsys
    )
    assert code == 0


def test_check_config_asks_for_an_exchange_rate_where_the_currency_is_known(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    without_rate = {k: v for k, v in OCTOPUS.items() if k != "exchange_rate"}
    code, err = check_config(tmp_path, {"provider": without_rate}, capsys)
    assert code == 2
    assert "tariff.import.provider.exchange_rate: octopus prices are in GBP" in err
    assert "set exchange_rate (EUR per GBP) on tariff.import.provider" in err
    eds = {"type": "energi_data_service", "area": "DK1", "currency": "DKK"}
    code, err = check_config(tmp_path, {"provider": eds}, capsys)
    assert code == 2 and "energi_data_service prices are in DKK" in err
    code, _ = check_config(tmp_path, {"provider": {**eds, "currency": "EUR"}}, capsys)
    assert code == 0
    code, _ = check_config(tmp_path, {"provider": OCTOPUS}, capsys)
    assert code == 0
