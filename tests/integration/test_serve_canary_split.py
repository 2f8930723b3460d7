"""Sticky canary routing in a real server (SQLite and PostgreSQL): a 20% split over 5,000 routing keys,
keys from a header, a configured column or the request id, and references that name their version."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelyard.config import Settings
from modelyard.registry import Registry
from tests.integration.rollout_serving import (
    MODEL,
    SERVER_BACKEND,
    canary_shadow_server,
    fit_houses,
    post_all,
)
from tests.integration.rollout_serving import expected_version as _expected
from tests.integration.serving import house_rows
from tests.support import Server, wait_until


@pytest.fixture(scope="module", params=SERVER_BACKEND)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Server, Settings]]:
    with canary_shadow_server(request.param, tmp_path_factory.mktemp(f"split_{request.param}"),
                              fit_houses()) as served:
        yield served


def _url(server: Server, ref: str = MODEL) -> str:
    return f"{server.url}/v1/models/{ref}/predict"


def test_canary_gets_20_percent_of_2000_keys_and_each_key_always_the_same_version(
    served: tuple[Server, Settings],
) -> None:
    server, _ = served
    keys = [f"customer-{i}" for i in range(2000)]
    rows = house_rows(200, seed=3)
    replies = post_all(_url(server), [rows[i % 200] for i in range(2000)],
                       headers=[{"X-Routing-Key": k} for k in keys])
    assert {r.status for r in replies} == {200}, [r.body for r in replies if r.status != 200][:3]
    versions = [r.version for r in replies]
    share = versions.count(2) / len(versions)
    assert 0.17 <= share <= 0.23, share  # 0.2 +- 3.4 standard deviations of a fair split of 2000 keys
    assert versions == [_expected(k) for k in keys]  # every replica computes the same split
    again = post_all(_url(server), [rows[(i + 7) % 200] for i in range(500)],
                     headers=[{"X-Routing-Key": k} for k in keys[:500]])
    assert [r.version for r in again] == versions[:500]  # sticky: other rows, other requests, same version


def test_routing_column_from_the_model_settings_is_the_key(served: tuple[Server, Settings]) -> None:
    server, settings = served
    registry = Registry(settings)
    registry.update_model_settings(MODEL, "rollout", {"routing_column": "area_sqm"})
    try:
        rows = house_rows(300, seed=8)
        for i, row in enumerate(rows):
            row["area_sqm"] = 50.0 + i  # distinct keys
        want = [_expected(str(row["area_sqm"])) for row in rows]

        def follows_column() -> bool:
            return [r.version for r in post_all(_url(server), rows)] == want

        wait_until(follows_column, 15, "the server to route by the area_sqm column")
        same = post_all(_url(server), rows, headers=[{"X-Request-ID": f"other-{i}"} for i in range(300)])
        assert [r.version for r in same] == want
        header = post_all(_url(server), rows[:50], headers=[{"X-Routing-Key": f"k{i}"} for i in range(50)])
        assert [r.version for r in header] == [_expected(f"k{i}") for i in range(50)]  # the header wins
    finally:
        registry.update_model_settings(MODEL, "rollout", {"routing_column": None})
        ids = [f"back-{i}" for i in range(100)]
        wait_until(lambda: [r.version for r in post_all(_url(server), rows[:100], headers=[
            {"X-Request-ID": i} for i in ids])] == [_expected(i) for i in ids], 15, "the column to be dropped")


def test_without_header_or_column_the_request_id_is_the_key(served: tuple[Server, Settings]) -> None:
    server, _ = served
    ids = [f"req-{i}" for i in range(400)]
    replies = post_all(_url(server), house_rows(400, seed=4), headers=[{"X-Request-ID": i} for i in ids])
    assert [r.version for r in replies] == [_expected(i) for i in ids]
    assert [r.request_id for r in replies] == ids


def test_explicit_references_go_where_they_say(served: tuple[Server, Settings]) -> None:
    server, _ = served
    rows = house_rows(100, seed=6)
    keys = [{"X-Routing-Key": f"customer-{i}"} for i in range(100)]
    assert {r.version for r in post_all(_url(server, f"{MODEL}@1"), rows, headers=keys)} == {1}
    assert {r.version for r in post_all(_url(server, f"{MODEL}@canary"), rows, headers=keys)} == {2}
    assert {r.version for r in post_all(_url(server, f"{MODEL}@shadow"), rows, headers=keys)} == {3}
    split = [r.version for r in post_all(_url(server, f"{MODEL}@production"), rows, headers=keys)]
    assert split == [_expected(f"customer-{i}") for i in range(100)]
