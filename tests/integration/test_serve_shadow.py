"""Shadow and mirror work in a real server (SQLite and PostgreSQL): shadow outputs only the log sees,
canary requests mirrored to the primary, a failing shadow and a full shadow queue that never touch the
caller, and the rollout metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelyard.config import Settings
from tests.integration.rollout_serving import (
    BROKEN,
    MODEL,
    OFFSET,
    SERVER_BACKEND,
    SERVER_PYTHONPATH,
    WEIGHT,
    Houses,
    backend,
    canary_shadow_server,
    fit_houses,
    logged,
    post_all,
)
from tests.integration.rollout_serving import expected_version as _expected
from tests.integration.serving import house_rows
from tests.rollout_estimators import Slow
from tests.support import Server, wait_until

SLOW = "houses-slow-shadow"  # (own server) v1 production, v2 shadow sleeping 0.3 s per call; queue of 2


@pytest.fixture(scope="module")
def houses() -> Houses:
    return fit_houses()


@pytest.fixture(scope="module", params=SERVER_BACKEND)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           houses: Houses) -> Iterator[tuple[Server, Settings]]:
    with canary_shadow_server(request.param, tmp_path_factory.mktemp(f"shadow_{request.param}"),
                              houses) as served:
        yield served


@pytest.fixture(scope="module")
def slow_shadow(tmp_path_factory: pytest.TempPathFactory, houses: Houses) -> Iterator[tuple[Server, Settings]]:
    """A shadow that sleeps 0.3 s per call behind a queue of 2 jobs."""
    folder = tmp_path_factory.mktemp("slow_shadow")
    with backend("sqlite", folder) as settings:
        houses.publish(settings, SLOW, alias="production")
        houses.publish(settings, SLOW, Slow(houses.pipeline, 0.3), alias="shadow")
        server = Server(settings, folder / "server.log", PYTHONPATH=SERVER_PYTHONPATH,
                        MODELYARD_WATCH_INTERVAL="0", MODELYARD_SHADOW_QUEUE_SIZE="2",
                        MODELYARD_LOG_FLUSH_INTERVAL="0.1")
        with server:
            yield server, settings


def _url(server: Server, ref: str = MODEL) -> str:
    return f"{server.url}/v1/models/{ref}/predict"


def test_shadow_outputs_are_logged_under_the_request_id_and_never_returned(
    served: tuple[Server, Settings],
) -> None:
    server, settings = served
    ids = [f"shadowed-{i}" for i in range(60)]
    replies = post_all(_url(server), house_rows(60, seed=12), headers=[{"X-Request-ID": i} for i in ids])
    assert {r.status for r in replies} == {200}
    for r in replies:
        assert r.version in (1, 2) and r.body["predictions"][0] < OFFSET / 10
        assert set(r.body) == {"predictions", "model", "request_id"}

    def shadows() -> dict[str, Any]:
        found = logged(settings, MODEL, "shadow")
        return found if all(i in found for i in ids) else {}

    shadow = wait_until(shadows, 30, "the shadow records of every request")
    answered = {**logged(settings, MODEL, "primary"), **logged(settings, MODEL, "canary")}
    for r in replies:
        record = shadow[r.request_id]
        assert record.version == 3 and record.error is None
        assert record.inputs == answered[r.request_id].inputs
        assert record.outputs[0] == pytest.approx(r.body["predictions"][0] + OFFSET)


def test_canary_requests_are_mirrored_to_the_primary_for_the_watcher(served: tuple[Server, Settings]) -> None:
    server, settings = served
    keys = [k for k in (f"mirror-{i}" for i in range(400)) if _expected(k) == 2][:40]
    replies = post_all(_url(server), house_rows(len(keys), seed=13),
                       headers=[{"X-Routing-Key": k} for k in keys])
    assert {r.version for r in replies} == {2}
    ids = {r.request_id for r in replies}

    def mirrored() -> dict[str, Any]:
        found = logged(settings, MODEL, "mirror")
        return found if ids <= set(found) else {}

    mirror = wait_until(mirrored, 30, "a mirror record of every canary request")
    canary = logged(settings, MODEL, "canary")
    for r in replies:
        assert mirror[r.request_id].version == 1 and canary[r.request_id].version == 2
        assert mirror[r.request_id].outputs == pytest.approx(r.body["predictions"])  # same fit, same answer


def test_a_failing_shadow_never_affects_the_caller(served: tuple[Server, Settings]) -> None:
    server, settings = served
    rows = house_rows(40, seed=14)
    for row in rows[::2]:
        row["crime_index"] = -1.0  # the shadow raises on these
    ids = [f"broken-{i}" for i in range(40)]
    replies = post_all(_url(server, BROKEN), rows, headers=[{"X-Request-ID": i} for i in ids])
    assert [r.status for r in replies] == [200] * 40 and {r.version for r in replies} == {1}

    def shadows() -> dict[str, Any]:
        found = logged(settings, BROKEN, "shadow")
        return found if all(i in found for i in ids) else {}

    shadow = wait_until(shadows, 30, "a shadow record of every request")
    failed = {i for i in ids if shadow[i].error}
    assert failed == set(ids[::2])
    assert all("negative crime index" in shadow[i].error for i in failed)
    assert server.metric("modelyard_shadow_errors_total", model=BROKEN, version="2") >= 20


def test_a_full_shadow_queue_drops_and_counts_without_failing_a_request(
    slow_shadow: tuple[Server, Settings],
) -> None:
    server, settings = slow_shadow
    before = server.metric("modelyard_shadow_dropped_total", model=SLOW, route="shadow")
    replies = post_all(_url(server, SLOW), house_rows(120, seed=15), concurrency=24)
    assert [r.status for r in replies] == [200] * 120
    dropped = server.metric("modelyard_shadow_dropped_total", model=SLOW, route="shadow") - before
    assert dropped > 0
    ids = {r.request_id for r in replies}

    def settled() -> bool:
        return len(ids & set(logged(settings, SLOW, "shadow"))) + dropped == len(ids)

    wait_until(settled, 60, "every shadow job to be either logged or dropped")


def test_rollout_metrics_follow_the_aliases(served: tuple[Server, Settings]) -> None:
    server, _ = served
    assert server.metric("modelyard_canary_weight", model=MODEL) == pytest.approx(WEIGHT)
    assert server.metric("modelyard_canary_weight", model=BROKEN) == 0.0
    versions = {alias: server.metric("modelyard_alias_version", model=MODEL, alias=alias)
                for alias in ("production", "canary", "shadow")}
    assert versions == {"production": 1, "canary": 2, "shadow": 3}
    listed = httpx.get(f"{server.url}/v1/models", timeout=10).json()["models"]
    serving = {m["name"]: m["serving"] for m in listed}
    assert serving[MODEL] == {"production": 1, "canary": 2, "shadow": 3}  # canary and shadow kept loaded
