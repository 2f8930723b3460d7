"""One record per prediction call: who asked, which version answered, with what inputs and outputs."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any


@dataclass
class PredictionRecord:
    """``inputs`` holds the rows as sent (a list of objects); ``outputs`` the answers, row by row."""

    request_id: str
    model: str
    version: int
    route: str = "primary"  # primary | canary | shadow | mirror | batch | stream
    inputs: Any = None
    outputs: Any = None
    n_rows: int = 1
    latency_ms: float | None = None
    error: str | None = None
    meta: dict[str, Any] | None = None
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_row(self) -> dict[str, Any]:
        """The record as a table row. Shallow: ``dataclasses.asdict`` deep-copies the inputs, which made it
        the most expensive step of writing the log."""
        return {name: getattr(self, name) for name in _FIELDS}

    def to_json(self) -> dict[str, Any]:
        row = self.to_row()
        row["ts"] = self.ts.isoformat()
        return row

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PredictionRecord:
        data = dict(data)
        ts = data.pop("ts", None)
        record = cls(**data)
        if isinstance(ts, str):
            record.ts = datetime.fromisoformat(ts)
        return record


_FIELDS = tuple(f.name for f in fields(PredictionRecord))
