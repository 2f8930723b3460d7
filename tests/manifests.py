"""Typed manifests for tests that need only a few sections (the rest filled with the smallest valid values)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelyard.bundle import Manifest


def manifest_of(sections: Mapping[str, Any]) -> Manifest:
    """A ``Manifest`` holding ``sections``: a name, a task, an empty input schema and an output schema of
    the task are filled in when ``sections`` lacks them."""
    task = sections.get("task") or (sections.get("output_schema") or {}).get("task") or "regression"
    base: dict[str, Any] = {"name": "m", "task": task, "input_schema": {"columns": []},
                            "output_schema": {"task": task}}
    return Manifest.from_dict({**base, **sections})
