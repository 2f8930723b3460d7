"""Micro-batching through a real ``modelyard serve --workers 2`` on PostgreSQL: concurrent clients with
distinct rows each get scikit-learn's answers for their own rows, batches stay within their bound, the
prediction log holds every answered request exactly once, and ``/metrics`` counts all of them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from sqlalchemy import func, select

import modelyard
from modelyard.config import Settings
from modelyard.registry import Registry
from modelyard.registry.tables import predictions
from modelyard.runtime import Model
from tests.conftest import train_and_publish
from tests.integration.serving import cancer_spec_in, fresh_pg_database, house_rows
from tests.support import Server, wait_until
from tests.support.serving import house_spec_in

pytestmark = pytest.mark.postgres
MAX_BATCH_ROWS = 4


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Settings]]:
    folder = tmp_path_factory.mktemp("serve_batching")
    with fresh_pg_database() as url:
        settings = Settings(home=folder / ".modelyard", database_url=url)
        train_and_publish(house_spec_in(folder / "house"), settings)
        train_and_publish(cancer_spec_in(folder / "cancer"), settings)
        server = Server(settings, folder / "server.log", workers=2, MODELYARD_BATCH_MAX_ROWS=str(MAX_BATCH_ROWS),
                        MODELYARD_BATCH_MAX_WAIT_MS="5", MODELYARD_LOG_FLUSH_INTERVAL="0.1")
        with server:
            yield server, settings


def sklearn_twin(name: str, settings: Settings) -> tuple[Model, float]:
    """The served version loaded without its fast path (scikit-learn answers), and its recorded tolerance."""
    model = modelyard.load(name, settings=settings)
    return Model.load(model.bundle_, fast_path=False), float(model.manifest.fast_path.tolerance or 0.0)


@dataclass
class Answer:
    request_id: str
    status: int
    body: dict[str, Any]


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    length = next(int(h.split(":", 1)[1]) for h in head if h.lower().startswith("content-length:"))
    return int(head[0].split()[1]), json.loads(await reader.readexactly(length))


async def burst(url: str, bodies: list[dict[str, Any]], concurrency: int) -> list[Answer]:
    """Post every body over ``concurrency`` keep-alive connections, in rounds: each round writes one
    request on every connection back to back (so they reach the server together), then reads the answers."""
    parsed = urlsplit(url)
    conns = [await asyncio.open_connection(parsed.hostname, parsed.port) for _ in range(concurrency)]
    answers: list[Answer] = []
    try:
        for start in range(0, len(bodies), concurrency):
            chunk = list(enumerate(bodies[start:start + concurrency], start))
            rids = [f"batch-{i}-{uuid.uuid4().hex[:8]}" for i, _ in chunk]
            for (_, writer), (_, body), rid in zip(conns, chunk, rids, strict=False):
                data = json.dumps(body).encode()
                writer.write(f"POST {parsed.path} HTTP/1.1\r\nHost: {parsed.netloc}\r\nX-Request-ID: {rid}\r\n"
                             f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                             + data)
            got = await asyncio.gather(*(_read_response(reader) for (reader, _), _ in zip(conns, chunk,
                                                                                           strict=False)))
            answers += [Answer(rid, status, body) for rid, (status, body) in zip(rids, got, strict=True)]
    finally:
        for _, writer in conns:
            writer.close()
    return answers


def _logged(settings: Settings) -> dict[str, int]:
    with Registry(settings).engine.connect() as conn:
        rows = conn.execute(select(predictions.c.request_id, func.count()).group_by(predictions.c.request_id))
        return {r[0]: int(r[1]) for r in rows}


def _bucket(server: Server, name: str, le: str) -> float:
    return server.metric(f"{name}_bucket", model="house-prices", le=le)


def test_concurrent_clients_get_scikit_learns_answers_for_their_own_rows(
    served: tuple[Server, Settings],
) -> None:
    server, settings = served
    sklearn, tolerance = sklearn_twin("house-prices", settings)
    rows = house_rows(700, seed=5)
    sizes = [1 + i % 3 for i in range(240)] + [120, 90]  # many small requests, two passed through whole
    bodies, start = [], 0
    for n in sizes:
        bodies.append({"instances": rows[start:start + n]})
        start += n
    url = f"{server.url}/v1/models/house-prices/predict"
    before_requests = server.metric("modelyard_requests_total", model="house-prices", status="200")
    answers = asyncio.run(burst(url, bodies, concurrency=24))

    assert len(answers) == len(bodies)
    assert all(a.status == 200 for a in answers), [a.body for a in answers if a.status != 200][:3]
    for body, answer in zip(bodies, answers, strict=True):  # checked one by one: its own rows
        expected = sklearn.predict(body["instances"])
        np.testing.assert_allclose(answer.body["predictions"], expected, rtol=0, atol=tolerance)

    small = [n for n in sizes if n <= MAX_BATCH_ROWS]
    batches = server.metric("modelyard_batch_rows_count", model="house-prices")
    assert server.metric("modelyard_batch_rows_sum", model="house-prices") == sum(small)  # each row once
    assert _bucket(server, "modelyard_batch_rows", str(float(MAX_BATCH_ROWS))) == batches  # none over the max
    assert batches < len(small), "concurrent requests were never coalesced"
    assert server.metric("modelyard_batch_queue_wait_seconds_count", model="house-prices") == len(small)
    answered = server.metric("modelyard_requests_total", model="house-prices", status="200") - before_requests
    assert answered == len(bodies)  # both workers' counts, whichever answered

    ids = {a.request_id for a in answers}
    try:
        wait_until(lambda: ids <= set(_logged(settings)), 60, "every answered request in the log")
    except AssertionError as exc:
        missing = ids - set(_logged(settings))
        raise AssertionError(f"{exc}: {len(missing)} of {len(ids)} missing; server log:\n{server.log()[-4000:]}"
                             ) from None
    logged = _logged(settings)
    assert all(logged[rid] == 1 for rid in ids)


def test_classifier_labels_and_probabilities_in_batches(served: tuple[Server, Settings]) -> None:
    server, settings = served
    sklearn, tolerance = sklearn_twin("breast-cancer", settings)
    reference = sklearn.bundle_.reference_inputs()
    records = [{k: float(v) for k, v in row.items()} for row in reference.to_dict("records")]
    bodies = [{"instances": records[i:i + 2], "probabilities": i % 4 == 0} for i in range(0, len(records) - 1, 2)]
    answers = asyncio.run(burst(f"{server.url}/v1/models/breast-cancer/predict", bodies, concurrency=16))
    for body, answer in zip(bodies, answers, strict=True):
        assert answer.status == 200, answer.body
        got = answer.body
        assert got["predictions"] == sklearn.predict(body["instances"]).tolist()
        if body["probabilities"]:
            np.testing.assert_allclose(got["probabilities"], sklearn.predict_proba(body["instances"]),
                                       rtol=0, atol=tolerance)
        else:
            assert "probabilities" not in got


def test_bad_rows_in_a_busy_batch_fail_only_their_own_request(served: tuple[Server, Settings]) -> None:
    server, _ = served
    rows = house_rows(60, seed=8)
    bodies: list[dict[str, Any]] = [{"instances": [row]} for row in rows]
    for i in range(0, len(bodies), 10):
        bodies[i] = {"instances": [{**rows[i], "area_sqm": "lots"}]}
    answers = asyncio.run(burst(f"{server.url}/v1/models/house-prices/predict", bodies, concurrency=12))
    assert [a.status for a in answers] == [422 if i % 10 == 0 else 200 for i in range(len(bodies))]
    assert answers[0].body["error"]["field"] == "area_sqm"
