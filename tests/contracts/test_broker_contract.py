"""The broker contract, one set of checks over every adapter in ``modelyard.stream`` against the real
services (NATS JetStream on 4222, Redis Streams on 6379): fetch, publish deduplicated on the message id,
ack, redelivery of what was fetched and never acked (or nak'ed), and dead letters with their reason."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from modelyard.stream import Broker, OutMessage, open_broker
from tests.batchstream_helpers import publish_linear
from tests.stream_kits import NatsChildKit, NatsKit, RedisKit
from tests.support import wait_until_async

KITS = [pytest.param(NatsKit, marks=pytest.mark.nats, id="nats"),
        pytest.param(NatsChildKit, marks=pytest.mark.nats, id="nats-in-children"),
        pytest.param(RedisKit, marks=pytest.mark.redis, id="redis")]


@pytest.fixture(params=KITS)
def kit(request: pytest.FixtureRequest) -> Any:
    return request.param()


def run(kit: Any, scenario: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``scenario()`` with the kit's streams set up and torn down around it."""

    async def main() -> Any:
        await kit.setup()
        try:
            return await scenario()
        finally:
            await kit.teardown()

    return asyncio.run(main())


async def _connected(kit: Any, durable: str, ack_wait: float = 30.0) -> Broker:
    broker = open_broker(kit.url, kit.in_subject, durable=durable, ack_wait=ack_wait,
                         in_children=getattr(kit, "in_children", False))
    await broker.connect()
    return broker


def test_fetch_gives_each_message_with_its_id_and_data_then_nothing_when_idle(kit: Any) -> None:
    async def scenario() -> tuple[list[tuple[str, bytes, int]], list[Any]]:
        await kit.send([(f"m{i}", json.dumps({"i": i}).encode()) for i in range(5)])
        broker = await _connected(kit, "fetch")
        try:
            got: list[Any] = []
            while len(got) < 5:
                batch = await broker.fetch(3, 5.0)
                assert batch, "the broker gave nothing while messages were waiting"
                assert len(batch) <= 3
                got += batch
            await broker.ack(got)
            idle = await broker.fetch(10, 0.5)
            return [(m.id, m.data, m.delivery) for m in got], idle
        finally:
            await broker.close()

    got, idle = run(kit, scenario)
    assert sorted(got) == [(f"m{i}", json.dumps({"i": i}).encode(), 1) for i in range(5)]
    assert idle == []


def test_a_second_publish_with_the_same_id_is_dropped(kit: Any) -> None:
    async def scenario() -> int:
        broker = await _connected(kit, "dedup")
        try:
            await broker.ensure_subject(kit.out)
            first = await broker.publish(kit.out, [OutMessage("a", b"1"), OutMessage("b", b"2")])
            again = await broker.publish(kit.out, [OutMessage("a", b"1")])
            assert first == [None, None] and again == [None]
            return await kit.count(kit.out)
        finally:
            await broker.close()

    assert run(kit, scenario) == 2


def test_a_message_fetched_but_never_acked_is_redelivered_to_the_group(kit: Any) -> None:
    async def scenario() -> tuple[str, str, int]:
        await kit.send([("only", b"{}")])
        dead = await _connected(kit, "group", ack_wait=1.0)
        alive = await _connected(kit, "group", ack_wait=1.0)
        try:
            [taken] = await dead.fetch(10, 5.0)  # ... and its consumer dies without an ack

            async def redelivered() -> Any:
                return await alive.fetch(10, 0.5)

            [again] = await wait_until_async(redelivered, 30, "the redelivery")
            await alive.ack([again])
            assert await alive.fetch(10, 1.5) == []  # acked: gone for good
            return taken.id, again.id, again.delivery
        finally:
            await dead.close()
            await alive.close()

    taken, again, delivery = run(kit, scenario)
    assert taken == again == "only" and delivery >= 2


def test_a_nak_ed_message_comes_back_and_an_acked_one_does_not(kit: Any) -> None:
    async def scenario() -> tuple[list[str], int]:
        await kit.send([("keep", b"1"), ("retry", b"2")])
        broker = await _connected(kit, "nak", ack_wait=1.0)
        try:
            first: list[Any] = []
            while len(first) < 2:
                first += await broker.fetch(10, 5.0)
            await broker.ack([m for m in first if m.id == "keep"])
            await broker.nak([m for m in first if m.id == "retry"], delay=0.2)

            async def back() -> Any:
                return await broker.fetch(10, 0.5)

            again = await wait_until_async(back, 30, "the nak'ed message")
            await broker.ack(again)
            return [m.id for m in again], max(m.delivery for m in again)
        finally:
            await broker.close()

    ids, delivery = run(kit, scenario)
    assert ids == ["retry"] and delivery >= 2


def test_answer_acks_what_the_broker_confirmed_and_naks_what_it_refused(kit: Any) -> None:
    """``answer``: each input is acked once its answer is confirmed; on JetStream a publish to a subject no
    stream captures is refused, and its input comes back (Redis takes any key: everything is confirmed)."""
    async def scenario() -> tuple[list[list[Any]], list[str], int]:
        await kit.send([(f"m{i}", b"{}") for i in range(4)])
        broker = await _connected(kit, "answer", ack_wait=20.0)  # what comes back is the nak'ed one
        try:
            await broker.ensure_subject(kit.out)
            got: list[Any] = []
            while len(got) < 4:
                got += await broker.fetch(4, 5.0)
            outs = [OutMessage(f"a-{m.id}", m.id.encode()) for m in got]
            nowhere = f"{kit.out}-nowhere"  # JetStream: no stream captures it
            errors = await (await broker.answer([(kit.out, outs[:3], got[:3]), (nowhere, outs[3:], got[3:])],
                                                nak_delay=0.1))
            expected_back = 1 if kit.kind == "nats" else 0

            async def back() -> Any:
                return await broker.fetch(10, 0.5) or ([] if expected_back else ["none"])

            again = await wait_until_async(back, 30, "the refused one's input")
            again = [m for m in again if m != "none"]
            await broker.ack(again)
            return errors, [m.id for m in again], await kit.count(kit.out)
        finally:
            await broker.close()

    errors, again, answered = run(kit, scenario)
    assert errors[0] == [None, None, None] and answered == 3
    if kit.kind == "nats":
        assert len(errors[1]) == 1 and errors[1][0] is not None and len(again) == 1
    else:
        assert errors[1] == [None] and again == []


def test_a_malformed_message_is_dead_lettered_with_its_reason_and_acked(kit: Any, sqlite_settings: Any) -> None:
    """The consumer over the adapter: the dead letter lands on ``<in>.dlq`` once and the input is settled."""
    from modelyard.registry import Registry
    from modelyard.stream import ModelHolder, StreamConsumer

    publish_linear(sqlite_settings, "lin")
    holder = ModelHolder(Registry(sqlite_settings), "lin")

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
        await kit.send([("bad", b"{not json"), ("good", json.dumps({"a": 1.0, "b": 2.0}).encode())])
        consumer = StreamConsumer(open_broker(kit.url, kit.in_subject, durable="dlq"), holder,
                                  out_subject=kit.out, batch_size=10, fetch_timeout=0.2)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        try:
            async def settled() -> bool:  # published, logged and acked (stats count a batch once acked)
                return (await kit.count(kit.dlq) >= 1 and await kit.count(kit.out) >= 1
                        and consumer.stats.answered + consumer.stats.dead_lettered >= 2)

            await wait_until_async(settled, 30, "the dead letter and the answer")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        again = await _connected(kit, "dlq")
        try:
            left = await again.fetch(10, 1.0)  # both were acked: nothing comes back
        finally:
            await again.close()
        return await kit.read(kit.dlq), await kit.read(kit.out), left

    letters, answers, left = run(kit, scenario)
    assert [(d["id"], d["field"]) for d in letters] == [("bad", None)]
    assert "not valid JSON" in letters[0]["reason"] and letters[0]["data"] == "{not json"
    assert [a["id"] for a in answers] == ["good"]
    assert left == []
