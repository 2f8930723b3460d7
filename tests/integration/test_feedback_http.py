"""Outcomes over ``POST /v1/feedback`` on a real server (SQLite and PostgreSQL): joined to the logged
predictions, the live MAE and accuracy (and the CBPE estimate) in ``/metrics`` equal what sklearn computes
from the answers, outcomes by entity key take the latest prediction in the window, and every malformed
outcome is a 4xx naming it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.metrics import accuracy_score, mean_absolute_error, roc_auc_score
from sklearn.pipeline import make_pipeline

import modelyard
from modelyard.config import Settings
from modelyard.registry import Registry
from modelyard.registry.outcomes import SqlOutcomeStore
from tests.conftest import generate_houses
from tests.integration.rollout_serving import BACKENDS, backend
from tests.support import Server, wait_until

HOUSES = "houses-live"
CHURN = "churn-live"
NUMERIC = ["area_sqm", "bedrooms", "bathrooms", "year_built", "lot_sqm", "distance_center_km", "school_rating"]


def _houses() -> tuple[Any, pd.DataFrame, pd.Series]:
    frame = generate_houses(600, seed=21)
    X = frame[NUMERIC].fillna(frame[NUMERIC].median())
    X.insert(0, "listing_id", np.arange(len(X)))
    pipe = make_pipeline(ColumnTransformer([("num", "passthrough", NUMERIC)]),
                         RandomForestRegressor(n_estimators=20, max_depth=8, random_state=0))
    return pipe.fit(X, frame["price"]), X, frame["price"]


def _churn() -> tuple[Any, pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"tenure": rng.uniform(0, 60, 800), "spend": rng.uniform(10, 200, 800),
                      "tickets": rng.integers(0, 8, 800).astype("float64")})
    logit = 1.5 - 0.08 * X["tenure"] + 0.01 * X["spend"] + 0.4 * X["tickets"]
    y = pd.Series(np.where(rng.uniform(size=800) < 1 / (1 + np.exp(-logit)), "yes", "no"))
    model = RandomForestClassifier(n_estimators=30, max_depth=5, random_state=0)
    return make_pipeline(model).fit(X, y), X, y


@dataclass
class Live:
    server: Server
    settings: Settings
    houses: tuple[Any, pd.DataFrame, pd.Series]
    churn: tuple[Any, pd.DataFrame, pd.Series]

    def predict(self, model: str, rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        r = httpx.post(f"{self.server.url}/v1/models/{model}/predict", json={"instances": rows, **extra}, timeout=30)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def feedback(self, body: Any) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(f"{self.server.url}/v1/feedback", content=content,
                          headers={"content-type": "application/json"}, timeout=30)


@pytest.fixture(scope="module", params=BACKENDS)
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp(f"feedback-{request.param}")
    with backend(request.param, folder) as settings:
        houses, churn = _houses(), _churn()
        modelyard.publish(HOUSES, houses[0], houses[1], houses[2], metrics={"mae": 20000.0}, alias="production",
                          settings=settings)
        modelyard.publish(CHURN, churn[0], churn[1], churn[2], metrics={"accuracy": 0.8}, alias="production",
                          settings=settings)
        server = Server(settings, folder / "server.log", MODELYARD_MONITOR_INTERVAL="1",
                        MODELYARD_LOG_FLUSH_INTERVAL="0.1", MODELYARD_WATCH_INTERVAL="0")
        with server:
            yield Live(server, settings, houses, churn)


def _rows(X: pd.DataFrame, start: int, n: int) -> list[dict[str, Any]]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in X.iloc[start:start + n].to_dict(orient="records")]


def _gauge(live: Live, name: str, **labels: str) -> float | None:
    text = httpx.get(live.server.url + "/metrics", timeout=10).text
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.startswith(name + "{") and all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return None


def test_outcomes_posted_after_predictions_give_the_live_mae_sklearn_computes(live: Live) -> None:
    _, X, y = live.houses
    answers = [live.predict(HOUSES, _rows(X, start, 25)) for start in (0, 25, 50)]
    outcomes, predicted, actual = [], [], []
    for a, start in zip(answers, (0, 25, 50), strict=True):
        for row, p in enumerate(a["predictions"]):
            outcomes.append({"request_id": a["request_id"], "row": row, "actual": float(y.iloc[start + row])})
            predicted.append(p)
            actual.append(float(y.iloc[start + row]))
    got = live.feedback(outcomes)
    assert got.status_code == 200, got.text
    assert got.json() | {"unmatched_ids": []} == {"received": 75, "matched": 75, "duplicate": 0, "unmatched": 0,
                                                   "late": 0, "rows_stored": 75, "unmatched_ids": []}
    again = live.feedback({"outcomes": outcomes[:10]}).json()
    assert (again["matched"], again["duplicate"], again["rows_stored"]) == (0, 10, 0)

    expected = mean_absolute_error(actual, predicted)
    version = str(answers[0]["model"]["version"])
    wait_until(lambda: _gauge(live, "modelyard_labelled_rows", model=HOUSES, version=version) == 75, 20,
               "the monitor to export the live quality")
    assert _gauge(live, "modelyard_live_metric", model=HOUSES, version=version, metric="mae") == pytest.approx(
        expected, rel=1e-9)
    assert _gauge(live, "modelyard_label_coverage", model=HOUSES, version=version) == pytest.approx(1.0)
    assert (_gauge(live, "modelyard_label_delay_seconds", model=HOUSES, version=version) or -1) >= 0
    assert live.server.metric("modelyard_outcomes_total", model=HOUSES, status="duplicate") == 10


def test_outcomes_of_a_classifier_give_accuracy_auc_and_the_cbpe_estimate_beside_it(live: Live) -> None:
    _, X, y = live.churn
    answer = live.predict(CHURN, _rows(X, 0, 120), probabilities=True)
    classes = answer["classes"]
    proba = np.asarray(answer["probabilities"])
    truth = [str(v) for v in y.iloc[:120]]
    got = live.feedback([{"request_id": answer["request_id"], "row": i, "actual": t} for i, t in enumerate(truth)])
    assert got.status_code == 200 and got.json()["matched"] == 120, got.text
    version = str(answer["model"]["version"])
    wait_until(lambda: _gauge(live, "modelyard_labelled_rows", model=CHURN, version=version) == 120, 20,
               "the monitor to export the live quality")

    def metric(name: str) -> float | None:
        return _gauge(live, "modelyard_live_metric", model=CHURN, version=version, metric=name)

    assert metric("accuracy") == pytest.approx(accuracy_score(truth, answer["predictions"]))
    yes = classes.index("yes")
    assert metric("roc_auc") == pytest.approx(roc_auc_score([t == "yes" for t in truth], proba[:, yes]))
    assert metric("estimated_accuracy") == pytest.approx(float(proba.max(axis=1).mean()), abs=1e-6)


def test_an_outcome_by_entity_key_joins_the_latest_prediction_in_its_window(live: Live) -> None:
    X = live.houses[1]
    rows = _rows(X, 200, 3)
    first = live.predict(HOUSES, rows)
    later = live.predict(HOUSES, [rows[1]])  # listing 201 again: the newer prediction is the one judged
    now = datetime.now(UTC)
    got = live.feedback({"model": HOUSES, "window": "10m", "outcomes": [
        {"key": {"listing_id": 201}, "actual": 250000.0},
        {"key": {"listing_id": 202}, "at": (now + timedelta(seconds=5)).isoformat(), "actual": 260000.0}]})
    assert got.status_code == 200, got.text
    assert got.json()["matched"] == 2
    stored = {(r["request_id"], r["row"]): r["actual"]
              for r in SqlOutcomeStore(Registry(live.settings).engine).select(HOUSES, routes=["primary"])}
    assert stored[(later["request_id"], 0)] == 250000.0 and stored[(first["request_id"], 2)] == 260000.0
    assert (first["request_id"], 1) not in stored
    too_early = live.feedback({"model": HOUSES, "window": "10m", "outcomes": [
        {"key": {"listing_id": 200}, "at": (now - timedelta(minutes=30)).isoformat(), "actual": 1.0}]})
    assert too_early.status_code == 404 and too_early.json()["error"]["field"] == "key"
    assert "'listing_id': 200" in too_early.json()["error"]["message"]


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


BAD = [
    ("not json", b"{", 400, "bad_request", "body", None),
    ("empty list", [], 400, "bad_request", "outcomes", None),
    ("an object without outcomes", {"model": HOUSES}, 400, "bad_request", "outcomes", None),
    ("an unknown top-level field", {"outcomes": [], "extra": 1}, 400, "bad_request", "extra", None),
    ("an outcome that is not an object", [1], 400, "bad_request", "outcomes", 0),
    ("no request id", [{"actual": 1.0}], 400, "bad_request", "request_id", 0),
    ("a numeric request id", [{"request_id": 5, "actual": 1.0}], 400, "bad_request", "request_id", 0),
    ("a negative row", [{"request_id": "{rid}", "row": -1, "actual": 1.0}], 400, "bad_request", "row", 0),
    ("no actual", [{"request_id": "{rid}"}], 400, "bad_request", "actual", 0),
    ("an unknown field", [{"request_id": "{rid}", "actual": 1.0, "weight": 2}], 400, "bad_request", "weight", 0),
    ("request id and key", [{"request_id": "{rid}", "key": {"listing_id": 1}, "actual": 1.0}], 400,
     "bad_request", "key", 0),
    ("a key that is not an object", {"model": HOUSES, "outcomes": [{"key": 7, "actual": 1.0}]}, 400,
     "bad_request", "key", 0),
    ("a key without the model", [{"key": {"listing_id": 1}, "actual": 1.0}], 400, "bad_request", "model", None),
    ("a time that is not ISO 8601", [{"request_id": "{rid}", "at": "yesterday", "actual": 1.0}], 400,
     "bad_request", "at", 0),
    ("a bad window", {"model": HOUSES, "window": "soon", "outcomes": [{"request_id": "{rid}", "actual": 1.0}]},
     400, "bad_request", "window", None),
    ("an unknown request id, second", [{"request_id": "{rid}", "actual": 1.0},
                                       {"request_id": "nobody-asked", "actual": 1.0}], 404, "unknown_request",
     "request_id", 1),
    ("a row the request did not have", [{"request_id": "{rid}", "row": 9, "actual": 1.0}], 404,
     "unknown_request", "request_id", 0),
    ("a text value for a regressor", [{"request_id": "{rid}", "actual": "expensive"}], 422, "invalid_outcome",
     "actual", 0),
    ("a boolean value for a regressor", [{"request_id": "{rid}", "actual": True}], 422, "invalid_outcome",
     "actual", 0),
    ("a class the classifier does not have", [{"request_id": "{cid}", "actual": "maybe"}], 422,
     "invalid_outcome", "actual", 0),
    ("a list for a classifier", [{"request_id": "{cid}", "actual": ["yes"]}], 422, "invalid_outcome", "actual", 0),
    ("a value nested deeper than orjson writes", [{"request_id": "{rid}", "actual": 1.0},
                                                  {"request_id": "{rid}", "actual": _nested(300)}],
     422, "invalid_outcome", "actual", 1),
    ("a key holding a NUL", {"model": HOUSES, "outcomes": [{"key": {"listing_id": "1\u0000"}, "actual": 1.0}]},
     400, "bad_request", "key", 0),
    ("an entity key nothing logged", {"model": HOUSES, "outcomes": [{"key": {"list\ting\\id": "a\nb"},
                                                                       "actual": 1.0}]},
     404, "unknown_request", "key", 0),
]


def test_every_malformed_outcome_is_a_4xx_naming_it_and_stores_nothing(live: Live) -> None:
    rid = live.predict(HOUSES, _rows(live.houses[1], 300, 1))["request_id"]
    cid = live.predict(CHURN, _rows(live.churn[1], 300, 1))["request_id"]
    store = SqlOutcomeStore(Registry(live.settings).engine)
    before = len(store.select(HOUSES)) + len(store.select(CHURN))
    for what, body, status, code, field, row in BAD:
        if not isinstance(body, bytes):
            body = json.loads(json.dumps(body).replace("{rid}", rid).replace("{cid}", cid))
        got = live.feedback(body)
        assert got.status_code == status, (what, got.text)
        error = got.json()["error"]
        assert (error["code"], error["field"], error["row"]) == (code, field, row), (what, error)
    assert len(store.select(HOUSES)) + len(store.select(CHURN)) == before
