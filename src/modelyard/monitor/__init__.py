"""Watching served models: metrics, drift against the bundle's reference, alerts and a dashboard."""
