"""Drift and out-of-range alerts from logged traffic, delivered to a real webhook on 127.0.0.1."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from modelyard.config import Settings
from modelyard.monitor.alerting import AlertRuleSet
from modelyard.monitor.alerts import save_overrides
from modelyard.monitor.notify import WebhookNotifier
from modelyard.monitor.scheduler import LEASE, Scheduler
from modelyard.predlog import list_records
from modelyard.registry import Registry
from modelyard.registry import tables as t
from modelyard.registry.lease import SqlLease
from tests.conftest import generate_houses, train_and_publish
from tests.integration.monitor_helpers import log_traffic, webhook_receiver

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def scheduler_for(settings: Settings, url: str | None) -> AlertRuleSet:
    """The alert rule set, run directly (``run(now)``): the scheduler's lease is tested on its own below."""
    registry = Registry(settings)

    def records(model, since, until):  # type: ignore[no-untyped-def]
        return list_records(registry.engine, model, since=since, until=until, limit=None)

    notifier = WebhookNotifier(url, backoff=0.01) if url else None
    return AlertRuleSet(registry, records, window=timedelta(minutes=30), notifier=notifier)


def alert_rows(settings: Settings) -> list[dict]:
    with Registry(settings).engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(t.alerts).order_by(t.alerts.c.id)).mappings()]


def test_shifted_traffic_fires_drift_alert_once_then_resolves(
    any_settings: Settings, house_spec: Path
) -> None:
    version = train_and_publish(house_spec, any_settings)
    with webhook_receiver() as hook:
        scheduler = scheduler_for(any_settings, hook.url)
        log_traffic(any_settings, "house-prices", generate_houses(600, seed=21, shift=0.6), T0)
        run = scheduler.run(now=T0 + timedelta(minutes=1))
        assert not run.errors
        fired = {
            tr.alert["details"]["feature"] for tr in run.transitions if tr.alert["rule"] == "input_drift"
        }
        assert "area_sqm" in fired and "neighborhood" not in fired  # the generator shifts size, not places
        hook.wait_for(lambda bodies: any(b["feature"] == "area_sqm" for b in bodies))
        body = next(b for b in hook.bodies if b["feature"] == "area_sqm")
        assert (
            body["status"] == "firing"
            and body["model"] == "house-prices"
            and body["model_version"] == version
        )
        assert body["alerts"][0]["labels"]["alertname"] == "modelyard_input_drift"
        assert body["value"] > 0.2 and "area_sqm" in body["message"]
        sent = len(hook.bodies)
        assert sent == run.delivered and run.failed == 0

        # still shifted a few minutes later: the alert keeps firing but nothing new is sent
        log_traffic(
            any_settings, "house-prices", generate_houses(300, seed=22, shift=0.6), T0 + timedelta(minutes=5)
        )
        again = scheduler.run(now=T0 + timedelta(minutes=6))
        assert again.transitions == [] and len(hook.bodies) == sent
        firing = [a for a in alert_rows(any_settings) if a["status"] == "firing"]
        assert {a["details"]["key"] for a in firing} >= {"input_drift:area_sqm"}
        assert len(firing) == len({a["details"]["key"] for a in firing})  # one row per alert, not per run

        # traffic back to normal (the shifted window has passed): every alert resolves, with a message each
        log_traffic(
            any_settings, "house-prices", generate_houses(600, seed=23, shift=0.0), T0 + timedelta(hours=1)
        )
        back = scheduler.run(now=T0 + timedelta(hours=1, minutes=1))
        assert {tr.status for tr in back.transitions} == {"resolved"}
        hook.wait_for(
            lambda bodies: any(b["status"] == "resolved" and b["feature"] == "area_sqm" for b in bodies)
        )
        resolved = next(b for b in hook.bodies if b["status"] == "resolved" and b["feature"] == "area_sqm")
        assert resolved["alerts"][0]["endsAt"].startswith("2030-01-01T13:01")
        assert all(
            a["status"] == "resolved" and a["resolved_at"] is not None for a in alert_rows(any_settings)
        )
        assert len(hook.bodies) == 2 * sent  # one firing and one resolve message per alert


def test_predictions_out_of_range_alert_names_model_and_version(
    sqlite_settings: Settings, house_spec: Path
) -> None:
    # a linear model extrapolates: much bigger houses than it was trained on get prices beyond any it saw
    spec = (
        house_spec.read_text()
        .replace('"sklearn.ensemble.HistGradientBoostingRegressor"', '"sklearn.linear_model.Ridge"')
        .replace("params = { max_iter = 30, learning_rate = 0.1 }", "params = { alpha = 1.0 }")
    )
    house_spec.write_text(spec)
    version = train_and_publish(house_spec, sqlite_settings)
    high = Registry(sqlite_settings).get_version("house-prices", version).manifest.output_schema.max
    with webhook_receiver() as hook:
        scheduler = scheduler_for(sqlite_settings, hook.url)
        log_traffic(sqlite_settings, "house-prices", generate_houses(300, seed=31, shift=2.5), T0)
        scheduler.run(now=T0 + timedelta(minutes=1))
        hook.wait_for(lambda bodies: any(b["rule"] == "prediction_range" for b in bodies))
    body = next(b for b in hook.bodies if b["rule"] == "prediction_range")
    assert body["status"] == "firing" and body["model"] == "house-prices" and body["model_version"] == version
    labels = body["alerts"][0]["labels"]
    assert labels["model"] == "house-prices" and labels["version"] == str(version)
    assert f"house-prices v{version}" in body["message"] and "outside the expected range" in body["message"]
    row = next(a for a in alert_rows(sqlite_settings) if a["rule"] == "prediction_range")
    assert row["model"] == "house-prices" and row["version"] == version and row["status"] == "firing"
    assert row["value"] > 0.01 and row["details"]["high"] == high and row["details"]["examples"][0] > high


def test_override_in_model_settings_silences_a_rule(sqlite_settings: Settings, house_spec: Path) -> None:
    train_and_publish(house_spec, sqlite_settings)
    save_overrides(
        Registry(sqlite_settings).engine,
        "house-prices",
        {"input_drift": {"psi": 50.0}, "prediction_drift": {"enabled": False}},
    )
    log_traffic(sqlite_settings, "house-prices", generate_houses(600, seed=21, shift=0.6), T0)
    run = scheduler_for(sqlite_settings, None).run(now=T0 + timedelta(minutes=1))
    drift = [f for f in run.findings if f.rule == "input_drift"]
    assert drift and not any(f.firing for f in drift) and all(f.threshold == 50.0 for f in drift)
    assert not any(f.rule == "prediction_drift" for f in run.findings)
    assert run.transitions == []


def test_undelivered_alert_is_retried_on_the_next_run(sqlite_settings: Settings, house_spec: Path) -> None:
    train_and_publish(house_spec, sqlite_settings)
    with webhook_receiver() as hook:
        hook.fail_next = 1000  # the receiver is broken for now
        scheduler = scheduler_for(sqlite_settings, hook.url)
        scheduler.notifier.retries = 2  # type: ignore[union-attr]
        log_traffic(sqlite_settings, "house-prices", generate_houses(600, seed=21, shift=0.6), T0)
        first = scheduler.run(now=T0 + timedelta(minutes=1))
        assert first.delivered == 0 and first.failed == len(first.transitions) > 0
        assert hook.attempts == 3 * len(first.transitions)  # each one tried 1 + 2 times
        hook.fail_next = 1  # recovers after one more 503: the retry with backoff gets through
        second = scheduler.run(now=T0 + timedelta(minutes=2))
        assert second.transitions == [] and second.delivered == first.failed and second.failed == 0
        assert {b["feature"] for b in hook.bodies} == {
            tr.alert["details"]["feature"] for tr in first.transitions
        }
        third = scheduler.run(now=T0 + timedelta(minutes=3))
        assert third.delivered == 0  # delivered ones are not sent again


@pytest.mark.postgres
def test_only_the_lease_holder_evaluates(pg_settings: Settings, house_spec: Path) -> None:
    train_and_publish(house_spec, pg_settings)
    engine = Registry(pg_settings).engine

    def scheduler(holder: str) -> Scheduler:
        return Scheduler(SqlLease(engine, LEASE, holder=holder, ttl=1.0), [scheduler_for(pg_settings, None)])

    a, b = scheduler("a"), scheduler("b")
    first = a.run_once(now=T0)
    assert first.skipped is None and "alerts" in first.results
    standby = b.run_once(now=T0)
    assert standby.skipped and standby.results == {}
    deadline = time.monotonic() + 30  # a stops renewing: its lease expires and b takes over
    while (taken := b.run_once(now=T0)).skipped:
        assert time.monotonic() < deadline, "b never took the expired lease over"
        time.sleep(0.05)
    assert "alerts" in taken.results
    assert a.run_once(now=T0).skipped
