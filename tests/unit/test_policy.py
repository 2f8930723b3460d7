"""The routing policy: sticky, stable across processes, weighted as asked."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from modelyard.errors import VersionNotFoundError
from modelyard.registry import AliasRecord
from modelyard.rollout import RoutingPolicy, bucket, choose, routing_key
from tests.conftest import cli_env

NOW = datetime.now(UTC)


def aliases(production: int = 1, canary: int | None = 2, weight: float | None = 0.2,
            shadow: int | None = None) -> dict[str, AliasRecord]:
    out = {"production": AliasRecord("production", production, None, NOW)}
    if canary is not None:
        out["canary"] = AliasRecord("canary", canary, weight, NOW)
    if shadow is not None:
        out["shadow"] = AliasRecord("shadow", shadow, None, NOW)
    return out


def test_bucket_is_the_same_in_another_process_with_another_hash_seed() -> None:
    keys = [f"customer-{i}" for i in range(50)]
    code = ("import json,sys; from modelyard.rollout import bucket; "
            "print(json.dumps([bucket('m', k) for k in json.loads(sys.argv[1])]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(keys)], capture_output=True, text=True,
                         check=True, env=cli_env(PYTHONHASHSEED="12345")).stdout
    assert json.loads(out) == [bucket("m", k) for k in keys]
    assert all(0 <= b < 1 for b in json.loads(out))


@pytest.mark.parametrize("weight", [0.05, 0.2, 0.5])
def test_canary_gets_its_weight_of_distinct_keys(weight: float) -> None:
    policy = RoutingPolicy("house-prices", aliases(weight=weight))
    routes = [policy.choose(f"key-{i}") for i in range(5000)]
    share = sum(r.is_canary for r in routes) / len(routes)
    assert abs(share - weight) <= 0.02
    assert {r.version for r in routes if r.is_canary} == {2}
    assert {r.version for r in routes if not r.is_canary} == {1}


def test_one_key_always_sees_one_version() -> None:
    policy = RoutingPolicy("house-prices", aliases(weight=0.5))
    for i in range(200):
        first = policy.choose(f"user-{i}").version
        assert all(policy.choose(f"user-{i}").version == first for _ in range(20))
        assert RoutingPolicy("house-prices", aliases(weight=0.5)).choose(f"user-{i}").version == first


def test_raising_the_weight_never_moves_a_canary_key_back() -> None:
    low = RoutingPolicy("m", aliases(weight=0.1))
    high = RoutingPolicy("m", aliases(weight=0.3))
    keys = [str(i) for i in range(3000)]
    assert {k for k in keys if low.choose(k).is_canary} <= {k for k in keys if high.choose(k).is_canary}


def test_no_weight_zero_weight_or_same_version_means_no_canary_traffic() -> None:
    cases = (aliases(weight=None), aliases(weight=0.0), aliases(canary=1, weight=0.5), aliases(canary=None))
    for al in cases:
        assert not any(choose("m", al, str(i)).is_canary for i in range(500))


def test_full_weight_sends_everything_to_the_canary_and_mirrors_it() -> None:
    routes = [choose("m", aliases(weight=1.0), str(i)) for i in range(200)]
    assert all(r.is_canary and r.version == 2 and r.primary == 1 and r.mirror for r in routes)
    assert not any(choose("m", aliases(weight=1.0), str(i), mirror=False).mirror for i in range(20))


def test_shadow_runs_unless_it_already_answered() -> None:
    policy = RoutingPolicy("m", aliases(canary=2, weight=0.5, shadow=2))
    routes = [policy.choose(str(i)) for i in range(400)]
    assert all(r.shadow is None for r in routes if r.version == 2)
    assert all(r.shadow == 2 and not r.mirror for r in routes if r.version == 1)
    assert policy.describe() == {"primary": 1, "canary": 2, "canary_weight": 0.5, "shadow": 2}


def test_without_production_there_is_nothing_to_route() -> None:
    with pytest.raises(VersionNotFoundError, match="no 'production' alias"):
        RoutingPolicy("m", {"canary": AliasRecord("canary", 2, 0.5, NOW)})


def test_routing_key_prefers_header_then_column_then_request_id() -> None:
    row = {"customer_id": 42, "x": 1}
    assert routing_key("req-1", header="abc", row=row, column="customer_id") == "abc"
    assert routing_key("req-1", row=row, column="customer_id") == "42"
    assert routing_key("req-1", row={"x": 1}, column="customer_id") == "req-1"
    assert routing_key("req-1") == "req-1"
