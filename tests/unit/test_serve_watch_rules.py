"""The server's watcher thresholds come from one JSON setting; a misspelt rule stops the server at start."""

from __future__ import annotations

import pytest

from modelyard.config import Settings
from modelyard.errors import ConfigError
from modelyard.rollout import WatchRules
from modelyard.serve.watch import watch_rules


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
