"""The prediction log: every answered prediction, durable, queryable and replayable."""

from modelyard.predlog.query import find_request, parse_since, recent, window_source
from modelyard.predlog.records import PredictionRecord, Route, decode_outputs, prediction_value
from modelyard.predlog.replay import ReplayResult, replay
from modelyard.predlog.store import get_records, insert_records, list_records
from modelyard.predlog.window import (
    LogWindow,
    Paired,
    latencies,
    pair_by_request,
    percentile,
    read_window,
    values_of,
)
from modelyard.predlog.writer import Durability, LogHooks, PredictionLogWriter

__all__ = [
    "Durability",
    "LogHooks",
    "LogWindow",
    "Paired",
    "PredictionLogWriter",
    "PredictionRecord",
    "ReplayResult",
    "Route",
    "decode_outputs",
    "find_request",
    "get_records",
    "insert_records",
    "latencies",
    "list_records",
    "pair_by_request",
    "parse_since",
    "percentile",
    "prediction_value",
    "read_window",
    "recent",
    "replay",
    "values_of",
    "window_source",
]
