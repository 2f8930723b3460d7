"""Per-model settings in the registry (``modelyard_models.settings``), on SQLite and PostgreSQL: written through
the one row-locked settings store, by the registry and by the monitor's rule overrides alike."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import insert

from modelyard.config import Settings
from modelyard.errors import ModelNotFoundError
from modelyard.monitor.alerts import load_overrides, save_overrides
from modelyard.registry import Registry, tables
from tests.conftest import train_and_publish


def test_registry_settings_go_through_the_settings_store(any_settings: Settings, house_spec: Path) -> None:
    """The merge rules themselves are checked on every settings store in tests/contracts."""
    train_and_publish(house_spec, any_settings)
    registry = Registry(any_settings)
    assert registry.model_settings("house-prices") == {} and registry.all_model_settings() == {}
    registry.update_model_settings("house-prices", "monitor", {"rules": {"error_rate": {"max": 0.1}}})
    assert registry.update_model_settings("house-prices", "rollout", {"routing_column": "area_sqm"}) == {
        "routing_column": "area_sqm"}
    assert registry.model_settings("house-prices") == registry.all_model_settings()["house-prices"] == {
        "monitor": {"rules": {"error_rate": {"max": 0.1}}}, "rollout": {"routing_column": "area_sqm"}}
    with pytest.raises(ModelNotFoundError):
        registry.update_model_settings("no-such-model", "rollout", {"x": 1})
    with pytest.raises(ModelNotFoundError):
        registry.model_settings("no-such-model")


@pytest.mark.postgres
def test_concurrent_settings_writers_on_postgres_lose_no_update(pg_settings: Settings) -> None:
    """Alert-rule overrides (``monitor.alerts.save_overrides``) and rollout settings
    (``Registry.update_model_settings``) written by four threads at once: every key of every writer is kept
    (an unlocked read-modify-write loses some of them)."""
    registry = Registry(pg_settings)
    with registry.engine.begin() as conn:
        conn.execute(insert(tables.models).values(name="house-prices", created_at=tables.utcnow()))
    rounds = 25
    start = threading.Barrier(4)

    def write_rule(rule: str) -> None:
        start.wait()
        for i in range(rounds):
            save_overrides(registry.engine, "house-prices", {rule: {f"k{i}": i}})

    def write_rollout(prefix: str) -> None:
        start.wait()
        for i in range(rounds):
            Registry(pg_settings).update_model_settings("house-prices", "rollout", {f"{prefix}{i}": i})

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(write_rule, "latency"), pool.submit(write_rule, "error_rate"),
                   pool.submit(write_rollout, "a"), pool.submit(write_rollout, "b")]
        for f in futures:
            f.result()
    stored = registry.model_settings("house-prices")
    expected = {f"k{i}": i for i in range(rounds)}
    assert stored["monitor"]["rules"] == {"latency": expected, "error_rate": expected}
    assert load_overrides(registry.engine, "house-prices") == {"latency": expected, "error_rate": expected}
    assert stored["rollout"] == {f"{p}{i}": i for p in "ab" for i in range(rounds)}
