"""The Open Inference Protocol through the real Triton/KServe client (``tritonclient``), over HTTP with JSON
tensors, HTTP with binary tensors (the client's default) and gRPC, against a real ``modelyard serve``: a
regressor with categorical BYTES inputs and missing values, a classifier with ``predict_proba`` as a second
output; every answer equals ``/v1`` and in-process ``predict`` on the same rows, and a bad request raises
the client's own readable ``InferenceServerException`` naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import modelyard
from modelyard.config import Settings
from tests.conftest import train_and_publish
from tests.integration.serving import cancer_spec_in, fresh_pg_database, house_rows
from tests.support import Server, free_port, house_spec_in

pytestmark = pytest.mark.postgres
NUMERIC = ["area_sqm", "bedrooms", "bathrooms", "year_built", "year_renovated", "lot_sqm", "garage_spaces",
           "floors", "distance_center_km", "school_rating", "crime_index"]
CATEGORICAL = ["neighborhood", "house_type", "condition", "heating", "has_pool"]
TRANSPORTS = ["http-json", "http-binary", "grpc"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Settings]]:
    folder = tmp_path_factory.mktemp("oip_clients")
    with fresh_pg_database() as url:
        settings = Settings(home=folder / ".modelyard", database_url=url)
        train_and_publish(house_spec_in(folder / "house"), settings)
        train_and_publish(cancer_spec_in(folder / "cancer"), settings)
        grpc_port = free_port()
        server = Server(settings, folder / "server.log", extra_args=("--grpc-port", str(grpc_port)),
                        MODELYARD_LOG_FLUSH_INTERVAL="0.1")
        server.grpc_port = grpc_port  # type: ignore[attr-defined]
        with server:
            yield server, settings


def client(server: Server, transport: str) -> Any:
    if transport == "grpc":
        return grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")  # type: ignore[attr-defined]
    return httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")


def module(transport: str) -> Any:
    return grpcclient if transport == "grpc" else httpclient


def column_inputs(rows: list[dict[str, Any]], transport: str, numeric: list[str],
                  categorical: list[str]) -> list[Any]:
    """One tensor per column as a user of tritonclient builds them: FP64 with NaN, BYTES with b"" missing."""
    mod = module(transport)
    binary = transport == "http-binary"
    inputs = []
    for name in numeric:
        values = np.array([np.nan if r[name] is None else r[name] for r in rows], dtype=np.float64)
        tensor = mod.InferInput(name, [len(rows)], "FP64")
        inputs.append(tensor.set_data_from_numpy(values) if transport == "grpc"
                      else tensor.set_data_from_numpy(values, binary_data=binary))
    for name in categorical:
        values = np.array([b"" if r[name] is None else str(r[name]).encode() for r in rows], dtype=np.object_)
        tensor = mod.InferInput(name, [len(rows)], "BYTES")
        inputs.append(tensor.set_data_from_numpy(values) if transport == "grpc"
                      else tensor.set_data_from_numpy(values, binary_data=binary))
    return inputs


def outputs(names: list[str], transport: str) -> list[Any]:
    if transport == "grpc":
        return [grpcclient.InferRequestedOutput(n) for n in names]
    return [httpclient.InferRequestedOutput(n, binary_data=transport == "http-binary") for n in names]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_regressor_with_missing_values_agrees_with_v1_and_in_process(served: tuple[Server, Settings],
                                                                     transport: str) -> None:
    server, settings = served
    rows = house_rows(60, seed=5)
    rows[3]["condition"] = rows[7]["heating"] = rows[9]["lot_sqm"] = None  # missing, whatever the draw
    assert any(r["year_renovated"] is None for r in rows) and any(r["condition"] is None for r in rows)
    expected = modelyard.load("house-prices@production", settings=settings).predict(rows)
    v1 = httpx.post(f"{server.url}/v1/models/house-prices/predict", json={"instances": rows}).json()
    # JSON: the outputs asked for as JSON too; binary and gRPC: the client's defaults (no outputs named)
    requested = outputs(["predict"], transport) if transport == "http-json" else None
    result = client(server, transport).infer("house-prices", column_inputs(rows, transport, NUMERIC, CATEGORICAL),
                                             outputs=requested, request_id=f"oip-{transport}")
    got = result.as_numpy("predict")
    assert got.dtype == np.float64 and got.shape == (60,)
    assert got.tolist() == expected.tolist() == v1["predictions"]
    if transport != "grpc":
        (tensor,) = result.get_response()["outputs"]
        assert tensor["name"] == "predict"
        assert ("data" in tensor) == (transport == "http-json")
        assert ("binary_data_size" in tensor.get("parameters", {})) == (transport == "http-binary")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_classifier_probabilities_as_a_second_output(served: tuple[Server, Settings], transport: str) -> None:
    server, settings = served
    model = modelyard.load("breast-cancer@production", settings=settings)
    columns = list(model.schema.names)
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target").iloc[::41]
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    rows = [{k: float(v) for k, v in row.items()} for row in frame[columns].to_dict("records")]
    result = client(server, transport).infer(
        "breast-cancer", column_inputs(rows, transport, columns, []),
        outputs=outputs(["predict", "predict_proba"], transport))
    v1 = httpx.post(f"{server.url}/v1/models/breast-cancer/predict",
                    json={"instances": rows, "probabilities": True}).json()
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict").tolist()]
    assert labels == model.predict(rows).tolist() == v1["predictions"]  # string classes: a BYTES output
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (len(rows), 2)
    assert proba.tolist() == model.predict_proba(rows).tolist() == v1["probabilities"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_one_matrix_tensor_in_schema_order(served: tuple[Server, Settings], transport: str) -> None:
    server, settings = served
    model = modelyard.load("breast-cancer@production", settings=settings)
    rng = np.random.default_rng(3)
    matrix = rng.uniform(0.1, 2.0, size=(5, len(model.schema.names))) * 10
    rows = [dict(zip(model.schema.names, map(float, line), strict=True)) for line in matrix]
    mod = module(transport)
    tensor = mod.InferInput("input-0", list(matrix.shape), "FP64")
    if transport == "grpc":
        tensor.set_data_from_numpy(matrix)
    else:
        tensor.set_data_from_numpy(matrix, binary_data=transport == "http-binary")
    result = client(server, transport).infer("breast-cancer", [tensor])
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict").tolist()]
    assert labels == model.predict(rows).tolist()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bad_requests_raise_the_clients_readable_error(served: tuple[Server, Settings], transport: str) -> None:
    server, _ = served
    c = client(server, transport)
    rows = house_rows(3, seed=8)
    rows[1]["neighborhood"] = "Atlantis"  # refused by the schema? (unknown categories may be allowed)
    inputs = column_inputs(rows, transport, NUMERIC[1:], CATEGORICAL)  # area_sqm left out
    with pytest.raises(InferenceServerException) as info:
        c.infer("house-prices", inputs)
    assert "area_sqm" in info.value.message(), info.value.message()
    with pytest.raises(InferenceServerException) as info:
        c.infer("no-such-model", column_inputs(rows, transport, NUMERIC, CATEGORICAL))
    assert "no-such-model" in info.value.message()
    text = module(transport).InferInput("area_sqm", [3], "BYTES")
    values = np.array([b"big", b"small", b"12"], dtype=np.object_)
    if transport == "grpc":
        text.set_data_from_numpy(values)
    else:
        text.set_data_from_numpy(values, binary_data=transport == "http-binary")
    with pytest.raises(InferenceServerException) as info:
        c.infer("house-prices", [text, *column_inputs(rows, transport, NUMERIC[1:], CATEGORICAL)])
    assert "area_sqm" in info.value.message() and "row 0" in info.value.message(), info.value.message()
    if transport == "grpc":
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    else:
        assert info.value.status() == "400"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_health_and_metadata_through_the_client(served: tuple[Server, Settings], transport: str) -> None:
    server, _ = served
    c = client(server, transport)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("house-prices")
    assert not c.is_model_ready("no-such-model")
    meta = c.get_server_metadata()
    extensions = meta["extensions"] if transport != "grpc" else list(meta.extensions)
    assert "binary_tensor_data" in extensions
    model_meta = c.get_model_metadata("breast-cancer")
    names = ([o["name"] for o in model_meta["outputs"]] if transport != "grpc"
             else [o.name for o in model_meta.outputs])
    assert names == ["predict", "predict_proba"]


@pytest.mark.parametrize("transport", ["http-json", "grpc"])
def test_model_repository_extension_maps_onto_aliases(served: tuple[Server, Settings], transport: str) -> None:
    server, _ = served
    c = client(server, transport)
    index = c.get_model_repository_index()
    entries = ([(m["name"], m["version"], m["state"]) for m in index] if transport != "grpc"
               else [(m.name, m.version, m.state) for m in index.models])
    assert ("house-prices", "1", "READY") in entries and ("breast-cancer", "1", "READY") in entries
    c.load_model("house-prices")  # the production alias: already loaded, still a success
    with pytest.raises(InferenceServerException) as info:
        c.load_model("no-such-model")
    assert "no-such-model" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        c.unload_model("house-prices")
    assert "alias" in info.value.message()  # refused, saying how to stop serving a version
    meta = httpx.get(f"{server.url}/v2").json()
    assert "model_repository" in meta["extensions"] and "not supported" in meta["model_repository"]["unload"]
