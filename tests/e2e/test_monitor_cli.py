"""`modelyard monitor` and `modelyard deploy prometheus` as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelyard.config import Settings
from tests.conftest import generate_houses, run_cli, train_and_publish
from tests.integration.monitor_helpers import log_traffic


@pytest.fixture
def drifted_model(sqlite_settings: Settings, house_spec: Path) -> Settings:
    train_and_publish(house_spec, sqlite_settings)
    log_traffic(
        sqlite_settings,
        "house-prices",
        generate_houses(500, seed=3, shift=0.6),
        datetime.now(UTC) - timedelta(minutes=10),
    )
    return sqlite_settings


def test_monitor_json_shows_drift_and_firing_rules(drifted_model: Settings) -> None:
    result = run_cli("monitor", "house-prices", "--window", "1h", "--json", settings=drifted_model)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (v1,) = report["versions"]
    assert v1["version"] == 1 and v1["aliases"] == ["production"] and v1["rows"] == 500
    assert v1["drift"]["features"]["area_sqm"]["psi"] > 0.2
    assert v1["drift"]["features"]["neighborhood"]["psi"] < 0.1
    firing = {(r["rule"], r["feature"]) for r in v1["rules"] if r["status"] == "firing"}
    assert ("input_drift", "area_sqm") in firing and ("prediction_drift", "__prediction__") in firing


def test_monitor_table_html_and_overrides(drifted_model: Settings, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    result = run_cli("monitor", "house-prices", "--html", str(page), settings=drifted_model)
    assert result.returncode == 0, result.stderr
    assert "area_sqm" in result.stdout and "firing" in result.stdout and f"wrote {page}" in result.stdout
    html = page.read_text()
    assert html.count("<svg") >= 17 and "PSI per feature" in html and "area_sqm" in html

    tuned = run_cli(
        "monitor",
        "house-prices",
        "--set",
        "input_drift.psi=5",
        "--set",
        "prediction_drift.enabled=false",
        "--json",
        settings=drifted_model,
    )
    assert tuned.returncode == 0, tuned.stderr
    v1 = json.loads(tuned.stdout)["versions"][0]
    assert v1["thresholds"]["input_drift"]["psi"] == 5
    assert not [r for r in v1["rules"] if r["status"] == "firing" and "drift" in r["rule"]]

    bad = run_cli("monitor", "house-prices", "--set", "nonsense", settings=drifted_model)
    assert bad.returncode == 1 and "RULE.PARAM=VALUE" in bad.stderr


def test_deploy_prometheus_writes_rules_promtool_accepts(drifted_model: Settings, tmp_path: Path) -> None:
    out = tmp_path / "prom"
    result = run_cli(
        "deploy",
        "prometheus",
        "house-prices",
        "--out",
        str(out),
        "--target",
        "10.0.0.5:8000",
        "--webhook",
        "http://127.0.0.1:9/hook",
        settings=drifted_model,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "alertmanager.yml",
        "grafana-house-prices.json",
        "modelyard-house-prices.rules.yml",
        "prometheus.yml",
    ]
    promtool = shutil.which("promtool")
    assert promtool, "apt-get install -y prometheus (.ci/run does)"
    check = subprocess.run(
        [promtool, "check", "config", str(out / "prometheus.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "10.0.0.5:8000" in (out / "prometheus.yml").read_text()
    rules = (out / "modelyard-house-prices.rules.yml").read_text()
    assert 'model="house-prices"' in rules and "ModelyardPredictionOutOfRange" in rules
