"""Alert rules: defaults from the bundle, overrides, verdicts, and the same rules for Prometheus."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from modelyard.deploy.grafana import grafana_dashboard
from modelyard.deploy.prometheus import alerting_rules, write_prometheus
from modelyard.errors import BadRequestError
from modelyard.monitor.alert_state import Transition
from modelyard.monitor.alerts import DEFAULT_RULES, evaluate_rules, rules_for
from modelyard.monitor.notify import alert_payload
from modelyard.monitor.window import Window
from tests.manifests import manifest_of

DATA = Path(__file__).parent / "data"
REGRESSOR = {"task": "regression", "output_schema": {"task": "regression", "min": 50000, "max": 900000}}
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install -y prometheus (.ci/run does)")
    return path


def test_rules_take_the_range_from_the_bundle_and_overrides_win() -> None:
    rules = rules_for(manifest_of(REGRESSOR))
    assert rules["prediction_range"]["low"] == 50000 and rules["prediction_range"]["high"] == 900000
    assert rules["input_drift"]["psi"] == DEFAULT_RULES["input_drift"]["psi"]
    tuned = rules_for(
        manifest_of({**REGRESSOR, "monitoring": {"rules": {"latency": {"p95_ms": 80}}}}),
        {"input_drift": {"psi": 0.4}, "prediction_range": {"high": 1e6}},
    )
    assert tuned["input_drift"]["psi"] == 0.4 and tuned["latency"]["p95_ms"] == 80
    assert tuned["prediction_range"]["high"] == 1e6 and tuned["prediction_range"]["low"] == 50000
    classifier = rules_for(
        manifest_of({"task": "classification", "output_schema": {"task": "classification", "classes": [0, 1]}})
    )
    assert classifier["prediction_range"]["classes"] == ["0", "1"]
    with pytest.raises(BadRequestError, match="unknown alert rule 'drfit'"):
        rules_for(manifest_of(REGRESSOR), {"drfit": {"psi": 1}})


def test_verdicts_need_enough_traffic() -> None:
    rules = rules_for(manifest_of(REGRESSOR))
    quiet = Window("m", 1, NOW - timedelta(hours=1), NOW, requests=3, errors=3, predictions=[2e6] * 3)
    verdicts = {f.rule: f.firing for f in evaluate_rules(rules, quiet, None)}
    assert verdicts == {"prediction_range": None, "error_rate": None, "latency": None, "performance": None}
    busy = Window(
        "m",
        1,
        NOW - timedelta(hours=1),
        NOW,
        requests=100,
        errors=10,
        latencies_ms=[600.0] * 100,
        predictions=[1e5] * 95 + [2e6] * 5,
    )
    found = {f.rule: f for f in evaluate_rules(rules, busy, None)}
    assert found["error_rate"].firing and found["error_rate"].value == 0.1
    assert found["latency"].firing and found["prediction_range"].firing
    assert found["prediction_range"].details["examples"] == [2e6] * 5
    calm = Window(
        "m", 1, NOW - timedelta(hours=1), NOW, requests=100, latencies_ms=[5.0] * 100, predictions=[1e5] * 100
    )
    assert not any(f.firing for f in evaluate_rules(rules, calm, None))


def test_webhook_body_is_alertmanager_shaped() -> None:
    alert = {
        "id": 7,
        "model": "m",
        "version": 3,
        "rule": "input_drift",
        "value": 0.5,
        "threshold": 0.2,
        "message": "m v3: input 'x' drifted",
        "started_at": NOW,
        "resolved_at": None,
        "details": {"feature": "x", "key": "input_drift:x", "severity": "warning"},
    }
    body = alert_payload(Transition("firing", alert))
    assert body["status"] == "firing" and body["version"] == "4" and body["model_version"] == 3
    (a,) = body["alerts"]
    assert a["labels"] == {
        "alertname": "modelyard_input_drift",
        "model": "m",
        "version": "3",
        "rule": "input_drift",
        "severity": "warning",
        "feature": "x",
    }
    assert a["startsAt"] == NOW.isoformat() and a["endsAt"].startswith("0001")
    resolved = alert_payload(
        Transition(
            "resolved",
            {
                **alert,
                "status": "resolved",
                "resolved_at": NOW,
                "details": {**alert["details"], "resolve_message": "ok"},
            },
        )
    )
    assert resolved["message"] == "ok" and resolved["alerts"][0]["fingerprint"] == a["fingerprint"]
    json.dumps(body)


def test_generated_rules_pass_promtool_check(tmp_path: Path) -> None:
    files = write_prometheus(
        tmp_path,
        "house-prices",
        rules_for(manifest_of(REGRESSOR)),
        targets=["127.0.0.1:8000"],
        webhook="http://127.0.0.1:9/hook",
    )
    names = {f.name for f in files}
    assert names == {
        "modelyard-house-prices.rules.yml",
        "prometheus.yml",
        "grafana-house-prices.json",
        "alertmanager.yml",
    }
    check = subprocess.run(
        [promtool(), "check", "rules", str(tmp_path / "modelyard-house-prices.rules.yml")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0 and "SUCCESS: 7 rules found" in check.stdout, check.stdout + check.stderr
    config = subprocess.run(
        [promtool(), "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True
    )
    assert config.returncode == 0, config.stdout + config.stderr
    dashboard = json.loads((tmp_path / "grafana-house-prices.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "modelyard_requests_total",
        "modelyard_request_errors_total",
        "modelyard_drift_psi",
        "modelyard_request_latency_seconds_bucket",
        "modelyard_prediction_value_bucket",
        "modelyard_input_missing_total",
        "modelyard_canary_weight",
        "modelyard_alias_version",
    ):
        assert metric in exprs


def run_promtool_test(folder: Path, rules: dict) -> subprocess.CompletedProcess[str]:
    (folder / "modelyard-house-prices.rules.yml").write_text(
        yaml.safe_dump(alerting_rules("house-prices", rules))
    )
    shutil.copy(DATA / "promtool_rules_test.yml", folder / "test.yml")
    return subprocess.run(
        [promtool(), "test", "rules", "test.yml"], cwd=folder, capture_output=True, text=True
    )


def test_rules_fire_on_synthetic_series(tmp_path: Path) -> None:
    result = run_promtool_test(tmp_path, rules_for(manifest_of(REGRESSOR)))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_promtool_test_fails_when_thresholds_differ(tmp_path: Path) -> None:
    """The test file pins the thresholds: rules generated with an override no longer fire as it expects."""
    result = run_promtool_test(tmp_path, rules_for(manifest_of(REGRESSOR), {"input_drift": {"psi": 0.9}}))
    assert result.returncode != 0 and "ModelyardInputDrift" in result.stdout + result.stderr


def test_grafana_dashboard_draws_the_same_thresholds() -> None:
    rules = rules_for(manifest_of(REGRESSOR), {"latency": {"p95_ms": 250}})
    panels = {p["title"]: p for p in grafana_dashboard("m", rules)["panels"]}
    steps = panels["Latency"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == 0.25


LOG_BACKLOG_TEST = """
rule_files: [modelyard-house-prices.rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'modelyard_log_backlog_records{instance="growing"}'
        values: '0+200x40'
      - series: 'modelyard_log_backlog_records{instance="flat"}'
        values: '5000x40'
      - series: 'modelyard_log_write_failures_total{instance="growing"}'
        values: '0x10 3x30'
    alert_rule_test:
      - eval_time: 30m
        alertname: ModelyardLogBacklogGrowing
        exp_alerts:
          - exp_labels: {severity: warning, rule: log_backlog, instance: growing}
            exp_annotations:
              summary: "growing: prediction-log backlog growing for 10m (3.3333333333333335 records/s)"
      - eval_time: 12m
        alertname: ModelyardLogWriteFailures
        exp_alerts:
          - exp_labels: {severity: critical, rule: log_write, instance: growing}
            exp_annotations:
              summary: "growing: the prediction log cannot be written (requests refused with 503, or answered unlogged)"
"""


def test_a_growing_log_backlog_alerts_and_a_flat_one_does_not(tmp_path: Path) -> None:
    (tmp_path / "modelyard-house-prices.rules.yml").write_text(
        yaml.safe_dump(alerting_rules("house-prices", rules_for(manifest_of(REGRESSOR))))
    )
    (tmp_path / "test.yml").write_text(LOG_BACKLOG_TEST)
    result = subprocess.run([promtool(), "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
