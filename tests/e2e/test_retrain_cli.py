"""`modelyard retrain` as a user types it: once now (to a canary through the gates), then on a schedule."""

from __future__ import annotations

from pathlib import Path

from modelyard.config import Settings
from modelyard.registry import Registry
from tests.conftest import run_cli
from tests.rollout_helpers import MODEL, house_spec_folder, publish, train_bundle

HIST = 'estimator = "sklearn.ensemble.HistGradientBoostingRegressor"\nparams = { max_iter = 30, learning_rate = 0.1 }'


def test_retrain_once_makes_a_gated_canary_then_stores_a_schedule(sqlite_settings: Settings, tmp_path: Path) -> None:
    ridge = 'estimator = "sklearn.linear_model.Ridge"'
    spec = house_spec_folder(tmp_path / "spec", edit=lambda s: s.replace(HIST, ridge))
    v1 = publish(sqlite_settings, train_bundle(spec, tmp_path / "bundle"), alias="production")
    done = run_cli("retrain", MODEL, "--skip-benchmark", "--weight", "0.3", "--reason", "new month",
                   settings=sqlite_settings, MODELYARD_ACTOR="dana")
    assert done.returncode == 0, done.stderr
    assert f"{MODEL} v{v1 + 1}" in done.stdout and "gates passed, now canary" in done.stdout
    registry = Registry(sqlite_settings)
    canary = registry.aliases(MODEL)["canary"]
    assert (canary.version, canary.weight) == (v1 + 1, 0.3)
    kinds = [(e.kind, e.actor) for e in registry.events(MODEL)[:4]]
    assert kinds == [("promote", "user:dana"), ("check", "user:dana"), ("candidate", "user:dana"),
                     ("publish", "user:dana")]
    assert registry.events(MODEL)[0].details["trigger"] == "new month"

    stored = run_cli("retrain", MODEL, "--every", "1d", "--window", "30d", "--no-foreground",
                     settings=sqlite_settings)
    assert stored.returncode == 0, stored.stderr
    assert "retrain every 1d over 30d" in stored.stdout
    assert registry.model_settings(MODEL)["rollout"]["retrain"]["every"] == 86400.0
