"""The hot v1 predict route (answered from the ASGI scope, past FastAPI's stack) and the request ids."""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.responses import Response

from modelyard.config import Settings
from modelyard.serve import create_app
from modelyard.serve.http import REQUEST_ID_HEADER, json_response, new_request_id


def test_new_request_ids_are_32_hex_digits_and_unique() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_request_ids_are_uuid7_in_time_order_with_no_guessable_part() -> None:
    """Request ids look past requests up (explain, predictions show): one id must not tell another. Their
    time prefix keeps the log's unique index appending at its right edge."""
    before = time.time_ns() // 1_000_000
    ids = [new_request_id() for _ in range(2_000)]
    after = time.time_ns() // 1_000_000
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert all(before <= int(i[:12], 16) <= after for i in ids)
    assert [i[:12] for i in ids] == sorted(i[:12] for i in ids)  # by creation, to the millisecond
    a, b = ids[0][12:], ids[1][12:]  # the random parts (past the time): nothing in common to guess from
    assert sum(x == y for x, y in zip(a, b, strict=True)) < 12 and int(ids[0], 16) + 1 != int(ids[1], 16)
    assert len({i[12:] for i in ids}) == len(ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_draws_none_of_its_parents_random_bits() -> None:
    new_request_id()  # the parent holds a block of random numbers now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    parent = new_request_id()
    assert re.fullmatch(r"[0-9a-f]{32}", child) and child[13:] != parent[13:]


def test_predict_is_answered_without_fastapis_stack_with_the_apps_error_shape(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    through_fastapi: list[str] = []
    original = FastAPI.__call__

    async def counting(self: FastAPI, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            through_fastapi.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(FastAPI, "__call__", counting)
    app = create_app(Settings(home=tmp_path / ".modelyard"))

    async def scenario() -> list[httpx.Response]:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return [
                await client.post("/v1/models/nope/predict", json={"instances": [{}]},
                                  headers={"X-Request-ID": "r-1"}),
                await client.post("/v1/models/nope/predict", json={"instances": []},
                                  headers={"X-Request-ID": "not ok!"}),
                await client.get("/v1/models"),
                await client.post("/v1/models/a/b/predict", json={}),
            ]

    answer, bad, listing, not_a_name = asyncio.run(scenario())
    assert answer.status_code == 404 and answer.headers["X-Request-ID"] == "r-1"
    assert answer.json()["error"]["code"] == "model_not_found"
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "X-Request-ID"
    assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["X-Request-ID"])
    assert listing.status_code == 200 and not_a_name.status_code == 404  # both the ordinary way
    assert through_fastapi == ["/v1/models", "/v1/models/a/b/predict"]


def test_plain_turns_nan_and_infinities_into_null_for_few_and_many_values() -> None:
    import numpy as np

    from modelyard.serve.inference import plain

    assert plain(np.array([1.5])) == [1.5]
    assert plain(np.array([np.nan])) == [None]
    assert plain(np.array([np.inf, -np.inf, 2.0])) == [None, None, 2.0]
    many = np.arange(100, dtype=np.float64)
    many[[3, 97]] = [np.nan, np.inf]
    out = plain(many)
    assert out[3] is None and out[97] is None and out[4] == 4.0 and len(out) == 100
    assert plain(np.array([1, 2])) == [1, 2]
    assert plain(np.array(["a"], dtype=object)) == ["a"]


@pytest.mark.parametrize("status", [200, 404, 422, 503, 204])
@pytest.mark.parametrize("request_id", ["r-1", None])
def test_a_json_answer_has_the_headers_starlette_would_give_it(status: int, request_id: str | None) -> None:
    ours = json_response({"predictions": [1.5]}, status, request_id)
    theirs = Response(b'{"predictions":[1.5]}', status_code=status, media_type="application/json",
                      headers={REQUEST_ID_HEADER: request_id} if request_id else None)
    assert (ours.status_code, ours.raw_headers, ours.body) == (theirs.status_code, theirs.raw_headers, theirs.body)
    ours.headers["Retry-After"] = "5"  # what the 503 handler adds
    assert ours.headers["retry-after"] == "5" and ours.headers["content-type"] == "application/json"
