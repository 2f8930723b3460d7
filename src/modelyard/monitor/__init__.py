"""Watching served models: Prometheus metrics, drift against the bundle's reference, alerts, a dashboard."""

from __future__ import annotations

__all__: list[str] = []  # nothing at package level: import the module that owns the concept
