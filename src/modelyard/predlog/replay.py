"""Explain a prediction from the past: recompute it with the exact version that answered, and compare.

The version's bundle is verified by its checksums before it is loaded, so a match means the same bytes of
model, fed the same logged inputs, give the same answer today.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelyard.errors import ModelyardError
from modelyard.predlog.records import PredictionRecord
from modelyard.registry import Registry
from modelyard.runtime import Model


@dataclass
class RowDifference:
    row: int
    stored: Any
    replayed: Any
    abs_diff: float | None = None


@dataclass
class ReplayResult:
    record: PredictionRecord
    matches: bool
    stored: list[Any] | None
    replayed: list[Any] | None
    differences: list[RowDifference] = field(default_factory=list)
    max_abs_diff: float | None = None
    stored_error: str | None = None
    replayed_error: str | None = None
    probabilities_match: bool | None = None

    @property
    def summary(self) -> str:
        rec = self.record
        what = f"{rec.model} v{rec.version} request {rec.request_id} ({rec.route}, {rec.n_rows} rows)"
        if self.stored_error or self.replayed_error:
            if self.matches:
                return f"match: {what} failed then and fails now the same way ({self.replayed_error})"
            return (f"MISMATCH: {what}: logged error {self.stored_error!r}, "
                    f"replay error {self.replayed_error!r}")
        if self.matches:
            return f"match: {what}: all {len(self.stored or [])} outputs recomputed identically"
        detail = f"{len(self.differences)} of {len(self.stored or [])} outputs differ"
        if self.max_abs_diff is not None:
            detail += f", max |difference| {self.max_abs_diff:.6g}"
        if self.probabilities_match is False:
            detail += "; probabilities differ"
        return f"MISMATCH: {what}: {detail}"


def _compare(stored: list[Any], replayed: list[Any], rtol: float, atol: float) -> list[RowDifference]:
    diffs: list[RowDifference] = []
    if len(stored) != len(replayed):
        return [RowDifference(row=-1, stored=f"{len(stored)} rows", replayed=f"{len(replayed)} rows")]
    for i, (a, b) in enumerate(zip(stored, replayed, strict=True)):
        if isinstance(b, float) and b != b:
            b = None  # the log stores NaN as null (JSON has no NaN)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            if not np.isclose(float(a), float(b), rtol=rtol, atol=atol):
                diffs.append(RowDifference(i, a, b, abs(float(a) - float(b))))
        elif a != b:
            diffs.append(RowDifference(i, a, b))
    return diffs


def load_version(registry: Registry, record: PredictionRecord) -> Model:
    """The exact version that answered ``record``, its bundle verified by checksum before loading."""
    return Model.load(registry.load_bundle(registry.get_version(record.model, int(record.version))))


def replay(
    registry: Registry, record: PredictionRecord, *, rtol: float = 1e-9, atol: float = 1e-12,
    model: Model | None = None,
) -> ReplayResult:
    """Recompute ``record`` with its stored version (``model`` when already loaded: it must be that version);
    ``matches`` is False when any output differs."""
    if model is None:
        model = load_version(registry, record)
    elif (model.name, model.version) != (record.model, int(record.version)):
        raise ValueError(f"{model!r} is not the version that answered {record.request_id}")
    meta = record.meta or {}
    stored = None if record.outputs is None else record.values  # decoded: one value per row
    replayed: list[Any] | None = None
    replayed_error: str | None = None
    proba_match: bool | None = None
    try:
        frame = model.validate(record.inputs)
        replayed = np.asarray(model.predict_frame(frame)).tolist()
        if meta.get("probabilities") is not None:
            now = np.asarray(model.predict_proba_frame(frame), dtype="float64")
            then = np.asarray(meta["probabilities"], dtype="float64")
            proba_match = now.shape == then.shape and bool(np.allclose(now, then, rtol=rtol, atol=atol))
    except ModelyardError as exc:
        replayed_error = exc.message
    if record.error or replayed_error:
        same = bool(record.error) and bool(replayed_error)
        return ReplayResult(record, same, stored, replayed, stored_error=record.error,
                            replayed_error=replayed_error)
    assert replayed is not None
    diffs = _compare(stored or [], replayed, rtol, atol)
    numeric = [d.abs_diff for d in diffs if d.abs_diff is not None]
    matches = not diffs and proba_match is not False
    return ReplayResult(record, matches, stored, replayed, diffs, max(numeric) if numeric else None,
                        probabilities_match=proba_match)
