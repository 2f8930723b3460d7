"""A real ``modelyard serve`` on PostgreSQL: v1 and v2 answer exactly what the in-process model answers, bad
input gets a clear 4xx, and every answered prediction lands in the prediction log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

import modelyard
from modelyard.config import Settings
from modelyard.predlog import get_records
from modelyard.registry import Registry
from tests.conftest import train_and_publish
from tests.integration.serving import cancer_spec_in, fresh_pg_database, house_rows
from tests.support import Server, wait_until
from tests.support.serving import house_spec_in

pytestmark = pytest.mark.postgres
MAX_BODY = 200_000


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Settings]]:
    folder = tmp_path_factory.mktemp("serve_rest")
    with fresh_pg_database() as url:
        settings = Settings(home=folder / ".modelyard", database_url=url)
        train_and_publish(house_spec_in(folder / "house"), settings)
        train_and_publish(cancer_spec_in(folder / "cancer"), settings)
        server = Server(settings, folder / "server.log", MODELYARD_MAX_BODY_BYTES=str(MAX_BODY),
                        MODELYARD_LOG_FLUSH_INTERVAL="0.1")
        with server:
            yield server, settings


@pytest.fixture(scope="module")
def cancer_rows() -> list[dict[str, Any]]:
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    frame: pd.DataFrame = load_breast_cancer(as_frame=True).frame.drop(columns="target").iloc[::37]
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    return [{k: float(v) for k, v in row.items()} for row in frame.to_dict("records")]


def test_v1_predictions_equal_in_process_predictions(served: tuple[Server, Settings]) -> None:
    server, settings = served
    rows = house_rows(40)
    r = httpx.post(f"{server.url}/v1/models/house-prices/predict", json={"instances": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = modelyard.load("house-prices@production", settings=settings).predict(rows)
    assert body["predictions"] == expected.tolist()
    assert body["model"] == {"name": "house-prices", "version": 1}
    # name@version and name@alias reach the same version
    for ref in ("house-prices@1", "house-prices@production"):
        again = httpx.post(f"{server.url}/v1/models/{ref}/predict", json={"instances": rows[:3]}).json()
        assert again["predictions"] == expected[:3].tolist()


def test_v2_infer_equals_in_process_in_both_tensor_layouts(served: tuple[Server, Settings]) -> None:
    server, settings = served
    rows = house_rows(25, seed=5)
    model = modelyard.load("house-prices", settings=settings)
    expected = model.predict(rows).tolist()
    columns = model.schema.names
    by_column = {"inputs": [
        {"name": c, "shape": [len(rows)], "datatype": "FP64" if model.schema.column(c).kind == "numeric"
         else "BYTES", "data": [row[c] for row in rows]} for c in columns]}
    table = [[row[c] for c in columns] for row in rows]
    matrix = {"id": "my-call-1", "inputs": [{"name": "input-0", "shape": [len(rows), len(columns)],
                                             "datatype": "BYTES", "data": table}]}
    for body in (by_column, matrix):
        r = httpx.post(f"{server.url}/v2/models/house-prices/infer", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model_name"] == "house-prices" and out["model_version"] == "1"
        (predict,) = out["outputs"]
        assert predict["name"] == "predict" and predict["shape"] == [len(rows)]
        assert predict["data"] == expected
    assert httpx.post(f"{server.url}/v2/models/house-prices/infer", json=matrix).json()["id"] == "my-call-1"
    r = httpx.post(f"{server.url}/v2/models/house-prices/versions/1/infer", json=by_column)
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == expected


def test_classifier_probabilities_over_v1_and_v2(served: tuple[Server, Settings],
                                                 cancer_rows: list[dict[str, Any]]) -> None:
    server, settings = served
    model = modelyard.load("breast-cancer", settings=settings)
    labels = model.predict(cancer_rows).tolist()
    proba = model.predict_proba(cancer_rows)
    r = httpx.post(f"{server.url}/v1/models/breast-cancer/predict",
                   json={"instances": cancer_rows, "probabilities": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["predictions"] == labels
    assert body["classes"] == list(model.classes_)
    np.testing.assert_array_equal(np.asarray(body["probabilities"]), proba)
    assert "probabilities" not in httpx.post(f"{server.url}/v1/models/breast-cancer/predict",
                                             json={"instances": cancer_rows[:2]}).json()
    columns = model.schema.names
    v2 = {"inputs": [{"name": "x", "shape": [len(cancer_rows), len(columns)], "datatype": "FP64",
                      "data": [row[c] for row in cancer_rows for c in columns]}],
          "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}
    out = httpx.post(f"{server.url}/v2/models/breast-cancer/infer", json=v2).json()
    predict, predict_proba = out["outputs"]
    assert predict["datatype"] == "BYTES" and predict["data"] == labels
    assert predict_proba["shape"] == [len(cancer_rows), 2]
    np.testing.assert_array_equal(np.asarray(predict_proba["data"]).reshape(-1, 2), proba)


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert set(body) >= {"code", "message", "field", "row"}
    return body


def _v2_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    return str(body["error"])


def test_bad_input_gets_a_clear_4xx(served: tuple[Server, Settings]) -> None:
    server, _ = served
    predict = f"{server.url}/v1/models/house-prices/predict"
    rows = house_rows(3)
    missing = [dict(rows[0]), {k: v for k, v in rows[1].items() if k != "area_sqm"}]
    err = _error(httpx.post(predict, json={"instances": missing}), 422)
    assert err["field"] == "area_sqm" and err["row"] == 1 and err["code"] == "schema_error"
    wrong = [dict(rows[0], bedrooms="three")]
    err = _error(httpx.post(predict, json={"instances": wrong}), 422)
    assert err["field"] == "bedrooms" and err["row"] == 0 and "three" in err["message"]
    assert _error(httpx.post(predict, json={"rows": rows}), 422)["field"] == "instances"
    assert _error(httpx.post(predict, json={"instances": []}), 422)["field"] == "instances"
    assert _error(httpx.post(predict, json={"instances": rows, "probabilities": True}), 422)["field"] == \
        "probabilities"
    assert _error(httpx.post(predict, content=b'{"instances": [{"area_sqm": 1,'), 400)["field"] == "body"
    assert _error(httpx.post(predict, content=b""), 400)["field"] == "body"
    assert _error(httpx.post(f"{server.url}/v1/models/no-such-model/predict", json={"instances": rows}),
                  404)["code"] == "model_not_found"
    nightly = f"{server.url}/v1/models/house-prices@nightly/predict"
    assert _error(httpx.post(nightly, json={"instances": rows}), 404)["code"] == "version_not_found"
    assert _error(httpx.post(f"{server.url}/v1/models/house-prices@99/predict", json={"instances": rows}),
                  404)["code"] == "version_not_found"
    big = {"instances": rows * (MAX_BODY // 300)}
    assert _error(httpx.post(predict, json=big), 413)["code"] == "payload_too_large"
    assert _error(httpx.post(predict, json={"instances": rows}, headers={"X-Request-ID": "bad id!"}),
                  400)["field"] == "X-Request-ID"
    assert _error(httpx.get(f"{server.url}/v1/nothing-here"), 404)["code"] == "not_found"
    assert _error(httpx.get(predict), 405)["code"] == "method_not_allowed"
    # the same mistakes over v2: the protocol's {"error": "<message>"}, field (and row) inside the message
    v2 = f"{server.url}/v2/models/house-prices/infer"
    assert "(field area_sqm)" in _v2_error(httpx.post(v2, json={"inputs": [
        {"name": "area_sqm", "shape": [2], "datatype": "FP64", "data": [1.0]}]}), 400)
    assert "(field x)" in _v2_error(httpx.post(v2, json={"inputs": [
        {"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}), 400)
    assert "(field body)" in _v2_error(httpx.post(v2, content=b"[1, 2"), 400)
    assert "(field area_sqm, row 1)" in _v2_error(httpx.post(v2, json={"inputs": [
        {"name": c, "shape": [2], "datatype": "BYTES", "data": [rows[0][c], "lots" if c == "area_sqm" else
                                                                rows[0][c]]} for c in rows[0]]}), 400)
    assert "no-such-model" in _v2_error(httpx.get(f"{server.url}/v2/models/no-such-model/ready"), 404)
    assert _v2_error(httpx.get(f"{server.url}/v2/nothing-here"), 404)
    assert _v2_error(httpx.post(v2, json={"inputs": [{"name": "x"}] * 20000}), 413)
    # none of it counted as a server error
    assert server.metric("modelyard_requests_total", status="500") == 0


def test_request_id_comes_back_in_body_and_header(served: tuple[Server, Settings]) -> None:
    server, _ = served
    predict = f"{server.url}/v1/models/house-prices/predict"
    r = httpx.post(predict, json={"instances": house_rows(1)}, headers={"X-Request-ID": "order-42.a"})
    assert r.headers["x-request-id"] == "order-42.a" and r.json()["request_id"] == "order-42.a"
    r = httpx.post(predict, json={"instances": house_rows(1)})
    assert len(r.json()["request_id"]) >= 16 and r.headers["x-request-id"] == r.json()["request_id"]
    r = httpx.post(predict, json={"instances": []}, headers={"X-Request-ID": "order-43"})
    assert r.status_code == 422 and r.headers["x-request-id"] == "order-43"


def test_health_listing_docs_and_metrics(served: tuple[Server, Settings]) -> None:
    server, _ = served
    get = lambda path: httpx.get(server.url + path)  # noqa: E731
    assert get("/healthz").json() == {"status": "ok"}
    assert get("/readyz").json()["status"] == "ready"
    assert get("/v2/health/live").json() == {"live": True}
    assert get("/v2/health/ready").json() == {"ready": True}
    assert get("/v2").json()["name"] == "modelyard"
    assert get("/v2/models/breast-cancer/ready").json() == {"name": "breast-cancer", "ready": True}
    meta = get("/v2/models/breast-cancer").json()
    assert meta["versions"] == ["1"] and {o["name"] for o in meta["outputs"]} == {"predict", "predict_proba"}
    listed = {m["name"]: m for m in get("/v1/models").json()["models"]}
    assert listed["house-prices"]["aliases"] == {"production": 1}
    one = get("/v1/models/house-prices").json()
    assert [v["version"] for v in one["versions"]] == [1] and one["aliases"]["production"]["version"] == 1
    assert any(c["name"] == "area_sqm" for c in one["input_schema"]["columns"])
    assert get("/v1/models/no-such-model").status_code == 404
    assert "swagger" in get("/docs").text.lower()
    spec = get("/openapi.json").json()
    assert "/v1/models/{name}/predict" in spec["paths"] and "PredictRequest" in spec["components"]["schemas"]
    httpx.post(f"{server.url}/v1/models/house-prices/predict", json={"instances": house_rows(2)})
    httpx.post(f"{server.url}/v1/models/house-prices/predict", json={"instances": [{"area_sqm": 1}]})
    assert server.metric("modelyard_requests_total", model="house-prices", version="1", route="primary",
                         status="200") >= 1
    assert server.metric("modelyard_request_latency_seconds_count", model="house-prices") >= 1
    assert server.metric("modelyard_prediction_value_count", model="house-prices") >= 2
    assert server.metric("modelyard_request_errors_total", model="house-prices", code="schema_error") >= 1
    assert server.metric("modelyard_alias_version", model="house-prices", alias="production") == 1
    text = get("/metrics").text
    for name in ("modelyard_input_missing_total", "modelyard_prediction_log_pending",
                 "modelyard_model_load_failures_total", "modelyard_canary_weight"):
        assert name in text, name


def test_every_answer_is_in_the_prediction_log(served: tuple[Server, Settings]) -> None:
    server, settings = served
    rows = house_rows(3, seed=8)
    ids = [f"log-check-{i}-{time.time_ns()}" for i in range(5)]
    answers = {}
    for rid in ids:
        answers[rid] = httpx.post(f"{server.url}/v1/models/house-prices/predict", json={"instances": rows},
                                  headers={"X-Request-ID": rid}).json()["predictions"]
    failed = httpx.post(f"{server.url}/v1/models/house-prices/predict",
                        json={"instances": [{"area_sqm": 1}]}, headers={"X-Request-ID": f"{ids[0]}-bad"})
    assert failed.status_code == 422
    engine = Registry(settings).engine
    wait_until(lambda: all(get_records(engine, rid) for rid in [*ids, f"{ids[0]}-bad"]), 30,
               "the records to reach the database")
    for rid in ids:
        (record,) = get_records(engine, rid)
        assert (record.model, record.version, record.route) == ("house-prices", 1, "primary")
        assert record.inputs == rows and record.outputs == answers[rid] and record.n_rows == 3
        assert record.error is None and record.latency_ms is not None and record.latency_ms > 0
        assert record.meta["protocol"] == "v1"
    (bad,) = get_records(engine, f"{ids[0]}-bad")
    assert bad.outputs is None and "schema_error" in bad.error


def test_probe_paths_exist_for_deployments(served: tuple[Server, Settings]) -> None:
    server, _ = served
    for path in ("/healthz", "/readyz", "/metrics", "/v2/health/ready", "/v2/health/live"):
        assert httpx.get(server.url + path).status_code == 200, path
