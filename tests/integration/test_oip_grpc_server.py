"""The gRPC server inside ``modelyard serve --workers 2 --grpc-port``: both workers bind the port
(SO_REUSEPORT), the standard health service answers, gRPC requests take the same sticky canary split and
shadow as REST, land in the same prediction log and the same metrics, and a SIGTERM under gRPC load loses
no answered prediction."""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from modelyard.config import Settings
from modelyard.predlog import PredictionRecord
from modelyard.registry import Registry
from modelyard.rollout import promote
from tests.integration.rollout_serving import (
    MODEL,
    OFFSET,
    SERVER_PYTHONPATH,
    WEIGHT,
    backend,
    expected_version,
    fit_houses,
    logged,
)
from tests.integration.serving import house_rows
from tests.rollout_estimators import Offset
from tests.support import Server, free_port, wait_until

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Settings, int]]:
    """MODEL: v1 production, v2 canary at 20%, v3 shadow (+OFFSET); two workers, REST and gRPC."""
    folder = tmp_path_factory.mktemp("oip_grpc")
    houses = fit_houses()
    with backend("postgres", folder) as settings:
        registry = Registry(settings)
        houses.publish(settings, MODEL, alias="production")
        canary = houses.publish(settings, MODEL)
        promote(registry, MODEL, canary, to="canary", weight=WEIGHT, force=True, actor="test")
        houses.publish(settings, MODEL, Offset(houses.pipeline, OFFSET), alias="shadow")
        grpc_port = free_port()
        server = Server(settings, folder / "server.log", workers=2, extra_args=("--grpc-port", str(grpc_port)),
                        PYTHONPATH=SERVER_PYTHONPATH, MODELYARD_WATCH_INTERVAL="0",
                        MODELYARD_LOG_FLUSH_INTERVAL="0.1")
        with server:
            yield server, settings, grpc_port


def _answered(settings: Settings) -> dict[str, PredictionRecord]:
    return {**logged(settings, MODEL, "primary"), **logged(settings, MODEL, "canary")}


def _inputs(row: dict[str, Any]) -> list[Any]:
    inputs = []
    for name, value in row.items():
        if isinstance(value, str) or (value is None and name in {"condition", "heating", "neighborhood",
                                                                  "house_type", "has_pool"}):
            tensor = grpcclient.InferInput(name, [1], "BYTES")
            tensor.set_data_from_numpy(np.array([(value or "").encode()], dtype=np.object_))
        else:
            tensor = grpcclient.InferInput(name, [1], "FP64")
            tensor.set_data_from_numpy(np.array([np.nan if value is None else value], dtype=np.float64))
        inputs.append(tensor)
    return inputs


def test_both_workers_serve_grpc_and_the_health_service(served: tuple[Server, Settings, int]) -> None:
    server, _, port = served
    wait_until(lambda: server.log().count("gRPC (Open Inference Protocol) on") == 2, 60,
               "both workers listening on the one gRPC port")
    for _ in range(8):  # new connections, spread by the kernel
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", "inference.GRPCInferenceService"):
                status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
                assert status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_takes_the_canary_split_the_shadow_the_log_and_the_metrics(
        served: tuple[Server, Settings, int]) -> None:
    server, settings, port = served
    before = server.metric("modelyard_requests_total", model=MODEL, status="200")
    rows = house_rows(50, seed=21)
    keys = [f"grpc-customer-{i}" for i in range(200)]
    versions: dict[str, int] = {}
    ids: dict[str, str] = {}
    clients = [grpcclient.InferenceServerClient(f"127.0.0.1:{port}") for _ in range(4)]
    for i, key in enumerate(keys):
        rid = f"grpc-{i}-{uuid.uuid4().hex[:8]}"
        result = clients[i % 4].infer(MODEL, _inputs(rows[i % 50]),
                                      headers={"x-routing-key": key, "x-request-id": rid})
        versions[key] = int(result.get_response().model_version)
        ids[key] = rid
    assert versions == {k: expected_version(k) for k in keys}  # the same sticky split as REST
    wait_until(lambda: server.metric("modelyard_requests_total", model=MODEL, status="200") >= before + 200,
               30, "the gRPC requests in /metrics (both workers)")
    try:
        answered = wait_until(lambda: (a := _answered(settings)) and all(rid in a for rid in ids.values()) and a,
                              60, "every gRPC request in the prediction log")
    except AssertionError as exc:
        missing = sorted(set(ids.values()) - set(_answered(settings)))
        raise AssertionError(f"{exc}: {len(missing)} of {len(ids)} missing, e.g. {missing[:3]}; server log:\n"
                             f"{server.log()[-4000:]}") from None
    for key, rid in ids.items():
        record = answered[rid]
        assert record.version == versions[key] and record.meta is not None
        assert record.meta["protocol"] == "v2-grpc"
    shadows = wait_until(lambda: (s := logged(settings, MODEL, "shadow")) and
                         all(rid in s for rid in ids.values()) and s, 30, "the shadow records")
    for rid in ids.values():
        assert shadows[rid].outputs[0] == pytest.approx(answered[rid].outputs[0] + OFFSET)  # type: ignore[index]


def test_sigterm_under_grpc_load_loses_no_answered_prediction(served: tuple[Server, Settings, int]) -> None:
    server, settings, port = served
    rows = house_rows(20, seed=4)
    answered: list[str] = []
    refused: list[tuple[str, str]] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        n = 0
        while not stop.is_set():
            n += 1
            rid = f"drain-{worker}-{n}-{uuid.uuid4().hex[:6]}"
            try:
                client.infer(MODEL + "@production", _inputs(rows[n % 20]), headers={"x-request-id": rid},
                             client_timeout=30)
                answered.append(rid)
            except InferenceServerException as exc:
                refused.append((str(exc.status()), rid))
                if exc.status() == "StatusCode.UNAVAILABLE":
                    return  # the server is gone: no new calls

    threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(answered) >= 100, 60, "100 answered gRPC calls")
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0
    stop.set()
    for t in threads:
        t.join(30)
    # Refused once stopping: UNAVAILABLE for a new call; CANCELLED for a call the core had taken in but no handler
    # had started when the server shut down (grpc core cancels such pending calls). Never cut mid-call: no refused
    # call was predicted and logged.
    assert {status for status, _ in refused} <= {"StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"}, refused
    records = _answered(settings)
    cut = [rid for status, rid in refused if rid in records]
    assert not cut, f"calls refused to the client but predicted and logged (cut mid-call): {cut}"
    missing = [rid for rid in answered if rid not in records]
    assert not missing, f"{len(missing)} of {len(answered)} answered gRPC predictions are not in the log"
