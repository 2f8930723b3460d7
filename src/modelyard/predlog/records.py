"""One record per prediction call: who asked, which version answered, with what inputs and outputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class PredictionRecord:
    """``inputs`` holds the rows as sent (a list of objects); ``outputs`` the answers, row by row."""

    request_id: str
    model: str
    version: int
    route: str = "primary"  # primary | canary | shadow | batch | stream
    inputs: Any = None
    outputs: Any = None
    n_rows: int = 1
    latency_ms: float | None = None
    error: str | None = None
    meta: dict[str, Any] | None = None
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
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
