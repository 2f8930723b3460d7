"""A canary worse only on outcomes (the same inputs, wrong labels learnt) is rolled back by the watcher on
the labelled test, on a real server over PostgreSQL, while the drift rules stay quiet; the rollback event
and ``promote``'s refusal carry the test's name, sample sizes, p-value and effect.

The disagreement rule is switched off here so that the rollback can only come from the outcome test."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sqlalchemy import func, select

import modelyard
from modelyard.errors import GateFailedError
from modelyard.monitor.report import build_report
from modelyard.predlog import window_source
from modelyard.registry import Registry
from modelyard.registry.tables import predictions
from modelyard.rollout import promote
from tests.integration.rollout_serving import backend, post_all
from tests.support import Server, wait_until


def _logged(registry: Registry, route: str) -> int:
    with registry.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(predictions)
                                .where(predictions.c.route == route)).scalar() or 0)

MODEL = "churn-canary"
pytestmark = pytest.mark.postgres


def _frame(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"tenure": rng.uniform(0, 60, n), "spend": rng.uniform(10, 200, n),
                      "tickets": rng.integers(0, 8, n).astype("float64")})
    logit = 2.0 - 0.1 * X["tenure"] + 0.01 * X["spend"] + 0.5 * X["tickets"]
    return X, pd.Series(np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-logit)), "yes", "no"))


def test_a_canary_worse_only_on_outcomes_is_rolled_back_on_the_labelled_test(tmp_path: Path) -> None:
    X, y = _frame(1500, 1)
    wrong = y.where(X["tenure"] < 35, y.map({"yes": "no", "no": "yes"}))  # learnt upside down past 35 months
    with backend("postgres", tmp_path) as settings:
        primary = RandomForestClassifier(n_estimators=30, max_depth=6, random_state=0).fit(X, y)
        canary = RandomForestClassifier(n_estimators=30, max_depth=6, random_state=0).fit(X, wrong)
        modelyard.publish(MODEL, primary, X, y, metrics={"accuracy": 0.8}, alias="production", settings=settings)
        v2 = modelyard.publish(MODEL, canary, X, wrong, metrics={"accuracy": 0.8}, settings=settings)
        registry = Registry(settings)
        promote(registry, MODEL, v2, to="canary", weight=0.5, force=True, actor="test")
        rules = {"max_disagreement": None, "min_requests": 20, "min_labelled": 30, "outcome_alpha": 0.01}
        server = Server(settings, tmp_path / "server.log", MODELYARD_WATCH_INTERVAL="1",
                        MODELYARD_WATCH_RULES=json.dumps(rules), MODELYARD_LOG_FLUSH_INTERVAL="0.1",
                        MODELYARD_MONITOR_INTERVAL="3600")
        with server:
            live, truth = _frame(500, 2)
            rows = [{k: float(v) for k, v in r.items()} for r in live.to_dict(orient="records")]
            replies = post_all(f"{server.url}/v1/models/{MODEL}/predict", rows)
            assert all(r.status == 200 for r in replies)
            assert registry.aliases(MODEL)["canary"].weight == 0.5  # nothing fired before the labels
            mirrored = sum(r.version == v2 for r in replies)  # each canary answer is mirrored to the primary
            wait_until(lambda: _logged(registry, "mirror") >= mirrored, 30, "every mirrored record in the log")
            outcomes = [{"request_id": r.body["request_id"], "actual": truth.iloc[r.index]} for r in replies]
            got = httpx.post(f"{server.url}/v1/feedback", json=outcomes, timeout=60)
            assert got.status_code == 200 and got.json()["matched"] == 500, got.text

            wait_until(lambda: registry.aliases(MODEL)["canary"].weight == 0.0, 30,
                       "the watcher to roll the canary back on the labelled test")
        event = next(e for e in registry.events(MODEL) if e.kind == "rollback")
        assert "labelled traffic" in (event.reason or "")
        test = event.details["outcomes"]
        assert test["test"] == "mcnemar exact (paired)" and test["worse"] is True
        assert test["n_pairs"] >= 100 and test["p_value"] < 0.01 and test["effect"] > 0
        canary_rows = [r for r in replies if r.version == v2]
        assert test["n_pairs"] == len(canary_rows)  # every canary row was mirrored to the primary and labelled
        expected = np.mean([str(r.body["predictions"][0]) != str(truth.iloc[r.index]) for r in canary_rows])
        assert test["canary_loss"] == pytest.approx(expected)

        report = build_report(registry, window_source(registry.engine), MODEL)
        drift = [rule for v in report["versions"] for rule in v["rules"] if rule["rule"].endswith("_drift")]
        assert drift and not [r for r in drift if r["status"] == "firing"], drift

        with pytest.raises(GateFailedError, match="labelled traffic"):
            promote(registry, MODEL, v2, to="production", actor="test")
        refused = next(e for e in registry.events(MODEL) if e.kind == "promote_refused")
        assert refused.details["outcomes"]["p_value"] < 0.01 and refused.details["version"] == v2
        assert registry.aliases(MODEL)["production"].version != v2
