"""Real brokers for the stream tests: unique JetStream streams or Redis keys per test, removed afterwards.

A kit sends raw input messages, counts and reads what landed on a subject; the same tests run on every kit.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

NATS_URL = "nats://127.0.0.1:4222"
REDIS_URL = "redis://127.0.0.1:6379/0"


class NatsKit:
    kind = "nats"
    url = NATS_URL

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.in_subject, self.out, self.dlq = f"t{tag}.in", f"t{tag}.out", f"t{tag}.in.dlq"
        self.streams = {self.in_subject: f"T{tag}_IN", self.out: f"T{tag}_OUT", self.dlq: f"T{tag}_DLQ"}

    async def setup(self) -> None:
        import nats

        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream(timeout=10)
        for subject, name in self.streams.items():
            await self.js.add_stream(name=name, subjects=[subject], duplicate_window=120.0)

    async def teardown(self) -> None:
        for name in self.streams.values():
            try:
                await self.js.delete_stream(name)
            except Exception:
                pass
        await self.nc.close()

    async def send(self, items: list[tuple[str, bytes]]) -> None:
        futures = [await self.js.publish_async(self.in_subject, data, headers={"Nats-Msg-Id": msg_id})
                   for msg_id, data in items]
        await asyncio.gather(*futures)

    async def unsettled(self, durable: str) -> int:
        """Messages of the input stream the durable consumer has not acked yet (pending or in flight)."""
        info = await self.js.consumer_info(self.streams[self.in_subject], durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def count(self, subject: str) -> int:
        return int((await self.js.stream_info(self.streams[subject])).state.messages)

    async def read(self, subject: str) -> list[dict[str, Any]]:
        n = await self.count(subject)
        sub = await self.js.pull_subscribe(subject, stream=self.streams[subject])
        out: list[dict[str, Any]] = []
        while len(out) < n:
            for m in await sub.fetch(min(1000, n - len(out)), timeout=5):
                out.append({**json.loads(m.data), "_headers": dict(m.headers or {})})
                await m.ack()
        await sub.unsubscribe()
        return out


class NatsChildKit(NatsKit):
    """JetStream pulling and answering in child processes (``nats.ChildFetcher``, ``nats.ChildPublisher``):
    brokers opened with ``open_broker(..., in_children=kit.in_children)``, as ``modelyard stream`` opens it."""

    in_children = True


class RedisKit:
    kind = "redis"
    url = REDIS_URL

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.in_subject, self.out, self.dlq = f"t{tag}.in", f"t{tag}.out", f"t{tag}.in.dlq"
        self.tag = tag

    async def setup(self) -> None:
        import redis.asyncio as aioredis

        self.r = aioredis.Redis.from_url(self.url)
        await self.r.ping()

    async def teardown(self) -> None:
        keys = [self.in_subject, self.out, self.dlq]
        keys += [k async for k in self.r.scan_iter(match=f"modelyard:dedup:t{self.tag}*")]
        await self.r.delete(*keys)
        await self.r.aclose()

    async def send(self, items: list[tuple[str, bytes]]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for msg_id, data in items:
            pipe.xadd(self.in_subject, {"id": msg_id, "data": data})
        await pipe.execute()

    async def count(self, subject: str) -> int:
        return int(await self.r.xlen(subject))

    async def read(self, subject: str) -> list[dict[str, Any]]:
        return [json.loads(fields[b"data"]) for _, fields in await self.r.xrange(subject)]


def labelled_events(frame: Any) -> list[bytes]:
    """One JSON event per row of a DataFrame (inputs and outcome; a missing value is null)."""
    import orjson

    columns = list(frame.columns)
    return [orjson.dumps(dict(zip(columns, [None if v != v else v for v in row], strict=True)))
            for row in frame.itertuples(index=False, name=None)]
