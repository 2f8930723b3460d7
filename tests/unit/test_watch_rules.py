"""The watcher thresholds: one JSON setting for the server (a misspelt rule stops it at start), then each
model's own settings, and the rule objects they switch on."""

from __future__ import annotations

import pytest

from modelyard.config import Settings
from modelyard.errors import ConfigError
from modelyard.registry import Registry
from modelyard.rollout import CanaryHealth, CanaryRuleSet, WatchRules, canary_rules, latency_verdict, watch_rules


def test_no_overrides_gives_the_default_rules() -> None:
    assert watch_rules({}) == WatchRules()


def test_overrides_from_the_environment_replace_single_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_WATCH_RULES", '{"window": 60, "min_requests": 50, "max_p99_ratio": null}')
    rules = watch_rules(Settings().watch_rules)
    assert (rules.window, rules.min_requests, rules.max_p99_ratio) == (60.0, 50, None)
    assert isinstance(rules.min_requests, int)
    assert rules.max_error_rate == WatchRules().max_error_rate


def test_an_unknown_rule_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="unknown rule 'max_error'"):
        watch_rules({"max_error": 0.1})


def test_each_rule_object_reads_the_canary_figures() -> None:
    health = CanaryHealth("m", 2, 1, 0.2, "since", requests=100, errors=30, error_rate=0.3, p99_ms=80.0,
                          primary_p99_ms=10.0, compared_rows=100, disagreement=0.5,
                          outcomes={"worse": True, "p_value": 0.001, "test": "mcnemar exact (paired)",
                                    "loss": "error rate", "canary_loss": 0.3, "primary_loss": 0.1})
    rules = canary_rules(WatchRules(max_p99_ms=50.0))
    assert [r.name for r in rules] == ["canary_error_rate", "canary_p99", "canary_p99_ratio",
                                       "canary_disagreement", "canary_outcomes"]
    findings = [f for rule in rules for f in rule.evaluate(health)]
    assert all(f.firing for f in findings) and all(f.model == "m" and f.version == 2 for f in findings)
    assert [f.message for f in findings] == [
        "error rate 30.0% > 5.0%", "p99 latency 80.0 ms > 50 ms",
        "p99 latency 80.0 ms > 3x the primary's 10.0 ms and > the 20 ms objective",
        "disagreement with the primary 50.0% > 10.0%",
        "worse than the primary on labelled traffic: mcnemar exact (paired) p=0.001 < 0.01, error rate 0.3 vs 0.1"]
    quiet = CanaryHealth("m", 2, 1, 0.2, "since", requests=3)  # too few requests: nothing measured
    assert [f.firing for rule in rules for f in rule.evaluate(quiet)] == [None] * 5
    assert canary_rules(WatchRules(max_error_rate=None, max_p99_ratio=None, max_disagreement=None,
                                   outcome_alpha=None)) == []


def test_per_model_watch_rules_come_from_the_model_settings(sqlite_settings: Settings) -> None:
    registry = Registry(sqlite_settings)
    rule_set = CanaryRuleSet(registry, WatchRules(window=60))
    assert rule_set.rules_for("m", {}) == WatchRules(window=60)
    own = {"rollout": {"watch_rules": {"max_error_rate": 0.2, "min_requests": "50"}}}
    tuned = rule_set.rules_for("m", own)
    assert (tuned.window, tuned.max_error_rate, tuned.min_requests) == (60, 0.2, 50)
    with pytest.raises(ConfigError, match="watch rules of m: unknown rule 'max_eror_rate'"):
        rule_set.rules_for("m", {"rollout": {"watch_rules": {"max_eror_rate": 0.2}}})


def test_a_canary_without_the_fast_path_is_not_rolled_back_for_latency_within_the_objective() -> None:
    """Issue 16: 6 ms against an ONNX primary's 1.6 ms is 3.75x, yet well within a 20 ms objective."""
    slow_but_fine = CanaryHealth("m", 2, 1, 0.2, "since", requests=100, p99_ms=6.0, primary_p99_ms=1.6)
    (ratio_rule,) = [r for r in canary_rules(WatchRules()) if r.name == "canary_p99_ratio"]
    (finding,) = ratio_rule.evaluate(slow_but_fine)
    assert finding.firing is False and "within the 20 ms objective" in finding.message
    (old,) = [r for r in canary_rules(WatchRules(latency_p99_ms=None)) if r.name == "canary_p99_ratio"]
    assert old.evaluate(slow_but_fine)[0].firing is True  # the ratio alone, as before
    too_slow = CanaryHealth("m", 2, 1, 0.2, "since", requests=100, p99_ms=30.0, primary_p99_ms=5.0)
    assert ratio_rule.evaluate(too_slow)[0].firing is True  # over both
    fast_enough = CanaryHealth("m", 2, 1, 0.2, "since", requests=100, p99_ms=30.0, primary_p99_ms=25.0)
    assert ratio_rule.evaluate(fast_enough)[0].firing is False  # over the objective, not the ratio


def test_the_model_latency_objective_comes_from_its_settings_and_check_can_ask_beforehand(
        sqlite_settings: Settings) -> None:
    rule_set = CanaryRuleSet(Registry(sqlite_settings))
    strict = rule_set.rules_for("m", {"rollout": {"latency_p99_ms": 5}})
    assert strict.latency_p99_ms == 5.0 and rule_set.rules_for("m", {}).latency_p99_ms == 20.0
    fires = latency_verdict(strict, "m", 6.0, 1.6)
    assert fires is not None and fires.firing is True and "> the 5 ms objective" in fires.message
    quiet = latency_verdict(rule_set.rules, "m", 6.0, 1.6)
    assert quiet is not None and quiet.firing is False
    assert latency_verdict(WatchRules(max_p99_ratio=None), "m", 6.0, 1.6) is None
