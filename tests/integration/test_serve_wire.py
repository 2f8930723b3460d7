"""modelyard's HTTP protocol (`serve/wire.py`) under a real uvicorn on 127.0.0.1, with real clients: every
kind of response still arrives whole, in order, and a streamed one arrives as it is sent."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from modelyard.serve.wire import HTTP_PROTOCOL
from tests.support import free_port, wait_until

BIG = bytes(range(256)) * 8192  # 2 MiB: more than a socket buffer, so the transport must queue it


def make_app(gates: list[threading.Event]) -> Starlette:
    async def small(request: Request) -> Response:
        return JSONResponse({"echo": (await request.body()).decode()})

    async def big(request: Request) -> Response:
        return Response(BIG, media_type="application/octet-stream")

    async def stream(request: Request) -> Response:
        async def parts() -> AsyncIterator[bytes]:
            # the client must see each part before the next is produced: nothing may sit held back (the
            # head goes out with the first part; the second has no write after it to go out with)
            for gate, part in zip([None, *gates], [b"first\n", b"second\n", b"third\n"], strict=True):
                while gate is not None and not gate.is_set():
                    await asyncio.sleep(0.01)
                yield part

        return StreamingResponse(parts(), media_type="text/plain")

    async def empty(request: Request) -> Response:
        return Response(status_code=204)

    return Starlette(routes=[Route("/small", small, methods=["POST", "GET", "HEAD"]), Route("/big", big),
                             Route("/stream", stream), Route("/empty", empty)])


@pytest.fixture
def server() -> Iterator[tuple[str, int, list[threading.Event]]]:
    gates = [threading.Event(), threading.Event()]
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(make_app(gates), host="127.0.0.1", port=port, log_level="warning",
                                        lifespan="off", http=HTTP_PROTOCOL))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_until(lambda: srv.started or not thread.is_alive(), 20, "uvicorn to start", interval=0.02)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", port, gates
    srv.should_exit = True
    thread.join(timeout=20)


def test_keep_alive_requests_small_big_empty_and_head(server: tuple[str, int, list[threading.Event]]) -> None:
    url, _, _ = server
    with httpx.Client(base_url=url, timeout=10) as client:  # one connection, kept alive across all of them
        for i in range(50):
            r = client.post("/small", content=f"n{i}")
            assert r.status_code == 200 and r.json() == {"echo": f"n{i}"}
        assert client.get("/big").content == BIG
        r = client.get("/empty")
        assert r.status_code == 204 and r.content == b""
        r = client.head("/small")
        assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) > 0
        assert client.post("/small", content="after").json() == {"echo": "after"}


def test_a_streamed_response_arrives_as_it_is_sent(server: tuple[str, int, list[threading.Event]]) -> None:
    url, _, gates = server
    with httpx.Client(base_url=url, timeout=10) as client, client.stream("GET", "/stream") as r:
        lines = r.iter_lines()
        assert next(lines) == "first"
        gates[0].set()
        assert next(lines) == "second"  # would time out if it were held until the third
        gates[1].set()
        assert next(lines) == "third"


def test_pipelined_requests_and_connection_close_on_a_raw_socket(
        server: tuple[str, int, list[threading.Event]]) -> None:
    _, port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        req = b"POST /small HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s"
        sock.sendall(req % (1, b"a") + req % (1, b"b")
                     + b"GET /small HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break  # the server closed the connection after the third answer, as asked
            data += chunk
    answers = data.split(b"HTTP/1.1 200 OK\r\n")
    assert len(answers) == 4 and answers[0] == b"", data
    assert answers[1].endswith(b'{"echo":"a"}') and answers[2].endswith(b'{"echo":"b"}'), data
    assert b"connection: close" in answers[3] and answers[3].endswith(b'{"echo":""}'), data


def test_a_malformed_request_gets_a_400_and_the_server_keeps_serving(
        server: tuple[str, int, list[threading.Event]]) -> None:
    url, port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert httpx.post(url + "/small", content="still", timeout=10).json() == {"echo": "still"}


def test_expect_100_continue_is_answered_before_the_body_is_sent(
        server: tuple[str, int, list[threading.Event]]) -> None:
    _, port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /small HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n")
        interim = sock.recv(65536)  # the client waits for it: it must not stay held back
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
        sock.sendall(b"body")
        data = b""
        while not data.endswith(b'{"echo":"body"}'):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
