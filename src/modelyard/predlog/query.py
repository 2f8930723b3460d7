"""Questions people ask of the log: what did this model answer lately, and what happened to this request."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from modelyard.errors import BadRequestError, NotFoundError
from modelyard.predlog.records import PredictionRecord
from modelyard.predlog.store import get_records, list_records
from modelyard.registry.db import Engine

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
WINDOW_LIMIT = 20_000  # records (each of one or more rows) a monitor window reads at most, newest first


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``15m``, ``2h``, ``7d`` (ago) or an ISO date/time (UTC when it has no zone) → an aware datetime."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadRequestError(
            f"--since {text!r}: expected a duration like 30m, 2h, 7d or a date like 2024-05-01T12:00",
            field="since",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def recent(engine: Engine, model: str, *, since: datetime | None = None, route: str | None = None,
           limit: int = 50) -> list[PredictionRecord]:
    """The newest records of a model, newest first."""
    return list_records(engine, model, since=since, route=route, limit=limit)


def find_request(engine: Engine, request_id: str) -> list[PredictionRecord]:
    """Every record of one request (primary first); a clear error when there is none."""
    records = get_records(engine, request_id)
    if not records:
        raise NotFoundError(
            f"no prediction with request id '{request_id}' in the log (records are written in batches: "
            "a request answered a moment ago may take a second to appear)",
            request_id=request_id,
        )
    order = {"primary": 0, "canary": 1, "mirror": 2, "shadow": 3}
    return sorted(records, key=lambda r: order.get(r.route, 3))


def window_source(engine: Engine, limit: int | None = WINDOW_LIMIT
                  ) -> Callable[[str, datetime, datetime], list[PredictionRecord]]:
    """The log as the monitor reads it (``monitor.window.RecordSource``): one model's records in a window,
    newest first. The monitor cannot import the log (sibling layers), so the CLI and the server hand it this."""

    def load(model: str, since: datetime, until: datetime) -> list[PredictionRecord]:
        return list_records(engine, model, since=since, until=until, limit=limit)

    return load
