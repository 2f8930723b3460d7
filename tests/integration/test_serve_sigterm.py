"""Two uvicorn workers on PostgreSQL share one port: both answer, ``/metrics`` counts the requests (and the
micro-batches) of both workers, and a SIGTERM in the middle of a load loses no answered prediction: after
the restart every answered request id is in the log exactly once."""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from modelyard.config import Settings
from modelyard.registry import Registry
from modelyard.registry.tables import predictions
from tests.conftest import train_and_publish
from tests.integration.serving import LoadLoop, fresh_pg_database, house_rows
from tests.support import Server, wait_until
from tests.support.serving import house_spec_in

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Settings]]:
    folder = tmp_path_factory.mktemp("serve_sigterm")
    with fresh_pg_database() as url:
        settings = Settings(home=folder / ".modelyard", database_url=url)
        train_and_publish(house_spec_in(folder / "house"), settings)
        yield folder, settings


def _logged(settings: Settings) -> dict[str, int]:
    with Registry(settings).engine.connect() as conn:
        rows = conn.execute(select(predictions.c.request_id, func.count()).group_by(predictions.c.request_id))
        return {r[0]: int(r[1]) for r in rows}


def test_two_workers_metrics_count_every_request_and_sigterm_loses_no_answer(
    trained: tuple[Path, Settings],
) -> None:
    folder, settings = trained
    server = Server(settings, folder / "server.log", workers=2, MODELYARD_LOG_FLUSH_INTERVAL="2").wait_ready()
    url = f"{server.url}/v1/models/house-prices/predict"
    try:
        counted = LoadLoop(url, {"instances": house_rows(1)}, threads=4).start()
        counted.wait_for(150)
        counted.stop()
        assert not counted.failures and {a.status for a in counted.answers} == {200}
        total = server.metric("modelyard_requests_total", model="house-prices", status="200")
        assert total == len(counted.answers)
        assert server.metric("modelyard_request_latency_seconds_count", model="house-prices") == total
        assert server.metric("modelyard_batch_rows_sum", model="house-prices") == total  # 1 row each, batched

        fresh = []  # one connection per request: the kernel hands new connections to either worker
        for i in range(40):
            rid = f"fresh-{i}-{uuid.uuid4().hex[:8]}"
            with httpx.Client(timeout=30) as client:
                r = client.post(url, json={"instances": house_rows(1)}, headers={"X-Request-ID": rid})
            assert r.status_code == 200, r.text
            fresh.append(rid)

        loop = LoadLoop(url, {"instances": house_rows(2)}, threads=4).start()
        loop.wait_for(100)
        server.proc.send_signal(signal.SIGTERM)  # mid-load: requests keep coming until the sockets close
        server.proc.wait(60)
        loop.stop()
    finally:
        server.stop()
    assert server.proc.returncode in (0, -signal.SIGTERM), server.log()[-3000:]
    written = [int(n) for n in re.findall(r"prediction log flushed: (\d+) written", server.log())]
    assert len(written) == 2 and min(written) > 0, written  # each worker answered, and flushed on its way out
    answered = counted.ok_ids() | loop.ok_ids() | set(fresh)
    assert answered <= set(_logged(settings))  # the graceful stop wrote everything before exiting

    restarted = Server(settings, folder / "restart.log").wait_ready()
    try:
        wait_until(lambda: answered <= set(_logged(settings)), 30, "every answered request in the log")
        assert restarted.metric("modelyard_requests_total") == 0  # a fresh process, fresh counters
    finally:
        restarted.stop()
    logged = _logged(settings)
    assert all(logged[rid] == 1 for rid in answered)
