"""Retrain without services: who claims a retrain and when, the window binding, the training-cost gate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from modelyard.bundle import DataWindow, TrainingCost
from modelyard.checks import Tolerances
from modelyard.checks.benchmark import judge, training_figures
from modelyard.errors import BadRequestError, SpecError
from modelyard.pipeline.sources import bind_window, window_ending
from modelyard.rollout.retrain import _claim, retrain_config

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _settings(**retrain: object) -> dict:
    return {"rollout": {"retrain": dict(retrain)}}


def test_a_schedule_is_due_once_per_period() -> None:
    settings = _settings(every="1d")
    first = _claim(settings, T0, "a")
    assert first is not None and first.actor == "schedule:1d"
    assert _claim(settings, T0 + timedelta(hours=1), "b") is None  # running, and not due anyway
    settings["rollout"]["retrain"].pop("running")
    assert _claim(settings, T0 + timedelta(hours=23), "b") is None
    assert _claim(settings, T0 + timedelta(days=1), "b") is not None


def test_a_request_is_claimed_once_and_waits_for_a_running_retrain() -> None:
    settings = _settings(pending={"actor": "alert:input_drift", "reason": "drift"},
                         running={"holder": "a", "since": T0.isoformat()})
    assert _claim(settings, T0 + timedelta(minutes=5), "b") is None  # one retrain of a model at a time
    trigger = _claim(settings, T0 + timedelta(hours=3), "b")  # the claim of a crashed process went stale
    assert trigger is not None and (trigger.actor, trigger.reason) == ("alert:input_drift", "drift")
    assert "pending" not in settings["rollout"]["retrain"]
    assert settings["rollout"]["retrain"]["running"]["holder"] == "b"


def test_retrain_settings_use_the_duration_grammar_and_are_checked() -> None:
    config = retrain_config(_settings(every="12h", promote_after="10m", canary_weight=0.2))
    assert (config.every, config.promote_after, config.canary_weight) == (43200.0, 600.0, 0.2)
    with pytest.raises(BadRequestError, match="canary_weight"):
        retrain_config(_settings(canary_weight=0))
    with pytest.raises(BadRequestError, match="not a duration"):
        retrain_config(_settings(window="a month"))


def test_window_placeholders_become_bound_parameters() -> None:
    window = window_ending(T0, timedelta(days=30))
    sql, params = bind_window("SELECT * FROM t WHERE ts >= {window_start} AND ts < {window_end}", window)
    assert sql == "SELECT * FROM t WHERE ts >= :window_start AND ts < :window_end"
    assert params == {"window_start": T0 - timedelta(days=30), "window_end": T0}
    assert bind_window("SELECT 1", None) == ("SELECT 1", {})
    with pytest.raises(SpecError, match="moving window"):
        bind_window("SELECT * FROM t WHERE ts < {window_end}", None)
    assert DataWindow.model_validate(window.model_dump()) == window


def test_benchmark_gate_fails_a_fit_much_slower_or_bigger_than_the_current() -> None:
    serve = {"latency_ratio": 1.0, "throughput_slowdown": 1.0, "candidate": {"latency_ms_p50": 1.0,
                                                                             "throughput_rows_s": 1e4}}
    cur = TrainingCost(wall_seconds=2.0, cpu_seconds=2.0, peak_memory_mb=300.0, measured_in="child")
    slow = TrainingCost(wall_seconds=9.0, cpu_seconds=9.0, peak_memory_mb=900.0, measured_in="child")
    result = judge({**serve, "training": training_figures(cur, slow)}, Tolerances())
    assert not result.passed
    assert any("fit took 9 s, 4.50x the current's" in r for r in result.reasons), result.reasons
    assert any("peaked at 900 MiB, 3.00x" in r for r in result.reasons), result.reasons
    assert judge({**serve, "training": training_figures(cur, cur)}, Tolerances()).passed
    # measured differently (a child's own peak, a whole process's high-water mark): memory is not compared
    other = TrainingCost(wall_seconds=2.0, peak_memory_mb=5000.0, measured_in="process")
    assert "train_memory_ratio" not in training_figures(cur, other)
    assert training_figures(None, cur)["note"] == "no training cost recorded for the current version"


def test_the_webhook_receiver_takes_our_alert_body_as_the_trigger() -> None:
    from modelyard.monitor.alert_state import Transition
    from modelyard.monitor.notify import alert_payload
    from modelyard.serve.admin import RetrainRequest, _retrain_trigger

    alert = {"id": 1, "model": "house-prices", "version": 3, "rule": "input_drift", "message": "area_sqm drifted",
             "value": 0.4, "threshold": 0.2, "started_at": T0, "details": {"feature": "area_sqm"}}
    body = RetrainRequest.model_validate(alert_payload(Transition("firing", alert)))
    trigger = _retrain_trigger(body, "admin-api")
    assert trigger.actor == "webhook:input_drift" and "area_sqm drifted" in trigger.reason
    plain = _retrain_trigger(RetrainRequest(reason="new data landed"), "admin-api:ops")
    assert (plain.actor, plain.reason) == ("admin-api:ops", "new data landed")
