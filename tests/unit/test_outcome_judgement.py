"""The outcome test behind canary rollbacks, the performance alert rule and its Prometheus form, and the live
quality figures, on hand-made losses and windows (no server)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss, mean_absolute_error, r2_score

from modelyard.deploy.prometheus import alerting_rules
from modelyard.monitor.alerts import DEFAULT_RULES, PerformanceRule
from modelyard.monitor.quality import LiveQuality, expected_calibration_error, quality_metrics
from modelyard.monitor.window import Window
from modelyard.rollout.judge import compare_losses

T = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_paired_regressor_clearly_worse_is_judged_worse_and_an_equal_one_is_not() -> None:
    rng = np.random.default_rng(0)
    primary = np.abs(rng.normal(0, 10, 200))
    worse = compare_losses("regression", primary + 3.0, primary, paired=True, alpha=0.01, min_rows=30)
    assert worse.worse is True and worse.test == "wilcoxon signed-rank (paired)" and worse.n_pairs == 200
    assert worse.effect == pytest.approx(3.0) and worse.p_value is not None and worse.p_value < 1e-6
    same = compare_losses("regression", primary.copy(), primary, paired=True, alpha=0.01, min_rows=30)
    assert same.worse is False and same.p_value == 1.0
    better = compare_losses("regression", primary * 0.5, primary, paired=True, alpha=0.01, min_rows=30)
    assert better.worse is False and better.effect is not None and better.effect < 0


def test_two_sample_tests_when_no_row_was_seen_by_both_and_too_few_rows_say_nothing() -> None:
    rng = np.random.default_rng(1)
    judged = compare_losses("regression", np.abs(rng.normal(5, 1, 80)), np.abs(rng.normal(1, 1, 90)),
                            paired=False, alpha=0.01, min_rows=30)
    assert judged.test == "mann-whitney u (two-sample)" and judged.worse is True
    assert (judged.n_canary, judged.n_primary, judged.n_pairs) == (80, 90, 0)
    errors = compare_losses("classification", (rng.uniform(size=300) < 0.4).astype(float),
                            (rng.uniform(size=300) < 0.1).astype(float), paired=False, alpha=0.01, min_rows=30)
    assert errors.test == "welch t-test (two-sample)" and errors.worse is True
    few = compare_losses("classification", np.ones(10), np.zeros(10), paired=True, alpha=0.01, min_rows=30)
    assert few.worse is None and few.p_value is None and "too few" in few.summary()


def test_mcnemar_counts_only_the_rows_one_version_got_wrong() -> None:
    canary = np.array([1.0] * 12 + [0.0] * 88)
    primary = np.zeros(100)
    judged = compare_losses("classification", canary, primary, paired=True, alpha=0.01, min_rows=30)
    assert judged.test == "mcnemar exact (paired)" and judged.worse is True
    assert judged.p_value == pytest.approx(0.5 ** 12)


def _window(q: LiveQuality | None) -> Window:
    w = Window("m", 1, T, T)
    w.quality = q
    return w


def test_the_performance_rule_fires_past_the_threshold_and_is_unknown_without_enough_labels() -> None:
    params = DEFAULT_RULES["performance"] | {"metric": "mae", "heldout": 100.0, "max_degradation": 0.1,
                                             "min_labelled": 50}
    rule = PerformanceRule(params)
    quality = LiveQuality("m", 1, "regression", "", "", labelled=60, metrics={"mae": 115.0})
    assert rule.evaluate(_window(quality))[0].firing is True
    quality.metrics["mae"] = 105.0
    assert rule.evaluate(_window(quality))[0].firing is False
    quality.labelled = 10
    assert rule.evaluate(_window(quality))[0].firing is None
    assert rule.evaluate(_window(None))[0].firing is None
    accuracy = PerformanceRule(params | {"metric": "accuracy", "heldout": 0.9})
    worse = LiveQuality("m", 1, "classification", "", "", labelled=60, metrics={"accuracy": 0.7})
    assert accuracy.evaluate(_window(worse))[0].firing is True  # higher is better: a drop fires


def test_the_prometheus_export_has_the_performance_rule_with_the_held_out_bound() -> None:
    rules = {name: dict(params) for name, params in DEFAULT_RULES.items()}
    rules["performance"].update(metric="accuracy", heldout=0.9, max_degradation=0.1, min_labelled=100)
    exported = {r["alert"]: r for r in alerting_rules("m", rules)["groups"][0]["rules"]}
    expr = exported["ModelyardLivePerformance"]["expr"]
    assert 'modelyard_live_metric{model="m", metric="accuracy"} < 0.81' in expr
    assert "modelyard_labelled_rows" in expr and ">= 100" in expr
    rules["performance"]["heldout"] = None
    assert "ModelyardLivePerformance" not in {r["alert"] for r in alerting_rules("m", rules)["groups"][0]["rules"]}


def test_live_quality_figures_are_sklearns() -> None:
    y, p = [1.0, 2.0, 4.0, 8.0], [1.5, 2.0, 3.0, 9.0]
    figures = quality_metrics("regression", y, p)
    assert figures["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert figures["r2"] == pytest.approx(r2_score(y, p))
    labels, predicted = ["a", "b", "b", "a", "b"], ["a", "b", "a", "a", "a"]
    proba = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3], [0.55, 0.45]]
    cls = quality_metrics("classification", labels, predicted, proba, ["a", "b"])
    assert cls["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert cls["f1"] == pytest.approx(f1_score(labels, predicted, pos_label="b"))
    assert cls["log_loss"] == pytest.approx(log_loss(labels, proba, labels=["a", "b"]))
    assert expected_calibration_error(np.array([0.9, 0.9]), np.array([True, False])) == pytest.approx(0.4)
