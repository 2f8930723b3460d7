"""Retraining on a trigger: an alert retrains through the gates and a canary to production; a broken candidate
stops at the differential gate and never serves; a budget stops a slow fit; a windowed query reads its window.

A linear model keeps each fit to milliseconds; the watcher and the rule sets are run directly (``run(now)``),
not through timers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from modelyard.checks import BenchmarkConfig, Tolerances, gate_factory
from modelyard.config import Settings
from modelyard.monitor.alerting import AlertRuleSet
from modelyard.monitor.alerts import save_overrides
from modelyard.pipeline import load_spec, train
from modelyard.pipeline.reproduce import reproduce
from modelyard.predlog import window_source
from modelyard.registry import Registry
from modelyard.rollout import (
    CanaryRuleSet,
    RetrainRuleSet,
    Trigger,
    WatchRules,
    retrain,
    set_retrain_config,
)
from modelyard.rollout.retrain import alert_actions
from tests.conftest import generate_houses
from tests.integration.monitor_helpers import log_traffic
from tests.rollout_helpers import MODEL, house_spec_folder, publish, train_bundle

LINEAR = 'estimator = "sklearn.linear_model.Ridge"\nparams = { alpha = 1.0 }'
HIST = 'estimator = "sklearn.ensemble.HistGradientBoostingRegressor"\nparams = { max_iter = 30, learning_rate = 0.1 }'
GATES = gate_factory(tolerances=Tolerances(max_slowdown=5.0),
                     bench_config=BenchmarkConfig(latency_calls=40, throughput_rows=2000, throughput_rounds=1))


def linear(spec: str) -> str:
    return spec.replace(HIST, LINEAR)


@pytest.fixture(scope="module")
def production_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("retrain")
    return train_bundle(house_spec_folder(root / "spec", edit=linear), root / "bundle")


def _kinds(registry: Registry) -> list[tuple[str, str | None, str | None]]:
    return [(e.kind, e.alias, e.actor) for e in reversed(registry.events(MODEL))]


@pytest.mark.postgres
def test_drift_alert_retrains_through_the_gates_and_a_canary_to_production(
        pg_settings: Settings, production_bundle: Path) -> None:
    registry = Registry(pg_settings)
    v1 = publish(pg_settings, production_bundle, alias="production")
    save_overrides(registry.engine, MODEL, {"input_drift": {"action": "retrain"}})
    set_retrain_config(registry, MODEL, canary_weight=0.25, promote_after=0)
    now = datetime.now(UTC)
    log_traffic(pg_settings, f"{MODEL}@production", generate_houses(600, seed=21, shift=0.6), now)

    alerts = AlertRuleSet(registry, window_source(registry.engine), window=timedelta(minutes=30),
                          actions=alert_actions(registry))
    fired = alerts.run(now=now + timedelta(seconds=1))
    assert (MODEL, "input_drift", "retrain") in fired.actions, fired.errors
    retrained = RetrainRuleSet(registry, GATES, every=1).run(now=now + timedelta(seconds=2))
    (result,) = retrained.results
    assert result.outcome == "canary", result.reasons
    assert result.trigger.actor == "alert:input_drift" and result.gates and result.gates["passed"]
    v2 = result.version
    canary = registry.aliases(MODEL)["canary"]
    assert (canary.version, canary.weight) == (v2, 0.25)
    assert RetrainRuleSet(registry, GATES, every=1).run().results == []  # the request was claimed once

    log_traffic(pg_settings, f"{MODEL}@canary", generate_houses(30, seed=5), datetime.now(UTC),
                per_request=1, route="canary")
    watched = CanaryRuleSet(registry, WatchRules(min_requests=20)).run(now=datetime.now(UTC) + timedelta(seconds=1))
    assert watched.promoted == [MODEL] and watched.rolled_back == []
    assert registry.aliases(MODEL)["production"].version == v2 and "canary" not in registry.aliases(MODEL)

    story = _kinds(registry)
    start = story.index(("retrain_requested", None, "alert:input_drift"))
    assert story[start:] == [
        ("retrain_requested", None, "alert:input_drift"),
        ("retrain_started", None, "alert:input_drift"),
        ("publish", None, "alert:input_drift"),
        ("candidate", None, "alert:input_drift"),
        ("check", None, "alert:input_drift"),
        ("promote", "canary", "alert:input_drift"),
        ("promote", "production", story[-2][2]),
        ("alias_removed", "canary", story[-1][2]),
    ]
    assert story[-2][2] is not None and story[-2][2].startswith("watcher:")
    events = {e.kind: e for e in registry.events(MODEL)}
    assert "input_drift" in events["retrain_started"].reason and events["candidate"].to_version == v2
    assert events["candidate"].details["data_sha256"] == result.data_sha256
    assert events["check"].details["passed"] is True and events["check"].details["gates"]["benchmark"] is True
    promoted = registry.events(MODEL)[1]
    assert promoted.from_version == v1 and "healthy" in promoted.reason and promoted.details["requests"] == 30


def test_broken_candidate_stops_at_the_differential_gate_and_never_serves(
        sqlite_settings: Settings, production_bundle: Path, tmp_path: Path) -> None:
    registry = Registry(sqlite_settings)
    v1 = publish(sqlite_settings, production_bundle, alias="production")
    broken = house_spec_folder(tmp_path / "broken", edit=lambda s: linear(s).replace('"condition", ', ""))
    result = retrain(registry, MODEL, gates=GATES, trigger=Trigger("user:carol", "feature clean-up"),
                     spec_path=broken)
    assert result.outcome == "refused"
    assert any("no longer reads input column(s) condition" in r for r in result.reasons), result.reasons
    assert {a.version for a in registry.aliases(MODEL).values()} == {v1}  # the candidate serves nowhere
    check, refused = registry.events(MODEL)[1], registry.events(MODEL)[0]
    assert (check.kind, check.to_version, check.actor) == ("check", result.version, "user:carol")
    assert "differential" in check.reason and check.details["passed"] is False
    assert (refused.kind, refused.alias, refused.to_version) == ("promote_refused", "canary", result.version)
    assert "condition" in refused.reason and refused.details["trigger"] == "feature clean-up"


def test_a_one_second_budget_aborts_a_slow_fit(sqlite_settings: Settings, production_bundle: Path,
                                               tmp_path: Path) -> None:
    registry = Registry(sqlite_settings)
    publish(sqlite_settings, production_bundle, alias="production")
    slow = 'estimator = "sklearn.ensemble.RandomForestRegressor"\nparams = { n_estimators = 5000 }'
    spec = house_spec_folder(tmp_path / "slow",
                             edit=lambda s: s.replace(HIST, slow) + "\n[budget]\nmax_seconds = 1\n")
    result = retrain(registry, MODEL, gates=GATES, trigger=Trigger("schedule:1d", "nightly"), spec_path=spec)
    assert result.outcome == "aborted" and result.version is None
    assert re.fullmatch(r"house-prices: the fit was stopped after 1\.\d+ s: the spec's budget allows "
                        r"max_seconds = 1", result.reasons[0]), result.reasons
    aborted = registry.events(MODEL)[0]
    assert aborted.kind == "train_aborted" and aborted.actor == "schedule:1d"
    assert aborted.details["limit"] == "max_seconds" and aborted.details["used"] >= 1.0
    assert len(registry.versions(MODEL)) == 1  # nothing was published


def test_training_cost_is_measured_in_the_manifest(tmp_path: Path) -> None:
    budgeted = house_spec_folder(tmp_path / "b", edit=lambda s: linear(s) + "\n[budget]\nmax_seconds = 60\n"
                                                                             "max_memory_mb = 4000\n")
    cost = train(load_spec(budgeted)).training_cost
    assert cost is not None and cost.measured_in == "child" and cost.max_seconds == 60
    assert cost.wall_seconds is not None and cost.cpu_seconds is not None and cost.peak_memory_mb
    assert cost.peak_memory_mb > 10  # a whole interpreter with scikit-learn: tens of MiB at least
    here = train(load_spec(house_spec_folder(tmp_path / "h", edit=linear))).training_cost
    assert here is not None and here.measured_in == "process" and here.memory_growth_mb is not None


@pytest.mark.postgres
def test_window_placeholders_bind_the_window_and_the_lineage_records_it(pg_url: str, tmp_path: Path) -> None:
    end = datetime(2030, 3, 1, tzinfo=UTC)
    frame = generate_houses(900, seed=3)
    frame["sold_at"] = [end - timedelta(hours=2 * i + 1) for i in range(len(frame))]  # 75 days back
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        frame.to_sql("sales", engine, index=False)
    finally:
        engine.dispose()
    query = "SELECT * FROM sales WHERE sold_at >= {window_start} AND sold_at < {window_end} ORDER BY sold_at"
    spec = house_spec_folder(tmp_path / "w", edit=lambda s: linear(s).replace(
        'source = "houses.csv"', f'source = "{pg_url}"\nquery = "{query}"'))
    result = train(load_spec(spec), window="30d", now=end)
    inside = frame[frame["sold_at"] >= end - timedelta(days=30)]
    assert len(result.data.frame) == len(inside) == 360
    lineage = result.lineage()
    assert lineage.data is not None and lineage.data.window is not None
    assert (lineage.data.window.start, lineage.data.window.end, lineage.data.window.length) == \
           ((end - timedelta(days=30)).isoformat(), end.isoformat(), "30d")
    assert lineage.data.sha256 == result.data.sha256 and "{window_start}" in (lineage.data.description or "")
    bundle_dir = tmp_path / "bundle"
    result.write_bundle(bundle_dir)
    registry = Registry(Settings(home=tmp_path / ".modelyard"))
    version = registry.publish(bundle_dir, reason="windowed")
    report = reproduce(registry.load_bundle(registry.get_version(MODEL, version)))  # binds the same window
    assert report.data_sha256 == result.data.sha256 and report.identical
    with pytest.raises(Exception, match="moving window"):
        train(load_spec(spec))  # no window given, none in the spec

