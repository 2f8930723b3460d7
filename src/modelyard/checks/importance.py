"""The importance gate: a feature that carried the live version's answers and barely counts in the
candidate's was most likely removed by accident (emptied upstream, lost in a join, broken preprocessing),
even when the candidate still reads the column and its held-out metrics look fine."""

from __future__ import annotations

from modelyard.bundle import Manifest
from modelyard.checks.results import GateResult, Tolerances
from modelyard.explain import collapsed, shares

GATE = "importance"


def importance_test(current: Manifest, candidate: Manifest, tol: Tolerances) -> GateResult:
    """Compare the ``global_importance`` of two manifests; skipped when either has none."""
    before, after = current.global_importance, candidate.global_importance
    if not before or not after:
        which = "the live version" if not before else "the candidate"
        return GateResult(GATE, skipped=f"{which} has no global importance (published without shap or before "
                                        "modelyard computed it)")
    result = GateResult(GATE, figures={"current_shares": shares(before), "candidate_shares": shares(after)})
    if tol.min_importance_ratio is None:
        result.add("importance.collapsed", "-", detail="not gated (min_importance_ratio is None)")
        return result
    found = collapsed(before, after, ratio=tol.min_importance_ratio, top_k=tol.importance_top_k)
    for c in found:
        result.add(f"importance.{c.column}", round(c.share, 6), round(tol.min_importance_ratio * c.previous_share, 6),
                   passed=False,
                   detail=f"feature '{c.column}' (#{c.rank} in the live version, {c.previous_share:.1%} of its "
                          f"importance) carries {c.share:.2%} in the candidate: a feature has been accidentally "
                          "removed?")
    if not found:
        result.add("importance.collapsed", "-", tol.min_importance_ratio,
                   detail=f"none of the live version's top {tol.importance_top_k} features fell below "
                          f"{tol.min_importance_ratio:.0%} of its share")
    return result
