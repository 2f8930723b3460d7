"""The load generator against a real uvicorn server on 127.0.0.1: its counts match what the server saw."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from modelyard.checks import LoadConfig, load, stress
from tests.conftest import run_cli
from tests.support import free_port, wait_until


@dataclass
class Seen:
    """What the server saw; ``limit`` in-flight requests at most, beyond that it answers 503."""

    limit: int = 1000
    delay: float = 0.0
    requests: int = 0
    rows: int = 0
    in_flight: int = 0
    statuses: Counter[int] = field(default_factory=Counter)


def make_app(seen: Seen) -> Starlette:
    async def predict(request: Request) -> JSONResponse:
        seen.requests += 1
        ticket = seen.requests
        seen.in_flight += 1
        try:
            body = await request.json()
            seen.rows += len(body["instances"])
            status = 503 if seen.in_flight > seen.limit else 500 if ticket % 10 == 0 else 200
            if seen.delay:
                await asyncio.sleep(seen.delay)
            seen.statuses[status] += 1
            return JSONResponse({"predictions": [1.0] * len(body["instances"])}, status_code=status)
        finally:
            seen.in_flight -= 1

    async def health(_request: Request) -> JSONResponse:
        seen.requests += 1
        seen.statuses[200] += 1
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/healthz", health)])


@pytest.fixture
def server() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(make_app(seen), host="127.0.0.1", port=port, log_level="warning",
                                        lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_until(lambda: srv.started or not thread.is_alive(), 20, "uvicorn to start", interval=0.02)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", seen
    srv.should_exit = True
    thread.join(timeout=20)


ROWS = [{"area_sqm": 80.0 + i, "neighborhood": "Harbor"} for i in range(7)]


def test_counts_match_what_the_server_saw(server: tuple[str, Seen]) -> None:
    url, seen = server
    result = load(LoadConfig(url=f"{url}/predict", concurrency=4, duration=2.0, rows=ROWS, batch=3,
                             max_requests=400))
    assert result.requests == seen.requests > 0
    assert result.status_codes == {str(k): v for k, v in sorted(seen.statuses.items())}
    assert result.status_codes["500"] == seen.requests // 10
    assert result.ok == seen.statuses[200] and result.errors == {}
    assert seen.rows == 3 * result.requests
    assert set(result.latency_ms) == {"mean", "p50", "p90", "p99", "max"}
    assert result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]
    assert result.throughput_rps > 0


def test_get_without_rows_and_transport_errors_are_counted(server: tuple[str, Seen]) -> None:
    url, seen = server
    result = load(LoadConfig(url=f"{url}/healthz", concurrency=2, duration=5.0, max_requests=30))
    assert result.requests == seen.requests == 30 and result.status_codes == {"200": 30}
    dead = free_port()  # a port nobody listens on
    refused = load(LoadConfig(url=f"http://127.0.0.1:{dead}/x", concurrency=2, duration=5.0, max_requests=6))
    assert refused.requests == 6 and refused.ok == 0 and refused.errors == {"ConnectError": 6}
    assert refused.error_rate == 1.0


def test_stress_finds_the_knee_where_errors_start(server: tuple[str, Seen]) -> None:
    url, seen = server
    seen.limit, seen.delay = 4, 0.02  # the server refuses (503) a fifth concurrent request
    result = stress(LoadConfig(url=f"{url}/predict", duration=0.6, rows=ROWS, max_requests=200),
                    max_p99_ms=10_000, max_error_rate=0.15, start=1, max_concurrency=32)
    assert [s.concurrency for s in result.steps] == [1, 2, 4, 8]
    assert result.knee == 4 and "error rate" in result.stopped_because
    assert "503" not in result.steps[2].status_codes and result.steps[3].status_codes["503"] > 0
    assert sum(s.requests for s in result.steps) == seen.requests


def test_stress_stops_on_p99(server: tuple[str, Seen]) -> None:
    url, seen = server
    seen.delay = 0.05
    result = stress(LoadConfig(url=f"{url}/predict", duration=0.3, rows=ROWS, max_requests=50),
                    max_p99_ms=1.0, max_error_rate=1.0, start=2)
    assert result.knee is None and len(result.steps) == 1 and result.stopped_because.startswith("p99")


def test_loadtest_cli_reports_json(server: tuple[str, Seen], tmp_path: Path) -> None:
    url, seen = server
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    proc = run_cli("loadtest", f"{url}/predict", "--concurrency", "3", "--duration", "2",
                   "--max-requests", "120", "--rows-file", str(tmp_path / "rows.jsonl"), "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["requests"] == seen.requests and data["status_codes"]["500"] == seen.statuses[500]
    table = run_cli("loadtest", f"{url}/healthz", "--concurrency", "1", "--duration", "1", "--max-requests",
                    "5", timeout=60)
    assert table.returncode == 0 and "p99 ms" in table.stdout and "200: 5" in table.stdout
