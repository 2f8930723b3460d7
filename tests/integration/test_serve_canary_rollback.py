"""The server's watcher rolls back a canary that raises on 30% of inputs, within the window, while callers
keep getting answers from the primary; with two servers on one PostgreSQL exactly one of them acts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from modelyard.config import Settings
from modelyard.durations import format_duration
from modelyard.registry import EventRecord, Registry
from modelyard.rollout import bucket, promote
from tests.integration.rollout_serving import (
    MODEL,
    SERVER_BACKEND,
    SERVER_PYTHONPATH,
    Houses,
    Reply,
    backend,
    fit_houses,
    logged,
    post_all,
)
from tests.integration.serving import house_rows
from tests.rollout_estimators import FailsOnSentinel
from tests.support import Server, wait_until

WEIGHT = 0.5
WINDOW = 60.0


@pytest.fixture(scope="module")
def houses() -> Houses:
    return fit_houses()


def _flaky_canary(settings: Settings, houses: Houses) -> EventRecord:
    """v1 production; v2, which raises on rows with a negative crime index, canary at WEIGHT."""
    registry = Registry(settings)
    houses.publish(settings, MODEL, alias="production")
    v2 = houses.publish(settings, MODEL, FailsOnSentinel(houses.pipeline))
    promote(registry, MODEL, v2, to="canary", weight=WEIGHT, force=True, actor="test")
    return registry.events(MODEL, limit=1)[0]


def _server(settings: Settings, log: Path) -> Server:
    return Server(settings, log, PYTHONPATH=SERVER_PYTHONPATH, MODELYARD_WATCH_INTERVAL="0.5",
                  MODELYARD_WATCH_RULES=f'{{"window": {WINDOW}}}', MODELYARD_LOG_FLUSH_INTERVAL="0.1",
                  MODELYARD_RELOAD_INTERVAL="0.3")


@contextlib.contextmanager
def _servers(settings: Settings, folder: Path, n: int) -> Iterator[list[Server]]:
    servers = [_server(settings, folder / f"server-{i}.log") for i in range(n)]
    try:
        yield [s.wait_ready() for s in servers]
    finally:
        for s in servers:
            s.stop()


def _rollbacks(settings: Settings) -> list[EventRecord]:
    return [e for e in Registry(settings).events(MODEL, limit=1000) if e.kind == "rollback" and e.alias == "canary"]


def _drive(servers: list[Server], settings: Settings, timeout: float = 60.0) -> list[tuple[Reply, dict, str]]:
    """Batches of 40 one-row requests (30% of rows trip the canary), spread over the servers, until the
    canary's weight is 0 in the registry; every (reply, row, routing key)."""
    sent: list[tuple[Reply, dict, str]] = []
    batch = [0]

    def one_batch() -> bool:
        n = batch[0]
        batch[0] += 1
        rows = house_rows(40, seed=100 + n)
        for row in rows[:12]:
            row["crime_index"] = -1.0
        keys = [f"b{n}-k{i}" for i in range(40)]
        server = servers[n % len(servers)]
        replies = post_all(f"{server.url}/v1/models/{MODEL}/predict", rows,
                           headers=[{"X-Routing-Key": k} for k in keys], concurrency=8)
        sent.extend(zip(replies, rows, keys, strict=True))
        return not Registry(settings).aliases(MODEL)["canary"].weight

    wait_until(one_batch, timeout, "the watcher to roll the canary back", interval=0)
    return sent


def _check_callers_and_event(sent: list[tuple[Reply, dict, str]], settings: Settings,
                             promoted: EventRecord) -> EventRecord:
    assert {r.status for r, _, _ in sent} == {200}, [r.body for r, _, _ in sent if r.status != 200][:3]
    tripping = [(r, k) for r, row, k in sent if row["crime_index"] < 0]
    assert {r.version for r, _ in tripping} == {1}  # the primary answered every row the canary fails on
    # Routed to the canary: their key's bucket says so, and they were sent before the batch during which the
    # rollback happened (from then on the server may already route every key to the primary).
    last_batch = sent[-1][2].split("-")[0]
    to_canary = [r for r, k in tripping if bucket(MODEL, k) < WEIGHT and not k.startswith(last_batch + "-")]
    assert to_canary, "no tripping row was routed to the canary"
    assert any(r.version == 2 for r, row, k in sent if row["crime_index"] >= 0)  # the canary did serve

    def canary_errors() -> bool:
        found = logged(settings, MODEL, "canary")
        return all(r.request_id in found for r in to_canary)

    wait_until(canary_errors, 30, "the canary's failed records in the log")
    canary = logged(settings, MODEL, "canary")
    primary = logged(settings, MODEL, "primary")
    for r in to_canary:
        assert "negative crime index" in (canary[r.request_id].error or "")
        assert primary[r.request_id].outputs == r.body["predictions"]

    (event,) = _rollbacks(settings)
    assert event.actor.startswith("watcher:") and "error rate" in event.reason
    assert event.to_version == 2 and event.details["weight"] == 0.0
    assert 0.1 < event.details["error_rate"] < 0.6, event.details
    assert event.details["errors"] >= 2 and event.details["requests"] >= 20
    assert event.at - promoted.at < timedelta(seconds=WINDOW)  # rolled back within the window
    assert Registry(settings).aliases(MODEL)["production"].version == 1
    return event


@pytest.mark.parametrize("kind", SERVER_BACKEND)
def test_a_canary_failing_on_30_percent_of_inputs_is_rolled_back_by_the_server(
    kind: str, tmp_path: Path, houses: Houses,
) -> None:
    with backend(kind, tmp_path) as settings:
        promoted = _flaky_canary(settings, houses)
        with _servers(settings, tmp_path, 1) as (server,):
            sent = _drive([server], settings)
            _check_callers_and_event(sent, settings, promoted)
            assert server.metric("modelyard_canary_errors_total", model=MODEL, version="2") >= 2
            wait_until(lambda: server.metric("modelyard_canary_weight", model=MODEL) == 0.0, 10,
                       "the server to see the canary's weight at 0")
            after = post_all(f"{server.url}/v1/models/{MODEL}/predict", house_rows(40, seed=7),
                             headers=[{"X-Routing-Key": f"after-{i}"} for i in range(40)])
            assert {r.version for r in after} == {1}
            assert "canary watcher rolled back house-prices v2" in server.log()
            # one scheduler task: the start-up log names its tick and both rule sets (issue 16)
            started = next(line for line in server.log().splitlines() if "scheduler every" in line)
            assert "scheduler every 0.5s" in started and "alerts every 1m over 1h" in started
            assert f"canary rollback every 0.5s over {format_duration(WINDOW)}" in started


@pytest.mark.postgres
def test_two_servers_on_one_postgresql_roll_back_exactly_once(tmp_path: Path, houses: Houses) -> None:
    with backend("postgres", tmp_path) as settings:
        promoted = _flaky_canary(settings, houses)
        with _servers(settings, tmp_path, 2) as servers:
            sent = _drive(servers, settings)
            _check_callers_and_event(sent, settings, promoted)
            for server in servers:  # both apply the rollback
                wait_until(lambda s=server: s.metric("modelyard_canary_weight", model=MODEL) == 0.0, 10,
                           "both servers to see the canary's weight at 0")
            logs = [s.log() for s in servers]
            assert sum("canary watcher rolled back" in log for log in logs) == 1
            assert sum("another process acts (lease held elsewhere)" in log for log in logs) == 1
        assert len(_rollbacks(settings)) == 1
