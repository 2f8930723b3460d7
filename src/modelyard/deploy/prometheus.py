"""The alert rules, expressed for Prometheus: alerting rules, a scrape config, an Alertmanager receiver.

``modelyard deploy prometheus NAME --out DIR`` writes these so a team that already runs Prometheus,
Alertmanager and Grafana gets the same thresholds the server's own monitor uses (``alerts.rules_for``), on
the metrics the server exports at ``/metrics``. Thresholds are taken from one version (the production alias
by default) and applied to every version of the model.

Where the server evaluates a window of logged traffic (an hour by default), Prometheus evaluates rates over
``rate_window`` (5m). Prediction ranges are read from the ``modelyard_prediction_value`` histogram: "more
than f of the predictions above ``high``" becomes "the (1 - f) quantile is above ``high``", accurate to the
histogram's bucket layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from modelyard.deploy.common import promql_quote
from modelyard.deploy.grafana import grafana_dashboard
from modelyard.monitor.drift import PREDICTION
from modelyard.monitor.quality import HIGHER_IS_BETTER

__all__ = ["alerting_rules", "alertmanager_config", "grafana_dashboard", "scrape_config", "write_prometheus"]


def alerting_rules(
    model: str, rules: dict[str, dict[str, Any]], *, rate_window: str = "5m", hold: str = "1m"
) -> dict[str, Any]:
    """A Prometheus rule file (as a dict) with one group for ``model``."""
    sel = f"model={promql_quote(model)}"
    out: list[dict[str, Any]] = []

    def add(name: str, expr: str, severity: str, summary: str, **labels: str) -> None:
        out.append(
            {
                "alert": name,
                "expr": expr,
                "for": hold,
                "labels": {"severity": severity, **labels},
                "annotations": {"summary": summary},
            }
        )

    r = rules["prediction_range"]
    if r["enabled"] and not r.get("classes") and (r.get("low") is not None or r.get("high") is not None):
        f = float(r["max_fraction"])
        buckets = (
            f"sum by (model, version, le) (rate(modelyard_prediction_value_bucket{{{sel}}}[{rate_window}]))"
        )
        parts = []
        if r.get("high") is not None:
            parts.append(f"histogram_quantile({1 - f:g}, {buckets}) > {float(r['high']):g}")
        if r.get("low") is not None:
            parts.append(f"histogram_quantile({f:g}, {buckets}) < {float(r['low']):g}")
        add(
            "ModelyardPredictionOutOfRange",
            " or ".join(f"({p})" for p in parts),
            r["severity"],
            f"{{{{ $labels.model }}}} v{{{{ $labels.version }}}}: more than {f:.0%} of predictions outside "
            f"[{_g(r.get('low'))}, {_g(r.get('high'))}]",
            rule="prediction_range",
        )
    r = rules["input_drift"]
    if r["enabled"]:
        psi_in = f"modelyard_drift_psi{{{sel}, feature!={promql_quote(PREDICTION)}}}"
        expr = f"max by (model, version, feature) ({psi_in}) > {r['psi']:g}"
        if r.get("ks") is not None:
            expr = (
                f"({expr}) or (max by (model, version, feature) "
                f"(modelyard_drift_ks{{{sel}, feature!={promql_quote(PREDICTION)}}}) > {r['ks']:g})"
            )
        add(
            "ModelyardInputDrift",
            expr,
            r["severity"],
            "{{ $labels.model }} v{{ $labels.version }}: input '{{ $labels.feature }}' drifted "
            f"(PSI {{{{ $value }}}} > {r['psi']:g})",
            rule="input_drift",
        )
    r = rules["prediction_drift"]
    if r["enabled"]:
        add(
            "ModelyardPredictionDrift",
            f"max by (model, version, feature) (modelyard_drift_psi{{{sel}, feature={promql_quote(PREDICTION)}}})"
            f" > {r['psi']:g}",
            r["severity"],
            "{{ $labels.model }} v{{ $labels.version }}: predictions drifted "
            f"(PSI {{{{ $value }}}} > {r['psi']:g})",
            rule="prediction_drift",
        )
    r = rules["error_rate"]
    if r["enabled"]:
        reqs = f"sum by (model, version) (rate(modelyard_requests_total{{{sel}}}[{rate_window}]))"
        errs = f"sum by (model, version) (rate(modelyard_request_errors_total{{{sel}}}[{rate_window}]))"
        volume = f"sum by (model, version) (increase(modelyard_requests_total{{{sel}}}[{rate_window}]))"
        add(
            "ModelyardErrorRate",
            f"({errs} / {reqs} > {r['max_rate']:g}) and ({volume} >= {r['min_requests']})",
            r["severity"],
            "{{ $labels.model }} v{{ $labels.version }}: "
            f"error rate {{{{ $value | humanizePercentage }}}} above {r['max_rate']:.0%}",
            rule="error_rate",
        )
    r = rules["latency"]
    if r["enabled"]:
        latency = f"rate(modelyard_request_latency_seconds_bucket{{{sel}}}[{rate_window}])"
        buckets = f"sum by (model, version, le) ({latency})"
        add(
            "ModelyardLatencyP95",
            f"histogram_quantile(0.95, {buckets}) > {float(r['p95_ms']) / 1000:g}",
            r["severity"],
            "{{ $labels.model }} v{{ $labels.version }}: p95 latency {{ $value | humanizeDuration }}"
            f" above {float(r['p95_ms']):g} ms",
            rule="latency",
        )
    r = rules.get("performance") or {}
    if r.get("enabled") and r.get("heldout") is not None:
        metric, heldout, limit = str(r["metric"]), float(r["heldout"]), float(r["max_degradation"])
        live = f'modelyard_live_metric{{{sel}, metric={promql_quote(metric)}}}'
        higher = metric in HIGHER_IS_BETTER
        bound = heldout - limit * abs(heldout) if higher else heldout + limit * abs(heldout)
        labelled = f"on (model, version) modelyard_labelled_rows{{{sel}}} >= {int(r['min_labelled'])}"
        add(
            "ModelyardLivePerformance",
            f"({live} {'<' if higher else '>'} {bound:g}) and {labelled}",
            r["severity"],
            "{{ $labels.model }} v{{ $labels.version }}: live "
            f"{metric} {{{{ $value }}}} worse than {heldout:g} held out by more than {limit:.0%}",
            rule="performance",
        )
    return {"groups": [{"name": f"modelyard-{model}", "rules": out}, prediction_log_rules()]}


def prediction_log_rules(*, min_records: int = 1000, hold: str = "10m") -> dict[str, Any]:
    """The prediction log's own group: a write-ahead backlog that keeps growing (the database cannot keep up
    or is away) and segment writes that fail (requests refused with 503, or answered unlogged)."""
    summary = "{{ $labels.instance }}: prediction-log backlog growing for " + hold + " ({{ $value }} records/s)"
    return {"name": "modelyard-prediction-log", "rules": [
        {"alert": "ModelyardLogBacklogGrowing",
         "expr": f"(deriv(modelyard_log_backlog_records[{hold}]) > 0) and (modelyard_log_backlog_records > "
                 f"{min_records})",
         "for": hold, "labels": {"severity": "warning", "rule": "log_backlog"},
         "annotations": {"summary": summary}},
        {"alert": "ModelyardLogWriteFailures",
         "expr": "increase(modelyard_log_write_failures_total[5m]) > 0",
         "for": "0m", "labels": {"severity": "critical", "rule": "log_write"},
         "annotations": {"summary": "{{ $labels.instance }}: the prediction log cannot be written "
                                    "(requests refused with 503, or answered unlogged)"}},
    ]}


def scrape_config(
    rule_file: str, targets: list[str], *, alertmanager: str | None = None, interval: str = "15s"
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [rule_file],
        "scrape_configs": [
            {"job_name": "modelyard", "metrics_path": "/metrics", "static_configs": [{"targets": targets}]}
        ],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


def alertmanager_config(webhook: str) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "modelyard-webhook",
            "group_by": ["alertname", "model", "version", "feature"],
            "group_wait": "30s",
            "repeat_interval": "4h",
        },
        "receivers": [
            {"name": "modelyard-webhook", "webhook_configs": [{"url": webhook, "send_resolved": True}]}
        ],
    }


def write_prometheus(
    out: Path,
    model: str,
    rules: dict[str, dict[str, Any]],
    *,
    targets: list[str],
    webhook: str | None = None,
    alertmanager: str | None = None,
    rate_window: str = "5m",
) -> list[Path]:
    """Write the rule file, prometheus.yml, a Grafana dashboard and (with a webhook) alertmanager.yml."""
    out.mkdir(parents=True, exist_ok=True)
    rule_file = f"modelyard-{model}.rules.yml"
    files = {
        rule_file: yaml.safe_dump(
            alerting_rules(model, rules, rate_window=rate_window), sort_keys=False, width=1000
        ),
        "prometheus.yml": yaml.safe_dump(
            scrape_config(rule_file, targets, alertmanager=alertmanager), sort_keys=False
        ),
        f"grafana-{model}.json": json.dumps(
            grafana_dashboard(model, rules, rate_window=rate_window), indent=2
        ),
    }
    if webhook:
        files["alertmanager.yml"] = yaml.safe_dump(alertmanager_config(webhook), sort_keys=False)
    written = []
    for name, text in files.items():
        (out / name).write_text(text)
        written.append(out / name)
    return written


def _g(value: float | None) -> str:
    """A bound as the rule expression writes it (``50000``, not ``50000.0``); ``None`` when open."""
    return "None" if value is None else f"{float(value):g}"
