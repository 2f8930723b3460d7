"""``modelyard.rollout`` and ``modelyard.checks`` export exactly their ``__all__`` (the server's API)."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

import modelyard.checks
import modelyard.rollout


@pytest.mark.parametrize("module", [modelyard.rollout, modelyard.checks])
def test_all_is_exactly_what_is_exported(module: ModuleType) -> None:
    exported = {n for n, v in vars(module).items() if not n.startswith("_") and not inspect.ismodule(v)}
    assert set(module.__all__) == exported
    assert len(module.__all__) == len(set(module.__all__))
