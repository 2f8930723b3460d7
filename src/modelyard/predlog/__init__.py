"""The prediction log: every answered prediction, durable, queryable and replayable."""

from modelyard.predlog.query import find_request, parse_since, recent, window_source
from modelyard.predlog.records import PredictionRecord
from modelyard.predlog.replay import ReplayResult, replay
from modelyard.predlog.store import get_records, insert_records, list_records
from modelyard.predlog.writer import Durability, LogHooks, PredictionLogWriter

__all__ = [
    "Durability",
    "LogHooks",
    "PredictionLogWriter",
    "PredictionRecord",
    "ReplayResult",
    "find_request",
    "get_records",
    "insert_records",
    "list_records",
    "parse_since",
    "recent",
    "replay",
    "window_source",
]
