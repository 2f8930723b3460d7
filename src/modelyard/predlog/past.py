"""Explain a prediction from the past with the exact version that made it.

The logged inputs are first replayed through that version (``replay``): only when today's answer matches
the logged one is the explanation an explanation of what the caller was told. ``modelyard explain`` and
``GET /v1/predictions/{request_id}/explain`` both return ``PastExplanation.to_json()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelyard.errors import LineageMismatchError, NotFoundError
from modelyard.explain import ExplanationDiff, RowExplanation, diff, explainer_for
from modelyard.predlog.records import PredictionRecord
from modelyard.predlog.replay import ReplayResult, load_version, replay
from modelyard.registry import Registry
from modelyard.runtime import Model


@dataclass
class PastExplanation:
    record: PredictionRecord
    replay: ReplayResult
    explanation: RowExplanation
    against: RowExplanation | None = None

    @property
    def difference(self) -> ExplanationDiff | None:
        return None if self.against is None else diff(self.explanation, self.against)

    def to_json(self) -> dict[str, Any]:
        rec = self.record
        body: dict[str, Any] = {
            "request_id": rec.request_id,
            "route": rec.route,
            "logged_at": rec.ts.isoformat(),
            "logged_output": (rec.outputs or [None])[self.explanation.row]
            if isinstance(rec.outputs, list) and self.explanation.row < len(rec.outputs) else None,
            "replay": {"matches": self.replay.matches, "summary": self.replay.summary},
            "explanation": self.explanation.to_json(),
        }
        if self.against is not None:
            difference = self.difference
            assert difference is not None
            body["against"] = {"explanation": self.against.to_json(), "difference": difference.to_json()}
        return body


def pick_record(records: list[PredictionRecord], route: str | None = None) -> PredictionRecord:
    """The record of a request to explain: on ``route`` when given, else the first that was answered."""
    candidates = [r for r in records if route is None or r.route == route]
    answered = [r for r in candidates if not r.error and r.outputs is not None]
    if answered:
        return answered[0]
    if candidates:
        rec = candidates[0]
        raise NotFoundError(f"request '{rec.request_id}' failed on route '{rec.route}' ({rec.error}): there is "
                            "no answer to explain", request_id=rec.request_id)
    rid = records[0].request_id if records else "?"
    raise NotFoundError(f"request '{rid}' has no record on route '{route}'", request_id=rid)


def explain_logged(registry: Registry, record: PredictionRecord, *, row: int = 0, model: Model | None = None,
                   against: Model | None = None) -> PastExplanation:
    """Replay ``record`` with its version (a mismatch is an error), then explain row ``row``; with
    ``against``, the same row through that other version too."""
    rows = list(record.inputs or [])
    if not 0 <= row < len(rows):
        raise NotFoundError(f"request '{record.request_id}' has {len(rows)} row(s): there is no row {row}",
                            field="row", row=row)
    model = model or load_version(registry, record)
    result = replay(registry, record, model=model)
    if not result.matches:
        raise LineageMismatchError(f"{result.summary}: the version no longer gives the logged answer, so an "
                                   "explanation would not explain it", request_id=record.request_id)
    explanation = explainer_for(model).explain(model.validate([rows[row]]), first_row=row)[0]
    other = None
    if against is not None:
        other = explainer_for(against).explain(against.validate([rows[row]]), first_row=row)[0]
    return PastExplanation(record, result, explanation, other)
