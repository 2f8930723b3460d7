"""A Grafana dashboard for one model: the monitor's thresholds drawn on the metrics ``/metrics`` exports.

Written by ``modelyard deploy prometheus`` beside the Prometheus rule file (``deploy/prometheus.py``), with
the same thresholds (``monitor.alerts.rules_for``).
"""

from __future__ import annotations

from typing import Any

from modelyard.deploy.common import promql_quote
from modelyard.monitor.drift import PREDICTION

__all__ = ["grafana_dashboard"]


def grafana_dashboard(
    model: str, rules: dict[str, dict[str, Any]], *, rate_window: str = "5m"
) -> dict[str, Any]:
    """A Grafana dashboard (JSON model) with the same thresholds drawn on each chart."""
    sel = f"model={promql_quote(model)}"
    panels: list[dict[str, Any]] = []

    def panel(
        title: str,
        targets: list[tuple[str, str]],
        *,
        unit: str = "short",
        threshold: float | None = None,
        kind: str = "timeseries",
        width: int = 12,
    ) -> None:
        n = len(panels)
        steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
        if threshold is not None:
            steps.append({"color": "red", "value": threshold})
        panels.append(
            {
                "id": n + 1,
                "type": kind,
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {
                    "h": 8,
                    "w": width,
                    "x": (n % (24 // width)) * width if width < 24 else 0,
                    "y": (n // 2) * 8,
                },
                "fieldConfig": {
                    "defaults": {
                        "unit": unit,
                        "thresholds": {"mode": "absolute", "steps": steps},
                        "custom": {"thresholdsStyle": {"mode": "line" if threshold else "off"}},
                    },
                    "overrides": [],
                },
                "targets": [
                    {"refId": chr(65 + i), "expr": e, "legendFormat": leg}
                    for i, (e, leg) in enumerate(targets)
                ],
            }
        )

    w = rate_window
    panel(
        "Requests per second",
        [
            (
                f"sum by (version, route) (rate(modelyard_requests_total{{{sel}}}[{w}]))",
                "v{{version}} {{route}}",
            )
        ],
        unit="reqps",
    )
    panel(
        "Error rate",
        [
            (
                f"sum by (version) (rate(modelyard_request_errors_total{{{sel}}}[{w}])) / "
                f"sum by (version) (rate(modelyard_requests_total{{{sel}}}[{w}]))",
                "v{{version}}",
            )
        ],
        unit="percentunit",
        threshold=rules["error_rate"]["max_rate"],
    )
    lat = f"sum by (version, le) (rate(modelyard_request_latency_seconds_bucket{{{sel}}}[{w}]))"
    panel(
        "Latency",
        [
            (f"histogram_quantile(0.5, {lat})", "p50 v{{version}}"),
            (f"histogram_quantile(0.95, {lat})", "p95 v{{version}}"),
        ],
        unit="s",
        threshold=float(rules["latency"]["p95_ms"]) / 1000,
    )
    pred = f"sum by (version, le) (rate(modelyard_prediction_value_bucket{{{sel}}}[{w}]))"
    panel(
        "Predictions (p1, p50, p99)",
        [
            (f"histogram_quantile({q}, {pred})", f"p{int(q * 100)} v{{{{version}}}}")
            for q in (0.01, 0.5, 0.99)
        ],
        threshold=rules["prediction_range"].get("high"),
    )
    panel(
        "Input drift (PSI)",
        [(f"modelyard_drift_psi{{{sel}, feature!={promql_quote(PREDICTION)}}}", "{{feature}} v{{version}}")],
        threshold=rules["input_drift"]["psi"],
    )
    panel(
        "Prediction drift (PSI) and KS",
        [
            (f"modelyard_drift_psi{{{sel}, feature={promql_quote(PREDICTION)}}}", "PSI v{{version}}"),
            (f"modelyard_drift_ks{{{sel}}}", "KS {{feature}} v{{version}}"),
        ],
        threshold=rules["prediction_drift"]["psi"],
    )
    panel(
        "Missing and out-of-range inputs",
        [
            (f"sum by (feature) (rate(modelyard_input_missing_total{{{sel}}}[{w}]))", "missing {{feature}}"),
            (
                f"sum by (feature) (rate(modelyard_input_out_of_range_total{{{sel}}}[{w}]))",
                "out of range {{feature}}",
            ),
        ],
    )
    panel(
        "Aliases and canary weight",
        [
            (f"modelyard_alias_version{{{sel}}}", "{{alias}}"),
            (f"modelyard_canary_weight{{{sel}}}", "canary weight"),
        ],
        kind="stat",
    )
    return {
        "title": f"modelyard: {model}",
        "uid": f"modelyard-{model}"[:40],
        "schemaVersion": 39,
        "version": 1,
        "tags": ["modelyard"],
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }
