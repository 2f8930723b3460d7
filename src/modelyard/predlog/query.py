"""Questions people ask of the log: what did this model answer lately, and what happened to this request.

Each takes a ``LogSource``: a ``LogReader`` of either target (``target.log_reader(settings)``) or an engine.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from modelyard.durations import parse_since
from modelyard.errors import NotFoundError
from modelyard.predlog.records import PredictionRecord, Route
from modelyard.predlog.store import LogSource, get_records, list_records

__all__ = ["WINDOW_LIMIT", "find_request", "parse_since", "recent", "window_source"]

WINDOW_LIMIT = 20_000  # records (each of one or more rows) a monitor window reads at most, newest first


def recent(source: LogSource, model: str, *, since: datetime | None = None, route: str | None = None,
           limit: int = 50) -> list[PredictionRecord]:
    """The newest records of a model, newest first."""
    return list_records(source, model, since=since, route=route, limit=limit)


def find_request(source: LogSource, request_id: str) -> list[PredictionRecord]:
    """Every record of one request (primary first); a clear error when there is none."""
    records = get_records(source, request_id)
    if not records:
        raise NotFoundError(
            f"no prediction with request id '{request_id}' in the log (records are written in batches: "
            "a request answered a moment ago may take a second to appear)",
            request_id=request_id,
        )
    order: dict[str, int] = {Route.PRIMARY: 0, Route.CANARY: 1, Route.MIRROR: 2, Route.SHADOW: 3}
    return sorted(records, key=lambda r: order.get(r.route, 3))


def window_source(source: LogSource, limit: int | None = WINDOW_LIMIT
                  ) -> Callable[[str, datetime, datetime], list[PredictionRecord]]:
    """The log as the monitor reads it (``monitor.window.RecordSource``): one model's records in a window,
    newest first."""

    def load(model: str, since: datetime, until: datetime) -> list[PredictionRecord]:
        return list_records(source, model, since=since, until=until, limit=limit)

    return load
