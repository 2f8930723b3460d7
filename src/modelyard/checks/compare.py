"""The statistics of two versions' predictions on the same rows, gated by ``Tolerances``.

Shared by the differential test (reference sets, predicted in-process) and the shadow report (logged
traffic), so "agrees with production" means the same thing before and after a version goes live.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modelyard.checks.results import GateResult, Tolerances
from modelyard.predlog import percentile


def _q(values: np.ndarray, q: float) -> float:
    return percentile(values, q) or 0.0


def regression_stats(current: np.ndarray, candidate: np.ndarray, quantile: float = 0.95) -> dict[str, float]:
    """Per-row absolute and relative differences and the shift of the mean, candidate against current."""
    cur = np.asarray(current, dtype="float64")
    cand = np.asarray(candidate, dtype="float64")
    both = np.isfinite(cur) & np.isfinite(cand)
    cur, cand = cur[both], cand[both]
    if not len(cur):
        return {"rows": 0}
    diff = np.abs(cand - cur)
    # A floor on the denominator keeps rows whose current value is ~0 from dominating the relative figures.
    floor = max(1e-3 * float(np.mean(np.abs(cur))), 1e-12)
    rel = diff / np.maximum(np.abs(cur), floor)
    mean_cur, mean_cand = float(np.mean(cur)), float(np.mean(cand))
    return {
        "rows": len(cur),
        "mean_current": mean_cur,
        "mean_candidate": mean_cand,
        "mean_shift": (mean_cand - mean_cur) / max(abs(mean_cur), 1e-12),
        "abs_diff_mean": float(np.mean(diff)),
        "abs_diff_q": _q(diff, quantile),
        "abs_diff_max": float(np.max(diff)),
        "rel_diff_mean": float(np.mean(rel)),
        "rel_diff_median": _q(rel, 0.5),
        "rel_diff_q": _q(rel, quantile),
        "rel_diff_max": float(np.max(rel)),
        "identical_share": float(np.mean(diff == 0)),
    }


def classification_stats(current: Sequence[Any], candidate: Sequence[Any]) -> dict[str, Any]:
    """Agreement of predicted labels, and how each version's labels are distributed."""
    cur = np.asarray([_label(v) for v in current], dtype=object)
    cand = np.asarray([_label(v) for v in candidate], dtype=object)
    both = np.asarray([a is not None and b is not None for a, b in zip(cur, cand, strict=True)], dtype=bool)
    cur, cand = cur[both], cand[both]
    if not len(cur):
        return {"rows": 0}
    agree = cur == cand
    labels = sorted({*cur.tolist(), *cand.tolist()}, key=str)
    return {
        "rows": len(cur),
        "agreement": float(np.mean(agree)),
        "disagreements": int(np.sum(~agree)),
        "share_current": {str(k): float(np.mean(cur == k)) for k in labels},
        "share_candidate": {str(k): float(np.mean(cand == k)) for k in labels},
    }


def _label(value: Any) -> Any:
    """Labels that crossed JSON (``1`` vs ``1.0`` vs ``"1"``) still compare equal."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def gate_predictions(result: GateResult, current: Any, candidate: Any, task: str, tol: Tolerances,
                     *, label: str) -> dict[str, Any]:
    """Add the findings for one pair of prediction vectors to ``result``; return the figures."""
    if task == "classification":
        stats = classification_stats(list(current), list(candidate))
        if stats["rows"]:
            result.bound(f"{label}.agreement", stats["agreement"], tol.min_agreement, at_least=True,
                         what=f"{label}: class agreement")
    else:
        stats = regression_stats(np.asarray(current), np.asarray(candidate), tol.row_quantile)
        if stats["rows"]:
            q = f"p{round(tol.row_quantile * 100)}"
            result.bound(f"{label}.mean_shift", abs(stats["mean_shift"]), tol.max_mean_shift,
                         what=f"{label}: shift of the mean prediction ({stats['mean_shift']:+.2%})")
            result.bound(f"{label}.rel_diff_{q}", stats["rel_diff_q"], tol.max_row_rel_diff,
                         what=f"{label}: {q} of per-row relative difference")
            result.bound(f"{label}.abs_diff_{q}", stats["abs_diff_q"], tol.max_row_abs_diff,
                         what=f"{label}: {q} of per-row absolute difference")
    if not stats["rows"]:
        result.add(f"{label}.rows", 0, passed=False, detail=f"{label}: no rows to compare")
    return stats
