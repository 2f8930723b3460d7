"""The monitor inside a real ``modelyard serve`` (two uvicorn workers, PostgreSQL): traffic sent over HTTP
fires and resolves alerts at a real webhook receiver, once, and ``/metrics`` counts what the requests held.

The server runs its schedule every second over a window of a few seconds (settings), so shifted traffic
ages out of the window quickly and the resolve follows while the test waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select

import modelyard
from modelyard.config import Settings
from modelyard.monitor.alerts import save_overrides
from modelyard.monitor.scheduler import LEASE
from modelyard.registry import Registry
from modelyard.registry import tables as t
from tests.conftest import generate_houses
from tests.integration.monitor_helpers import Receiver, json_rows, webhook_receiver
from tests.integration.serving import fresh_pg_database
from tests.support import Server, served_model, wait_until

pytestmark = pytest.mark.postgres
WINDOW_SECONDS = 8
PREDICT = "/v1/models/house-prices/predict"


@dataclass
class Monitored:
    server: Server
    settings: Settings
    hook: Receiver


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    folder = tmp_path_factory.mktemp("monitor_serve")
    with fresh_pg_database() as url, webhook_receiver() as hook:
        settings = Settings(home=folder / ".modelyard", database_url=url)
        with served_model(folder, settings, workers=2, MODELYARD_MONITOR_INTERVAL="1",
                          MODELYARD_MONITOR_WINDOW=f"{WINDOW_SECONDS}s", MODELYARD_ALERT_WEBHOOK=hook.url,
                          MODELYARD_LOG_FLUSH_INTERVAL="0.1") as server:
            yield Monitored(server, settings, hook)
        (lease,) = lease_rows(settings)
        assert not lease["active"], "a stopped server gives the monitor lease up for the next replica"


def lease_rows(settings: Settings) -> list[dict[str, Any]]:
    with Registry(settings).engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(t.leases).where(t.leases.c.name == LEASE)).mappings()]


def parent_pid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def rows_of(n: int, seed: int, shift: float = 0.0) -> list[dict[str, Any]]:
    return json_rows(generate_houses(n, seed=seed, shift=shift).drop(columns=["price"]))


def send(server: Server, rows: list[dict[str, Any]], batch: int = 25) -> None:
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(rows), batch):
            r = client.post(server.url + PREDICT, json={"instances": rows[start : start + batch]})
            assert r.status_code == 200, r.text


def send_until(server: Server, done: Callable[[], bool], timeout: float, what: str, *, shift: float = 0.0,
               rows_per_second: int = 250) -> None:
    """Keep normal (or shifted) traffic flowing, about ``rows_per_second``, until ``done()``."""
    deadline = time.monotonic() + timeout
    seed = 1000
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{server.log()[-3000:]}")
        seed += 1
        send(server, rows_of(rows_per_second // 5, seed, shift))
        time.sleep(0.2)


def bodies(hook: Receiver, rule: str, status: str, feature: str | None = None) -> list[dict[str, Any]]:
    received = list(hook.bodies)  # a copy, without the lock: Receiver.wait_for holds it around predicates
    return [b for b in received if b["rule"] == rule and b["status"] == status
            and (feature is None or b["feature"] == feature)]


def alert_rows(settings: Settings, rule: str) -> list[dict[str, Any]]:
    with Registry(settings).engine.connect() as conn:
        query = select(t.alerts).where(t.alerts.c.rule == rule).order_by(t.alerts.c.id)
        return [dict(r) for r in conn.execute(query).mappings()]


def test_shifted_traffic_fires_the_drift_alert_once_and_normal_traffic_resolves_it(monitored: Monitored) -> None:
    server, hook = monitored.server, monitored.hook
    send(server, rows_of(400, seed=21, shift=0.6))
    hook.wait_for(lambda _: bool(bodies(hook, "input_drift", "firing", "area_sqm")), timeout=60)
    (fired,) = bodies(hook, "input_drift", "firing", "area_sqm")
    assert fired["model"] == "house-prices" and fired["model_version"] == 1
    assert fired["alerts"][0]["labels"] == {"alertname": "modelyard_input_drift", "model": "house-prices",
                                            "version": "1", "rule": "input_drift", "severity": "warning",
                                            "feature": "area_sqm"}
    assert fired["value"] > 0.2 and "area_sqm" in fired["message"]
    assert not bodies(hook, "input_drift", "firing", "neighborhood")  # the generator shifts sizes, not places

    send_until(server, lambda: bool(bodies(hook, "input_drift", "resolved", "area_sqm")), 90,
               "the drift alert to resolve once the shifted rows left the window")
    (resolved,) = bodies(hook, "input_drift", "resolved", "area_sqm")
    assert resolved["value"] < 0.2 and "back within the limit" in resolved["message"]
    # two workers each run the schedule: one episode, one message each way (the alert book keeps the state;
    # the lease lets one worker of the two evaluate, so they never race on it)
    assert len(bodies(hook, "input_drift", "firing", "area_sqm")) == 1
    (lease,) = lease_rows(monitored.settings)
    holder_pid = int(lease["holder"].split(":")[1])
    assert lease["active"] and parent_pid(holder_pid) == server.proc.pid  # a worker of this server holds it
    # the notifier records a delivery after the webhook's POST returns, so the row may lag the body we received
    episodes = wait_until(
        lambda: [a for a in alert_rows(monitored.settings, "input_drift")
                 if a["details"]["feature"] == "area_sqm" and "resolved" in a["details"].get("notified", {})],
        10, "the resolved message's delivery to be recorded")
    assert len(episodes) == 1 and episodes[0]["status"] == "resolved" and episodes[0]["resolved_at"] is not None
    assert episodes[0]["details"]["notified"] == {"firing": True, "resolved": True}


def test_predictions_outside_the_expected_range_fire_that_alert_with_model_and_version(
    monitored: Monitored,
) -> None:
    server, hook, settings = monitored.server, monitored.hook, monitored.settings
    registry = Registry(settings)
    trained_max = registry.get_version("house-prices", 1).manifest.output_schema.max
    typical = modelyard.load("house-prices", settings=settings).predict(rows_of(400, seed=3))
    save_overrides(registry.engine, "house-prices", {"prediction_range": {"high": float(np.median(typical))}})
    try:
        send_until(server, lambda: bool(bodies(hook, "prediction_range", "firing")), 60,
                   "the prediction-range alert")
    finally:  # back to the range the bundle learned: the same traffic is within it
        save_overrides(registry.engine, "house-prices", {"prediction_range": {"high": trained_max}})
    (fired,) = bodies(hook, "prediction_range", "firing")
    assert fired["model"] == "house-prices" and fired["model_version"] == 1
    assert fired["alerts"][0]["labels"]["version"] == "1" and fired["alerts"][0]["labels"]["severity"] == "critical"
    assert fired["message"].startswith("house-prices v1: ") and "outside the expected range" in fired["message"]
    assert fired["value"] > 0.2  # about half the predictions are above the median
    (row,) = alert_rows(settings, "prediction_range")
    assert row["model"] == "house-prices" and row["version"] == 1
    send_until(server, lambda: bool(bodies(hook, "prediction_range", "resolved")), 60,
               "the prediction-range alert to resolve")


def test_metrics_of_both_workers_count_every_prediction_and_every_odd_input(monitored: Monitored) -> None:
    server = monitored.server
    labels = {"model": "house-prices", "version": "1", "route": "primary"}
    schema = modelyard.load("house-prices", settings=monitored.settings).schema
    numeric = [c for c in schema.columns if c.kind == "numeric"]
    categorical = [c for c in schema.columns if c.kind == "categorical"]
    rows = rows_of(300, seed=77, shift=0.8)  # bigger houses: some sizes beyond anything seen in training
    rows[0]["neighborhood"] = "Atlantis"  # a category never seen in training
    expected_missing = {c.name: sum(r[c.name] is None for r in rows) for c in schema.columns}
    expected_out = {c.name: sum(r[c.name] is not None and not c.min <= r[c.name] <= c.max for r in rows)
                    for c in numeric}
    expected_out |= {c.name: sum(r[c.name] is not None and str(r[c.name]) not in c.categories for r in rows)
                     for c in categorical}
    assert expected_out["area_sqm"] > 0 and expected_out["neighborhood"] == 1

    def snapshot() -> dict[str, float]:
        out = {"predictions": server.metric("modelyard_prediction_value_count", **labels)}
        for c in schema.columns:
            out[f"missing:{c.name}"] = server.metric("modelyard_input_missing_total", **labels, feature=c.name)
            out[f"out:{c.name}"] = server.metric("modelyard_input_out_of_range_total", **labels, feature=c.name)
        return out

    before = snapshot()
    send(server, rows[:100], batch=5)  # small requests: counted from the request's rows
    send(server, rows[100:], batch=200)  # a large one: counted from the validated frame
    after = snapshot()
    assert after["predictions"] - before["predictions"] == len(rows)
    for c in schema.columns:
        assert after[f"missing:{c.name}"] - before[f"missing:{c.name}"] == expected_missing[c.name], c.name
        assert after[f"out:{c.name}"] - before[f"out:{c.name}"] == expected_out[c.name], c.name
    drift = [line for line in httpx.get(server.url + "/metrics").text.splitlines()
             if line.startswith('modelyard_drift_psi{feature="area_sqm"')]
    assert len(drift) == 1 and 'version="1"' in drift[0]  # one series across workers, no pid label
