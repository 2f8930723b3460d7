"""One record per prediction call: who asked, which version answered, with what inputs and outputs."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = ["PredictionRecord", "Route", "decode_outputs", "prediction_value"]

_VALUE_KEYS = ("prediction", "label", "value")


class Route(StrEnum):
    """The route a record was logged on."""

    PRIMARY = "primary"
    """Answered by the production version."""
    CANARY = "canary"
    """Answered by the canary (its weight's share of traffic, sticky by routing key)."""
    SHADOW = "shadow"
    """The shadow version's answer to a primary request, after the answer; never returned."""
    MIRROR = "mirror"
    """The primary's answer to a canary request, after the answer; never returned."""
    BATCH = "batch"
    """Scored by ``modelyard score`` (pattern 2)."""
    STREAM = "stream"
    """Scored by the stream consumer (pattern 3)."""

    @property
    def answered(self) -> bool:
        """True for traffic a caller got an answer from; False for the extra work done after the answer."""
        return self not in (Route.SHADOW, Route.MIRROR)


def prediction_value(output: Any) -> Any:
    """One row's logged output → its predicted value.

    Scalars as they are; ``{"prediction"|"label"|"value": x}`` unwrapped; a one-element list unwrapped; an
    object without such a key, or a longer list, has no single value (``None``).
    """
    if isinstance(output, dict):
        return next((output[k] for k in _VALUE_KEYS if k in output), None)
    if isinstance(output, list | tuple):
        return prediction_value(output[0]) if len(output) == 1 else None
    return output


def decode_outputs(outputs: Any) -> list[Any]:
    """A logged ``outputs`` → one predicted value per row.

    Accepts what every writer logs: a list of values or of objects holding a ``prediction``, an object
    holding ``predictions`` (or ``outputs``), a single value. ``None`` (a failed request) has no rows.
    """
    if outputs is None:
        return []
    if isinstance(outputs, dict):
        outputs = outputs.get("predictions", outputs.get("outputs", [outputs]))
    if not isinstance(outputs, list | tuple):
        return [outputs]
    return [prediction_value(o) for o in outputs]



@dataclass
class PredictionRecord:
    """``inputs`` holds the rows as sent (a list of objects); ``outputs`` the answers, row by row."""

    request_id: str
    model: str
    version: int
    route: str = Route.PRIMARY  # a ``Route`` (stored as its string)
    inputs: Any = None
    outputs: Any = None
    n_rows: int = 1
    latency_ms: float | None = None
    error: str | None = None
    meta: dict[str, Any] | None = None
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def values(self) -> list[Any]:
        """The outputs decoded: one predicted value per row (``decode_outputs``); none for a failed record."""
        return decode_outputs(self.outputs)

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
