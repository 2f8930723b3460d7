"""Pattern 3: a model answering a message stream (NATS JetStream, Redis Streams) with dead letters.

    modelyard stream house-prices --broker nats://127.0.0.1:4222 --in houses.in --out houses.scored
"""

from modelyard.errors import StreamError
from modelyard.stream.base import Broker, Message, OutMessage, open_broker
from modelyard.stream.consumer import (
    FeedbackConsumer,
    FeedbackStats,
    ModelHolder,
    StreamConsumer,
    StreamStats,
    predict_rows,
)

__all__ = [
    "Broker",
    "FeedbackConsumer",
    "FeedbackStats",
    "Message",
    "ModelHolder",
    "OutMessage",
    "StreamConsumer",
    "StreamError",
    "StreamStats",
    "open_broker",
    "predict_rows",
]
