"""Redis Streams: a consumer group on the input stream key, answers ``XADD``-ed with deduplication.

Redis has no server-side dedup on publish, so each answer goes through a small Lua script that adds the
entry only if ``SET dedup-key NX EX window`` succeeds, atomically. Messages a dead consumer fetched but never
acknowledged stay pending in the group and are claimed (``XAUTOCLAIM``) once idle longer than ``ack_wait``.

An input entry carries its JSON in a ``data`` field (and optionally its own ``id``); an entry without
``data`` is read as one row of column → value fields, so ``XADD houses.in * area_sqm 120 ...`` works too.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from modelyard.errors import StreamError
from modelyard.stream.base import Broker, Message, OutMessage, safe_name

_PUBLISH = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  return redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'data', ARGV[2])
end
return false
"""


class RedisStreamBroker(Broker):
    def __init__(self, url: str, in_subject: str, *, durable: str, ack_wait: float = 30.0,
                 dedup_window: int = 120) -> None:
        self.url = url
        self.in_subject = in_subject
        self.group = safe_name(durable)
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.ack_wait = ack_wait
        self.dedup_window = dedup_window
        self.r: aioredis.Redis | None = None
        self._script: object = None

    async def connect(self) -> None:
        self.r = aioredis.Redis.from_url(self.url)
        try:
            await self.r.xgroup_create(self.in_subject, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise StreamError(f"cannot create group {self.group} on {self.in_subject}: {exc}") from exc
        except OSError as exc:
            raise StreamError(f"cannot connect to Redis at {self.url}: {exc}") from exc
        self._script = self.r.register_script(_PUBLISH)

    async def ensure_subject(self, subject: str) -> None:
        return None  # XADD creates the stream key

    def _message(self, entry_id: bytes, fields: dict[bytes, bytes]) -> Message:
        data = fields.get(b"data")
        if data is None:
            data = json.dumps({k.decode(): v.decode() for k, v in fields.items() if k != b"id"}).encode()
        own_id = fields.get(b"id")
        msg_id = own_id.decode() if own_id else f"{self.in_subject}:{entry_id.decode()}"
        return Message(id=msg_id, data=data, raw=entry_id)

    async def fetch(self, max_messages: int, timeout: float) -> list[Message]:
        assert self.r is not None
        claimed = await self.r.xautoclaim(self.in_subject, self.group, self.consumer,
                                          min_idle_time=int(self.ack_wait * 1000), start_id="0-0",
                                          count=max_messages)
        entries = [e for e in claimed[1] if e and e[1] is not None]
        messages = [self._message(eid, fields) for eid, fields in entries]
        for m in messages:
            m.delivery = 2
        if messages:
            return messages
        result: Any = await self.r.xreadgroup(self.group, self.consumer, {self.in_subject: ">"},
                                         count=max_messages, block=max(1, int(timeout * 1000)))
        if not result:
            return []
        return [self._message(eid, fields) for eid, fields in result[0][1]]  # [(stream, [(id, fields)])]

    async def publish(self, subject: str, messages: Sequence[OutMessage]) -> list[BaseException | None]:
        assert self.r is not None
        pipe = self.r.pipeline(transaction=False)
        for m in messages:
            await self._script(keys=[subject, f"modelyard:dedup:{subject}:{m.id}"],  # type: ignore[operator]
                               args=[m.id, m.data, self.dedup_window], client=pipe)  # queued, not sent
        try:
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            return [exc for _ in messages]
        return [r if isinstance(r, BaseException) else None for r in results]

    async def ack(self, messages: Sequence[Message]) -> None:
        assert self.r is not None
        if messages:
            await self.r.xack(self.in_subject, self.group, *[m.raw for m in messages])

    async def nak(self, messages: Sequence[Message], delay: float = 1.0) -> None:
        return None  # they stay pending and are claimed again after ack_wait

    async def close(self) -> None:
        if self.r is not None:
            await self.r.aclose()
            self.r = None
