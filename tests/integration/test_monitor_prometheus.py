"""Debian's Prometheus on 127.0.0.1 loads the generated rules and scrapes our metrics.

The first test scrapes a tiny exporter in the test (the drift gauge the scheduler sets) and sees the
generated drift alert go pending in Prometheus. The second scrapes a real ``modelyard serve``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from modelyard.config import Settings
from modelyard.deploy.prometheus import write_prometheus
from modelyard.monitor.alerts import rules_for
from tests.conftest import generate_houses, run_cli, train_and_publish
from tests.integration.monitor_helpers import json_rows
from tests.manifests import manifest_of
from tests.support import Server, free_port, wait_until

REGRESSOR = {"task": "regression", "output_schema": {"task": "regression", "min": 50000, "max": 900000}}


def wait_for_prometheus(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Prometheus answers errors and half-built bodies while it starts: those count as "not yet"."""
    return wait_until(check, timeout, what, interval=0.25, retry_on=(httpx.HTTPError, KeyError, ValueError))


@contextmanager
def prometheus(folder: Path) -> Iterator[str]:
    """Run Debian's Prometheus on ``folder/prometheus.yml`` with 1 s scrapes; yield its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Debian's prometheus is missing: apt-get install -y prometheus (.ci/run does)")
    config = yaml.safe_load((folder / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (folder / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_prometheus(
            lambda: proc.poll() is None and httpx.get(f"{url}/-/ready", timeout=2).status_code == 200,
            60,
            "prometheus to be ready",
        )
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(url: str, promql: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
    return body["data"]["result"]


def test_prometheus_loads_the_rules_and_the_drift_alert_goes_pending(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    psi = Gauge("modelyard_drift_psi", "PSI", ["model", "version", "feature"], registry=registry)
    psi.labels("house-prices", "3", "area_sqm").set(0.7)
    psi.labels("house-prices", "3", "floors").set(0.01)
    exporter_port = free_port()
    server, thread = start_http_server(exporter_port, addr="127.0.0.1", registry=registry)
    try:
        write_prometheus(
            tmp_path, "house-prices", rules_for(manifest_of(REGRESSOR)), targets=[f"127.0.0.1:{exporter_port}"]
        )
        with prometheus(tmp_path) as url:
            groups = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
            assert {r["name"] for g in groups for r in g["rules"]} == {
                "ModelyardPredictionOutOfRange",
                "ModelyardInputDrift",
                "ModelyardPredictionDrift",
                "ModelyardErrorRate",
                "ModelyardLatencyP95",
                "ModelyardLogBacklogGrowing",
                "ModelyardLogWriteFailures",
            }

            def drift_alerts() -> list[dict[str, Any]]:
                alerts = httpx.get(f"{url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
                return [a for a in alerts if a["labels"]["alertname"] == "ModelyardInputDrift"]

            (alert,) = wait_for_prometheus(drift_alerts, 60, "the drift alert in Prometheus")
            assert alert["state"] in {"pending", "firing"}
            assert alert["labels"]["feature"] == "area_sqm" and alert["labels"]["version"] == "3"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_prometheus_scrapes_a_running_modelyard_serve(
    sqlite_settings: Settings, house_spec: Path, tmp_path: Path
) -> None:
    """Two workers (multiprocess metrics) and the server's own monitor schedule every second: requests,
    predictions, input counters, alias and drift series of our model all reach Prometheus."""
    train_and_publish(house_spec, sqlite_settings)
    server = Server(sqlite_settings, tmp_path / "serve.log", workers=2, MODELYARD_MONITOR_INTERVAL="1",
                    MODELYARD_LOG_FLUSH_INTERVAL="0.1")
    with server:
        rows = json_rows(generate_houses(20, seed=5).drop(columns=["price"]))
        for _ in range(3):
            r = httpx.post(f"{server.url}/v1/models/house-prices/predict", json={"instances": rows}, timeout=30)
            assert r.status_code == 200, r.text
        out = tmp_path / "prom"
        result = run_cli(
            "deploy",
            "prometheus",
            "house-prices",
            "--out",
            str(out),
            "--target",
            f"127.0.0.1:{server.port}",
            settings=sqlite_settings,
        )
        assert result.returncode == 0, result.stderr
        with prometheus(out) as url:
            series = wait_for_prometheus(
                lambda: query(url, 'modelyard_requests_total{model="house-prices"}'),
                60,
                "our model's request counter in Prometheus",
            )
            assert sum(float(s["value"][1]) for s in series) == 3  # both workers' requests, counted once
            assert series[0]["metric"]["version"] == "1" and series[0]["metric"]["route"] == "primary"
            predicted = wait_for_prometheus(
                lambda: query(url, 'modelyard_prediction_value_count{model="house-prices",route="primary"}'),
                30,
                "the prediction histogram",
            )
            assert float(predicted[0]["value"][1]) == 60
            missing = wait_for_prometheus(
                lambda: query(url, 'modelyard_input_missing_total{model="house-prices",feature="year_renovated"}'),
                30,
                "the missing-input counter",
            )
            assert float(missing[0]["value"][1]) == sum(row["year_renovated"] is None for row in rows) * 3
            assert (
                wait_for_prometheus(
                    lambda: query(url, 'modelyard_alias_version{model="house-prices",alias="production"}'),
                    30,
                    "the alias gauge",
                )[0]["value"][1]
                == "1"
            )
            drift = wait_for_prometheus(
                lambda: query(url, 'modelyard_drift_psi{model="house-prices",version="1"}'),
                60,
                "the drift gauges the server's monitor sets",
            )
            features = [s["metric"]["feature"] for s in drift]
            assert "area_sqm" in features and "__prediction__" in features
            assert len(features) == len(set(features))  # one series per feature: one worker evaluates
