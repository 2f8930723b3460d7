"""The prediction log: every answered prediction, durable, queryable and replayable."""

from modelyard.predlog.query import find_request, parse_since, recent, window_source
from modelyard.predlog.records import PredictionRecord, Route, decode_outputs, prediction_value
from modelyard.predlog.replay import ReplayResult, replay
from modelyard.predlog.store import LogReader, LogSink, LogSource, get_records, insert_records, list_records
from modelyard.predlog.target import LogTarget, log_reader, log_sink
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
    "LogReader",
    "LogSink",
    "LogSource",
    "LogTarget",
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
    "log_reader",
    "log_sink",
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
