"""Canary against primary on labelled live traffic: is the canary significantly worse?

Each labelled row gives each version a loss (absolute error for a regressor, 0/1 for a wrong class, see
``monitor.quality.row_errors``). Where the same rows were answered by both versions (the server mirrors
canary requests to the primary, a shadow sees the primary's requests), the test is paired on those rows:
Wilcoxon's signed-rank test on the loss differences for a regressor, McNemar's exact test (a binomial test
on the rows only one version got right) for a classifier. Otherwise the two versions' rows are independent
samples: Mann-Whitney's U on the absolute errors, Welch's t-test on the 0/1 errors. Every test is one-sided
(H1: the canary's loss is larger), and the canary is judged worse when ``p < alpha``.

The verdict carries the test's name, the sample sizes, the p-value and the effect (mean loss of the canary
minus the primary's, and that difference relative to the primary's), so an event can hold them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
from scipy import stats

from modelyard.monitor.quality import row_errors
from modelyard.predlog import Route
from modelyard.registry.db import Engine
from modelyard.registry.outcomes import SqlOutcomeStore

__all__ = ["OutcomeComparison", "compare_losses", "compare_on_outcomes"]

MAX_ROWS = 200_000


@dataclass
class OutcomeComparison:
    """The verdict of one comparison; ``worse`` is None when there were too few labelled rows."""

    test: str | None
    paired: bool
    n_canary: int
    n_primary: int
    n_pairs: int
    p_value: float | None
    canary_loss: float | None
    primary_loss: float | None
    effect: float | None
    """Mean loss of the canary minus the primary's (positive: the canary is worse)."""
    relative_effect: float | None
    alpha: float
    loss: str
    worse: bool | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.worse is None:
            return (f"too few labelled rows to compare ({self.n_canary} canary, {self.n_primary} primary, "
                    f"{self.n_pairs} paired)")
        sizes = f"{self.n_pairs} pairs" if self.paired else f"n={self.n_canary} vs {self.n_primary}"
        return (f"{self.test} on {self.loss}: canary {self.canary_loss:.4g} vs primary {self.primary_loss:.4g} "
                f"(effect {self.effect:+.4g}, {sizes}, p={self.p_value:.3g}, alpha {self.alpha:g})")


def compare_losses(task: str, canary: np.ndarray, primary: np.ndarray, *, paired: bool, alpha: float,
                   min_rows: int) -> OutcomeComparison:
    """The one-sided test of "the canary's loss is larger" on per-row losses (aligned when ``paired``)."""
    loss = "absolute error" if task == "regression" else "error rate"
    n_c, n_p = len(canary), len(primary)
    n_pairs = n_c if paired else 0
    enough = (n_pairs >= min_rows) if paired else (n_c >= min_rows and n_p >= min_rows)
    c_mean = float(np.mean(canary)) if n_c else None
    p_mean = float(np.mean(primary)) if n_p else None
    effect = c_mean - p_mean if c_mean is not None and p_mean is not None else None
    relative = effect / max(abs(p_mean), 1e-12) if effect is not None and p_mean is not None else None
    if not enough:
        return OutcomeComparison(None, paired, n_c, n_p, n_pairs, None, c_mean, p_mean, effect, relative, alpha,
                                 loss, None)
    if paired and task == "regression":
        test = "wilcoxon signed-rank (paired)"
        diff = canary - primary
        p_value = 1.0 if not np.any(diff) else float(stats.wilcoxon(diff, alternative="greater").pvalue)
    elif paired:
        test = "mcnemar exact (paired)"
        only_canary_wrong = int(np.sum((canary > 0) & (primary == 0)))
        only_primary_wrong = int(np.sum((canary == 0) & (primary > 0)))
        discordant = only_canary_wrong + only_primary_wrong
        p_value = 1.0 if discordant == 0 else float(
            stats.binomtest(only_canary_wrong, discordant, 0.5, alternative="greater").pvalue)
    elif task == "regression":
        test = "mann-whitney u (two-sample)"
        p_value = float(stats.mannwhitneyu(canary, primary, alternative="greater").pvalue)
    else:
        test = "welch t-test (two-sample)"
        if np.ptp(canary) == 0 and np.ptp(primary) == 0:  # constant samples: no variance to test with
            p_value = 0.0 if c_mean is not None and p_mean is not None and c_mean > p_mean else 1.0
        else:
            p_value = float(stats.ttest_ind(canary, primary, equal_var=False, alternative="greater").pvalue)
    worse = bool(p_value < alpha and (effect or 0.0) > 0)
    return OutcomeComparison(test, paired, n_c, n_p, n_pairs, p_value, c_mean, p_mean, effect, relative, alpha,
                             loss, worse)


def compare_on_outcomes(engine: Engine, model: str, task: str, canary_version: int, primary_version: int | None,
                        *, since: datetime | None, alpha: float = 0.01, min_rows: int = 30) -> OutcomeComparison:
    """Compare the two versions on the outcomes of rows they answered since ``since`` (paired when enough
    rows were seen by both, else two-sample)."""
    rows = SqlOutcomeStore(engine).select(model, since=since, limit=MAX_ROWS)
    canary_routes = {str(Route.CANARY), str(Route.SHADOW)}
    primary_routes = {str(Route.PRIMARY), str(Route.MIRROR)}
    canary: dict[tuple[str, int], dict[str, Any]] = {}
    primary: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        key = (str(r["request_id"]), int(r["row"]))
        if r["version"] == canary_version and r["route"] in canary_routes:
            canary[key] = r
        elif primary_version is not None and r["version"] == primary_version and r["route"] in primary_routes:
            primary[key] = r

    def losses(part: list[dict[str, Any]]) -> np.ndarray:
        return row_errors(task, [r["actual"] for r in part], [r["predicted"] for r in part])

    both = sorted(set(canary) & set(primary))
    if len(both) >= min_rows:
        return compare_losses(task, losses([canary[k] for k in both]), losses([primary[k] for k in both]),
                              paired=True, alpha=alpha, min_rows=min_rows)
    # two-sample: the primary's own answers (not its mirrors of canary requests) against the canary's
    own_primary = [r for r in primary.values() if r["route"] == str(Route.PRIMARY)]
    own_canary = [r for r in canary.values() if r["route"] == str(Route.CANARY)]
    return compare_losses(task, losses(own_canary), losses(own_primary), paired=False, alpha=alpha,
                          min_rows=min_rows)
