"""`models list / show / events / event / objective` and `check`'s canary latency warning (issue 16): the
figures stored with an event without --json, canary weights (a rolled-back canary says it gets nothing),
and `check` saying beforehand that the watcher's latency rule would roll the candidate back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelyard.cli import app
from modelyard.config import Settings
from modelyard.registry import Registry
from modelyard.rollout import stop_canary
from tests.conftest import cli_env
from tests.rollout_helpers import publish, train_bundle
from tests.support import house_spec_in

MODEL = "house-prices"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """v1 in production, v2 a canary at 20% that the watcher then rolled back (weight 0, with figures)."""
    root = tmp_path_factory.mktemp("models-cli")
    settings = Settings(home=root / ".modelyard")
    bundle = train_bundle(house_spec_in(root / "house", rows=1500), root / "bundle")  # trained once
    publish(settings, bundle, alias="production")
    v2 = publish(settings, bundle)
    registry = Registry(settings)
    registry.set_alias(MODEL, "canary", v2, weight=0.2, reason="try v2")
    stop_canary(registry, MODEL, reason="automatic canary rollback: error rate 30.0% > 5.0%",
                details={"requests": 40, "error_rate": 0.3, "rules": {"max_error_rate": 0.05}})
    yield {k: v for k, v in cli_env(settings).items() if k.startswith("MODELYARD_")}


def _run(env: dict[str, str], *args: str, **extra: str) -> str:
    result = CliRunner().invoke(app, list(args), env={**env, "COLUMNS": "200", **extra})
    assert result.exit_code == 0, result.output
    return result.output


def test_list_and_show_give_canary_weights_and_a_rolled_back_canary_says_so(env: dict[str, str]) -> None:
    assert "canary→v2 (0%, no traffic)" in _run(env, "models", "list")
    assert json.loads(_run(env, "models", "list", "--json"))[0]["weights"] == {"canary": 0.0}
    assert "aliases: canary (0%, no traffic)" in _run(env, "models", "show", f"{MODEL}@2")


def test_events_details_and_one_event_show_the_stored_figures(env: dict[str, str]) -> None:
    table = _run(env, "models", "events", MODEL)
    assert "rollback" in table and "error_rate" not in table  # the table: reasons only
    details = _run(env, "models", "events", MODEL, "--details", "--limit", "1")
    assert "rules.max_error_rate" in details and "0.05" in details and "requests" in details
    (rollback,) = Registry(Settings(**{"home": Path(env["MODELYARD_HOME"])})).events(MODEL, limit=1)
    one = _run(env, "models", "event", str(rollback.id))
    assert f"event {rollback.id}" in one and "error_rate" in one and "0.3" in one
    assert "automatic canary rollback" in one
    missing = CliRunner().invoke(app, ["models", "event", "99999"], env=env)
    assert missing.exit_code == 1 and "no event with id 99999" in missing.output


def test_check_says_beforehand_whether_the_canary_latency_rule_would_fire(env: dict[str, str]) -> None:
    args = ("check", MODEL, "2", "--latency-calls", "20", "--max-slowdown", "100", "--json")
    quiet = json.loads(_run(env, *args))["canary_latency_rule"]  # same model: ~1x, within 20 ms
    assert quiet["fires"] is False and quiet["latency_p99_ms"] == 20.0 and quiet["candidate_p99_ms"] > 0
    _run(env, "models", "objective", MODEL, "--latency-p99-ms", "0.0001")
    try:
        strict = {"MODELYARD_WATCH_RULES": '{"max_p99_ratio": 0.01}'}  # any candidate is "slower"
        fires = json.loads(_run(env, *args, **strict))["canary_latency_rule"]
        assert fires["fires"] is True and fires["latency_p99_ms"] == 0.0001 and "objective" in fires["message"]
        text = CliRunner().invoke(app, list(args[:-1]), env={**env, "COLUMNS": "200", **strict})
        assert "would be rolled back by the watcher's latency rule" in text.output
    finally:
        _run(env, "models", "objective", MODEL, "--clear")
