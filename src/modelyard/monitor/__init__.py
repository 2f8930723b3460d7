"""Watching served models: Prometheus metrics, drift against the bundle's reference, alerts, a dashboard."""
