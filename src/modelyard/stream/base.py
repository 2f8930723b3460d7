"""The broker interface every adapter implements: small enough for NATS JetStream, Redis Streams or Kafka.

A consumer fetches a batch from its input, publishes one answer per message (or a dead letter) with a
deduplication id, and acknowledges the input only after the broker confirmed the publish: at-least-once
delivery, and exactly-once answers wherever the broker deduplicates on that id.
"""

from __future__ import annotations

import abc
import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelyard.errors import StreamError


@dataclass
class Message:
    """One input message. ``id`` is stable across redeliveries: it becomes the answer's dedup id."""

    id: str
    data: bytes
    raw: Any = None  # the adapter's own handle (a NATS Msg, a Redis entry id)
    delivery: int = 1
    seq: int | None = None  # its position in the stream, where the broker numbers messages (JetStream)


@dataclass
class OutMessage:
    id: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Broker(abc.ABC):
    """One consumer's connection: its input with a durable (shared) position, and subjects to publish to."""

    in_subject: str

    @abc.abstractmethod
    async def connect(self) -> None:
        """Connect and join the durable consumer (group) on the input, creating it when missing."""

    @abc.abstractmethod
    async def ensure_subject(self, subject: str) -> None:
        """Make sure what is published to ``subject`` is stored (JetStream: a stream captures it)."""

    @abc.abstractmethod
    async def fetch(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to ``max_messages`` messages, waiting at most ``timeout`` seconds; [] when idle."""

    @abc.abstractmethod
    async def publish(self, subject: str, messages: Sequence[OutMessage]) -> list[BaseException | None]:
        """Publish all, deduplicated on ``OutMessage.id``; wait for the broker; one error (or None) each."""

    async def send(self, subject: str, messages: Sequence[OutMessage]) -> Awaitable[list[BaseException | None]]:
        """Start publishing ``messages`` (in order, before any later ``send``) and return what waits for the
        broker's confirmations, so that a consumer can go on while they come. The default sends and
        confirms at once (``publish``); a broker with asynchronous confirmations overrides it."""
        errors = await self.publish(subject, messages)

        async def confirmed() -> list[BaseException | None]:
            return errors

        return confirmed()

    async def answer(self, groups: Sequence[tuple[str, Sequence[OutMessage], Sequence[Message]]],
                     nak_delay: float = 1.0) -> Awaitable[list[list[BaseException | None]]]:
        """Publish each group's ``OutMessage``s to its subject (``send``), then ack each one's input message
        (the ``Message`` at the same place) once the broker confirmed it, and nak the input of each one it
        did not confirm (redelivered after ``nak_delay``). Returns what waits for all that: each group's
        errors (None: confirmed and acked). The default does it here; a broker may hand it elsewhere."""
        confirmations = [await self.send(subject, out) if out else None for subject, out, _ in groups]

        async def settled() -> list[list[BaseException | None]]:
            errors = [[] if confirmed is None else await confirmed for confirmed in confirmations]
            pairs = [(m, e) for (_, _, inputs), errs in zip(groups, errors, strict=True)
                     for m, e in zip(inputs, errs, strict=True)]
            failed = [m for m, e in pairs if e is not None]
            if failed:
                await self.nak(failed, delay=nak_delay)
            await self.ack([m for m, e in pairs if e is None])
            return errors

        return settled()

    @abc.abstractmethod
    async def ack(self, messages: Sequence[Message]) -> None:
        """Done with these: never deliver them again."""

    @abc.abstractmethod
    async def nak(self, messages: Sequence[Message], delay: float = 1.0) -> None:
        """Not done: deliver them again (to any consumer of the group) after ``delay`` seconds or so."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush what was sent (acks included) and disconnect."""

    async def __aenter__(self) -> Broker:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (uvicorn[standard] brings it), for ``asyncio.Runner``: the
    consumer's loop and its children's (``nats.FETCHER``, ``nats.PUBLISHER``) handle every message."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def safe_name(text: str) -> str:
    """A name brokers accept for streams, consumers and groups (no dots, wildcards or spaces)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def open_broker(url: str, in_subject: str, *, durable: str, ack_wait: float = 30.0,
                in_children: bool = False) -> Broker:
    """The adapter for ``url``'s scheme: ``nats://`` (JetStream) or ``redis://`` (Redis Streams).
    ``in_children``: JetStream pulls in a child process (``nats.ChildFetcher``) and answers (publishes,
    confirmations, acks) in another (``nats.ChildPublisher``); Redis ignores it."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in {"nats", "tls"}:
        from modelyard.stream.nats import JetStreamBroker

        return JetStreamBroker(url, in_subject, durable=durable, ack_wait=ack_wait, fetch_in_child=in_children,
                               publish_in_child=in_children)
    if scheme in {"redis", "rediss", "unix"}:
        from modelyard.stream.redis import RedisStreamBroker

        return RedisStreamBroker(url, in_subject, durable=durable, ack_wait=ack_wait)
    raise StreamError(f"no broker adapter for {url!r}: use nats://HOST:PORT or redis://HOST:PORT")
