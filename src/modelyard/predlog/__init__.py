"""The prediction log: every answered prediction, durable, queryable and replayable."""

from modelyard.predlog.records import PredictionRecord
from modelyard.predlog.store import get_records, insert_records, list_records

__all__ = ["PredictionRecord", "get_records", "insert_records", "list_records"]
