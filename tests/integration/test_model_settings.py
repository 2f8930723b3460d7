"""Per-model settings in the registry (``my_models.settings``), on SQLite and PostgreSQL: sections merge,
``None`` removes a key, other sections are kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.config import Settings
from modelyard.errors import ModelNotFoundError
from modelyard.registry import Registry
from tests.conftest import train_and_publish


def test_rollout_settings_merge_and_keep_other_sections(any_settings: Settings, house_spec: Path) -> None:
    train_and_publish(house_spec, any_settings)
    registry = Registry(any_settings)
    assert registry.model_settings("house-prices") == {}
    assert registry.all_model_settings() == {}
    registry.update_model_settings("house-prices", "monitor", {"rules": {"error_rate": {"max": 0.1}}})
    assert registry.update_model_settings("house-prices", "rollout", {"routing_column": "area_sqm"}) == {
        "routing_column": "area_sqm"}
    registry.update_model_settings("house-prices", "rollout", {"other": 1})
    assert registry.model_settings("house-prices") == {
        "monitor": {"rules": {"error_rate": {"max": 0.1}}},
        "rollout": {"routing_column": "area_sqm", "other": 1},
    }
    registry.update_model_settings("house-prices", "rollout", {"routing_column": None})
    assert registry.all_model_settings()["house-prices"]["rollout"] == {"other": 1}
    with pytest.raises(ModelNotFoundError):
        registry.update_model_settings("no-such-model", "rollout", {"x": 1})
    with pytest.raises(ModelNotFoundError):
        registry.model_settings("no-such-model")
