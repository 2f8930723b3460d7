"""Global importance of a version (mean |attribution| per input column on reference rows) and the
comparison ``check`` gates on: a feature that mattered and no longer does was most likely removed by
accident (a column emptied upstream, a join that lost it, a preprocessing change)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from modelyard.explain.backends import single_thread
from modelyard.explain.explainer import ModelExplainer
from modelyard.runtime import Model

IMPORTANCE_ROWS = {"tree": 200}
IMPORTANCE_ROWS_AGNOSTIC = 20
AGNOSTIC_BACKGROUND_ROWS = 25


def global_importance(model: Model, rows: pd.DataFrame | None = None, *, seed: int = 0) -> dict[str, float]:
    """Mean |attribution| per input column over (at most a few hundred) reference rows, averaged over the
    classes of a classifier, in the explainer's space. Rows are capped so a publish stays quick."""
    explainer = ModelExplainer(model, seed=seed)
    if explainer.kind != "tree":  # the model-agnostic explainers cost rows x background x evaluations
        explainer = ModelExplainer(model, seed=seed, background_rows=AGNOSTIC_BACKGROUND_ROWS,
                                   nsamples=2 * len(model.schema.names) + 200)
    frame = model.validate(rows if rows is not None else model.bundle_.reference_inputs())
    cap = IMPORTANCE_ROWS.get(explainer.kind, IMPORTANCE_ROWS_AGNOSTIC)
    if len(frame) > cap:
        keep = np.sort(np.random.default_rng(seed).choice(len(frame), cap, replace=False))
        frame = frame.iloc[keep].reset_index(drop=True)
    with single_thread():
        values = explainer.attributions(frame).values  # (rows, columns, outputs)
    mean_abs = np.abs(values).mean(axis=(0, 2))
    return {c: float(v) for c, v in zip(explainer.inputs, mean_abs, strict=True)}


def shares(importance: dict[str, float]) -> dict[str, float]:
    total = sum(abs(v) for v in importance.values())
    return {c: (abs(v) / total if total > 0 else 0.0) for c, v in importance.items()}


@dataclass(frozen=True)
class Collapse:
    column: str
    previous_share: float
    share: float
    rank: int  # 1 = the previous version's most important column

    @property
    def ratio(self) -> float:
        return self.share / self.previous_share if self.previous_share > 0 else 0.0


def collapsed(previous: dict[str, float], current: dict[str, float], *, ratio: float = 0.1, top_k: int = 5,
              min_share: float = 0.02) -> list[Collapse]:
    """Columns among ``previous``'s ``top_k`` (holding at least ``min_share`` of its importance) whose share in
    ``current`` fell below ``ratio`` times their previous share (absent from ``current`` counts as zero)."""
    before, after = shares(previous), shares(current)
    ranked = sorted(before.items(), key=lambda kv: -kv[1])[:top_k]
    found = []
    for rank, (column, share) in enumerate(ranked, start=1):
        now = after.get(column, 0.0)
        if share >= min_share and now < ratio * share:
            found.append(Collapse(column, share, now, rank))
    return found
