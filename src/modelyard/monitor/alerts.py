"""Alert rules and their state: evaluated on a window of traffic, recorded in ``modelyard_alerts``.

Rules and their defaults (``DEFAULT_RULES``) are refined by the bundle (the expected prediction range is the
output schema's observed range; a ``monitoring.rules`` section in the manifest, if any) and then by the
model's settings in the registry (``modelyard_models.settings["monitor"]["rules"]``), so an operator can tune one
model without republishing it.

Each rule is a small object (``Rule``: ``evaluate(window) -> findings``); ``alert_rules`` builds the enabled
ones from a configuration and ``alerting.AlertRuleSet`` runs them for every served version.

A verdict is firing, ok, or unknown (too little traffic to say); ``alert_state.AlertBook`` turns verdicts into
recorded alerts and notifications.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from modelyard.bundle import Manifest
from modelyard.errors import BadRequestError, ModelNotFoundError
from modelyard.monitor.drift import PREDICTION, DriftReport
from modelyard.monitor.quality import HIGHER_IS_BETTER
from modelyard.monitor.rules import Finding, Rule
from modelyard.monitor.window import Window
from modelyard.registry.db import Engine
from modelyard.registry.settings import ModelSettings, SqlSettingsStore

DEFAULT_RULES: dict[str, dict[str, Any]] = {
    "prediction_range": {
        "enabled": True,
        "low": None,
        "high": None,
        "max_fraction": 0.01,
        "min_rows": 20,
        "severity": "critical",
    },
    "input_drift": {"enabled": True, "psi": 0.2, "ks": None, "min_rows": 200, "severity": "warning"},
    "prediction_drift": {"enabled": True, "psi": 0.2, "min_rows": 200, "severity": "warning"},
    "error_rate": {"enabled": True, "max_rate": 0.05, "min_requests": 20, "severity": "critical"},
    "latency": {"enabled": True, "p95_ms": 500.0, "min_requests": 20, "severity": "warning"},
    "performance": {"enabled": True, "metric": None, "max_degradation": 0.1, "min_labelled": 100,
                    "heldout": None, "severity": "warning"},
}


def rules_for(
    manifest: Manifest, overrides: dict[str, dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """Defaults, then what the bundle knows, then the model's overrides."""
    rules = copy.deepcopy(DEFAULT_RULES)
    output = manifest.output_schema
    if output.task == "classification" or output.classes is not None:
        rules["prediction_range"]["classes"] = [str(c) for c in output.classes or []]
    else:
        rules["prediction_range"]["low"] = output.min
        rules["prediction_range"]["high"] = output.max
    perf = rules["performance"]
    perf["metric"] = "mae" if manifest.task == "regression" else "accuracy"
    for layer in (manifest.monitoring.rules if manifest.monitoring else {}, overrides or {}):
        for rule, params in layer.items():
            if rule not in rules:
                raise BadRequestError(f"unknown alert rule '{rule}' (known: {', '.join(DEFAULT_RULES)})")
            rules[rule].update(params)
    if perf.get("heldout") is None and perf["metric"] in manifest.metrics:
        perf["heldout"] = float(manifest.metrics[perf["metric"]])
    return rules


def _range_finding(r: dict[str, Any], window: Window) -> Finding:
    m, v = window.model, window.version
    values = [p for p in window.predictions if p is not None]
    if r.get("classes"):
        allowed = set(r["classes"])
        bad = [p for p in values if str(p) not in allowed]
        expected = f"one of {', '.join(sorted(allowed))}"
    else:
        nums = np.asarray(values, dtype="float64") if values else np.zeros(0)
        low = -np.inf if r.get("low") is None else float(r["low"])
        high = np.inf if r.get("high") is None else float(r["high"])
        bad = list(nums[(nums < low) | (nums > high) | np.isnan(nums)])
        expected = f"within [{r.get('low')}, {r.get('high')}]"
    frac = len(bad) / len(values) if values else 0.0
    enough = len(values) >= r["min_rows"]
    sample = [float(b) if isinstance(b, int | float | np.floating) else str(b) for b in bad[:5]]
    return Finding(
        m,
        v,
        "prediction_range",
        frac > r["max_fraction"] if enough else None,
        frac,
        r["max_fraction"],
        f"{m} v{v}: {len(bad)} of {len(values)} predictions ({frac:.1%}) outside the expected range "
        f"({expected}), e.g. {sample}",
        severity=r["severity"],
        details={
            "out_of_range": len(bad),
            "predictions": len(values),
            "low": r.get("low"),
            "high": r.get("high"),
            "examples": sample,
        },
    )


class PredictionRangeRule:
    """Too many predictions outside the range the bundle saw (numbers) or outside its classes."""

    name = "prediction_range"

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def evaluate(self, window: Window) -> list[Finding]:
        return [_range_finding(self.params, window)]


class ErrorRateRule:
    """The share of failed requests over ``max_rate``, given ``min_requests``."""

    name = "error_rate"

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def evaluate(self, window: Window) -> list[Finding]:
        r, m, v = self.params, window.model, window.version
        enough = window.requests >= r["min_requests"]
        rate = window.error_rate
        return [Finding(m, v, self.name, rate > r["max_rate"] if enough else None, rate, r["max_rate"],
                        f"{m} v{v}: {window.errors} of {window.requests} requests failed ({rate:.1%})",
                        severity=r["severity"])]


class LatencyRule:
    """The p95 latency over ``p95_ms``, given ``min_requests`` timed requests."""

    name = "latency"

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def evaluate(self, window: Window) -> list[Finding]:
        r, m, v = self.params, window.model, window.version
        p95 = window.latency_quantile(0.95)
        enough = len(window.latencies_ms) >= r["min_requests"] and p95 is not None
        return [Finding(m, v, self.name, (p95 > r["p95_ms"]) if enough and p95 is not None else None, p95,
                        r["p95_ms"], f"{m} v{v}: p95 latency {p95 or 0:.1f} ms (limit {r['p95_ms']:.0f} ms)",
                        severity=r["severity"])]


class InputDriftRule:
    """Per input feature: PSI (or KS, when set) against the training reference over the limit."""

    name = "input_drift"

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def evaluate(self, window: Window) -> list[Finding]:
        r, m, v = self.params, window.model, window.version
        out: list[Finding] = []
        for fd in window.drift.features.values() if window.drift is not None else ():
            over_psi = fd.psi is not None and fd.psi > r["psi"]
            over_ks = r.get("ks") is not None and fd.ks is not None and fd.ks > r["ks"]
            enough = fd.n >= r["min_rows"] and fd.psi is not None
            out.append(Finding(
                m, v, self.name, (over_psi or over_ks) if enough else None, fd.psi, r["psi"],
                f"{m} v{v}: input '{fd.feature}' drifted, PSI {fd.psi or 0:.3f} "
                f"(limit {r['psi']}), KS {fd.ks if fd.ks is not None else float('nan'):.3f}",
                feature=fd.feature, severity=r["severity"], details={"ks": fd.ks, "n": fd.n},
            ))
        return out


class PredictionDriftRule:
    """The predictions' PSI against the training reference's over the limit."""

    name = "prediction_drift"

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def evaluate(self, window: Window) -> list[Finding]:
        r, m, v = self.params, window.model, window.version
        pd_ = window.drift.prediction if window.drift is not None else None
        if pd_ is None:
            return []
        enough = pd_.n >= r["min_rows"] and pd_.psi is not None
        return [Finding(m, v, self.name, (pd_.psi or 0.0) > r["psi"] if enough else None, pd_.psi, r["psi"],
                        f"{m} v{v}: predictions drifted, PSI {pd_.psi or 0:.3f} (limit {r['psi']})",
                        feature=PREDICTION, severity=r["severity"], details={"ks": pd_.ks, "n": pd_.n})]


def worse_by(metric: str, live: float, heldout: float) -> float:
    """How much worse ``live`` is than ``heldout``, relative to ``|heldout|`` (negative: better)."""
    diff = (heldout - live) if metric in HIGHER_IS_BETTER else (live - heldout)
    return diff / max(abs(heldout), 1e-12)


class PerformanceRule:
    """The live ``metric`` worse than the bundle's held-out figure by more than ``max_degradation``
    (relative), given ``min_labelled`` labelled rows in the window; unknown without them."""

    name = "performance"

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def evaluate(self, window: Window) -> list[Finding]:
        r, m, v = self.params, window.model, window.version
        metric, heldout, limit = str(r["metric"]), r.get("heldout"), float(r["max_degradation"])
        quality = window.quality
        live = quality.metrics.get(metric) if quality is not None else None
        labelled = quality.labelled if quality is not None else 0
        if live is None or heldout is None or labelled < int(r["min_labelled"]):
            why = ("no held-out figure in the bundle" if heldout is None
                   else f"{labelled} labelled rows (need {r['min_labelled']})")
            return [Finding(m, v, self.name, None, live, heldout, f"{m} v{v}: live {metric} unknown: {why}",
                            severity=r["severity"], details={"metric": metric, "labelled": labelled})]
        worse = worse_by(metric, live, float(heldout))
        return [Finding(m, v, self.name, worse > limit, live, float(heldout),
                        f"{m} v{v}: live {metric} {live:.4g} against {float(heldout):.4g} held out "
                        f"({worse:+.1%} worse, limit {limit:.0%}) on {labelled} labelled rows",
                        severity=r["severity"],
                        details={"metric": metric, "labelled": labelled, "worse_by": worse})]


RULE_TYPES: dict[str, Callable[[dict[str, Any]], Rule[Window]]] = {
    "prediction_range": PredictionRangeRule,
    "error_rate": ErrorRateRule,
    "latency": LatencyRule,
    "input_drift": InputDriftRule,
    "prediction_drift": PredictionDriftRule,
    "performance": PerformanceRule,
}


def alert_rules(rules: dict[str, dict[str, Any]]) -> list[Rule[Window]]:
    """The enabled rules of a configuration (``rules_for``) as rule objects, in evaluation order."""
    order = ("prediction_range", "error_rate", "latency", "input_drift", "prediction_drift", "performance")
    return [RULE_TYPES[name](rules[name]) for name in order if rules[name].get("enabled", True)]


def evaluate_rules(
    rules: dict[str, dict[str, Any]], window: Window, drift: DriftReport | None
) -> list[Finding]:
    """Every enabled rule's verdicts on ``window`` (with ``drift``, when the window had traffic)."""
    window.drift = drift
    return [f for rule in alert_rules(rules) for f in rule.evaluate(window)]


# ---- model settings: per-model overrides ---------------------------------------------------------------
def load_overrides(engine: Engine, model: str) -> dict[str, dict[str, Any]]:
    """The model's rule overrides (empty for a model without any, or not in the registry)."""
    try:
        settings = SqlSettingsStore(engine).get(model)
    except ModelNotFoundError:
        return {}
    return dict((settings.get("monitor") or {}).get("rules") or {})


def save_overrides(
    engine: Engine, model: str, overrides: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Merge rule overrides into the model's settings (other keys of the settings are kept), under the
    model's row lock: two operators tuning different rules at once both keep their change."""
    for rule in overrides:
        if rule not in DEFAULT_RULES:
            raise BadRequestError(f"unknown alert rule '{rule}' (known: {', '.join(DEFAULT_RULES)})")

    def merge(settings: ModelSettings) -> dict[str, dict[str, Any]]:
        rules: dict[str, dict[str, Any]] = settings.setdefault("monitor", {}).setdefault("rules", {})
        for rule, params in overrides.items():
            rules.setdefault(rule, {}).update(params)
        return copy.deepcopy(rules)

    return SqlSettingsStore(engine).change(model, merge)
