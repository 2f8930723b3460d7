"""Rebuild a published version from its manifest and prove it: same data hash, same predictions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelyard.bundle import PREDICTION_COLUMN, Bundle
from modelyard.errors import LineageMismatchError, SpecError
from modelyard.pipeline.lineage import environment
from modelyard.pipeline.spec import parse_spec
from modelyard.pipeline.train import load_training_data, train


@dataclass
class ReproduceReport:
    data_sha256: str
    rows_compared: int
    identical: bool
    max_abs_diff: float
    package_changes: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)


def reproduce(bundle: Bundle) -> ReproduceReport:
    """Retrain from ``bundle``'s manifest; raise ``LineageMismatchError`` if data or predictions differ."""
    lineage = bundle.manifest.lineage
    if lineage.spec is None:
        raise SpecError(
            f"{bundle.name} v{bundle.version} was not trained from a spec "
            f"({lineage.source or 'unknown source'}): there is nothing to retrain from"
        )
    base_dir = Path(lineage.spec_dir) if lineage.spec_dir else None
    spec = parse_spec(lineage.spec, base_dir=base_dir, origin=f"{bundle.name} v{bundle.version} manifest")
    window = lineage.data.window if lineage.data else None  # a windowed query reads the same window again
    data = load_training_data(spec, window)
    recorded = lineage.data.sha256 if lineage.data else None
    if recorded is None:
        raise SpecError(f"{bundle.name} v{bundle.version}'s lineage records no data SHA-256: "
                        "there is nothing to compare the data with")
    if data.sha256 != recorded:
        raise LineageMismatchError(
            f"lineage mismatch: the data at {data.location} now hashes to {data.sha256[:12]}..., "
            f"version {bundle.version} was trained on {recorded[:12]}...",
            recorded=recorded,
            actual=data.sha256,
        )
    result = train(spec, data=data, window=window)
    reference = bundle.reference()
    inputs = bundle.reference_inputs()
    new = np.asarray(result.pipeline.predict(inputs))
    old = reference[PREDICTION_COLUMN].to_numpy()
    identical = bool(np.array_equal(new, old))
    max_diff = 0.0
    if np.issubdtype(new.dtype, np.number) and np.issubdtype(old.dtype, np.number):
        max_diff = float(np.max(np.abs(new.astype(float) - old.astype(float)))) if len(new) else 0.0
    else:
        max_diff = float(np.mean(new != old))
    before = lineage.environment.packages if lineage.environment else {}
    now = environment(spec.model.estimator).packages
    changes = {k: (before.get(k), now.get(k)) for k in set(before) | set(now) if before.get(k) != now.get(k)}
    report = ReproduceReport(data.sha256, len(new), identical, max_diff, changes)
    if not identical:
        raise LineageMismatchError(
            f"retrained {bundle.name} v{bundle.version} predicts differently on the reference set "
            f"(max difference {max_diff:.6g} over {len(new)} rows)",
            report=report.__dict__,
        )
    return report
