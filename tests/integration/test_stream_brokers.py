"""The stream consumer on every broker adapter (NATS JetStream and Redis Streams, both real): answers once,
dead letters with reasons, the prediction log, alias changes. What each adapter itself must do (fetch,
deduplicated publishes, ack, redelivery of unacked work) is the broker contract, tests/contracts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelyard
from modelyard.config import Settings
from modelyard.predlog import PredictionLogWriter, list_records
from modelyard.registry import Registry
from modelyard.registry.db import get_engine
from modelyard.stream import ModelHolder, StreamConsumer, open_broker
from tests.batchstream_helpers import house_bundle_once, houses_input, publish
from tests.stream_kits import NatsChildKit, NatsKit, RedisKit
from tests.support import wait_until_async

KITS = [pytest.param(NatsKit, marks=pytest.mark.nats, id="nats"),
        pytest.param(NatsChildKit, marks=pytest.mark.nats, id="nats-in-children"),
        pytest.param(RedisKit, marks=pytest.mark.redis, id="redis")]


@pytest.fixture(scope="session")
def house_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return house_bundle_once(tmp_path_factory)


@pytest.fixture
def model_settings(house_bundle: Path, sqlite_settings: Settings) -> Settings:
    publish(house_bundle, sqlite_settings)
    return sqlite_settings


@pytest.fixture(params=KITS)
def kit(request: pytest.FixtureRequest) -> Any:
    return request.param()


def run(kit: Any, scenario: Any) -> Any:
    """Run ``scenario(kit)`` with the kit's streams set up and torn down around it."""

    async def main() -> Any:
        await kit.setup()
        try:
            return await scenario()
        finally:
            await kit.teardown()

    return asyncio.run(main())


def _rows(n: int, seed: int = 3) -> list[dict[str, Any]]:
    return json.loads(houses_input(n, seed=seed).drop(columns=["id"]).to_json(orient="records"))


async def _consume_until(consumer: StreamConsumer, done: Any, timeout: float = 60) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await wait_until_async(lambda: _or_raise(task, done), timeout, "the consumer to answer")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def _or_raise(task: asyncio.Task[Any], done: Any) -> Any:
    if task.done():
        task.result()
        raise AssertionError("the consumer stopped by itself")
    return await done()


def test_answers_every_message_once_and_dead_letters_the_malformed(kit: Any,
                                                                   model_settings: Settings) -> None:
    rows = _rows(300)
    inputs = [(f"m{i}", json.dumps(r).encode()) for i, r in enumerate(rows)]
    no_column = dict(rows[0])
    del no_column["bedrooms"]
    malformed = {
        "bad-json": b'{"area_sqm": 12',
        "not-object": b"[1, 2, 3]",
        "no-column": json.dumps(no_column).encode(),
        "not-number": json.dumps({**rows[1], "area_sqm": "huge"}).encode(),
        "missing-value": json.dumps({**rows[2], "house_type": None}).encode(),
    }
    inputs[100:100] = list(malformed.items())
    registry = Registry(model_settings)

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        await kit.send(inputs)
        consumer = StreamConsumer(open_broker(kit.url, kit.in_subject, durable="contract",
                                              in_children=getattr(kit, "in_children", False)),
                                  ModelHolder(registry, "house-prices"), out_subject=kit.out,
                                  log=writer, batch_size=64)

        async def finished() -> bool:
            return await kit.count(kit.out) >= 300 and await kit.count(kit.dlq) >= 5

        await _consume_until(consumer, finished)
        return await kit.read(kit.out), await kit.read(kit.dlq)

    writer = PredictionLogWriter.from_settings(model_settings).start()
    try:
        answers, letters = run(kit, scenario)
    finally:
        writer.stop()
    assert sorted(a["id"] for a in answers) == sorted(f"m{i}" for i in range(300))  # each once
    assert {(a["model"], a["version"]) for a in answers} == {("house-prices", 1)}
    expected = modelyard.load("house-prices", settings=model_settings).predict(rows)
    got = {a["id"]: a["prediction"] for a in answers}
    np.testing.assert_allclose([got[f"m{i}"] for i in range(300)], expected, rtol=1e-9)
    reasons = {d["id"]: d["reason"] for d in letters}
    assert sorted(reasons) == sorted(malformed)
    assert "not valid JSON" in reasons["bad-json"]
    assert "expected a JSON object" in reasons["not-object"]
    assert "missing column 'bedrooms'" in reasons["no-column"]
    assert "'huge' is not a number" in reasons["not-number"]
    assert "value is required" in reasons["missing-value"]
    assert {d["field"] for d in letters if d["id"] == "not-number"} == {"area_sqm"}
    assert next(d for d in letters if d["id"] == "bad-json")["data"] == '{"area_sqm": 12'
    records = list_records(get_engine(model_settings.resolved_database_url), "house-prices", route="stream",
                           limit=None)
    assert len(records) == 305 and sum(r.error is not None for r in records) == 5
    m7 = next(r for r in records if r.request_id == "m7")
    assert m7.inputs == [rows[7]] and m7.outputs == [got["m7"]]


def test_a_new_production_version_is_picked_up_without_a_restart(kit: Any, model_settings: Settings,
                                                                 house_bundle: Path) -> None:
    registry = Registry(model_settings)
    row = json.dumps(_rows(1)[0]).encode()

    async def scenario() -> set[int]:
        holder = ModelHolder(registry, "house-prices@production", interval=0.2)
        consumer = StreamConsumer(open_broker(kit.url, kit.in_subject, durable="alias",
                                              in_children=getattr(kit, "in_children", False)), holder,
                                  out_subject=kit.out, batch_size=10, fetch_timeout=0.2)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        try:
            await kit.send([("before", row)])
            await wait_until_async(lambda: kit.count(kit.out), 30, "the first answer")
            await asyncio.to_thread(publish, house_bundle, model_settings)  # v2 → production
            sent = 0

            async def answered_by_v2() -> bool:
                nonlocal sent
                sent += 1
                await kit.send([(f"after-{sent}", row)])
                await asyncio.sleep(0.2)
                return any(a["version"] == 2 for a in await kit.read(kit.out))

            await wait_until_async(answered_by_v2, 30, "an answer from version 2", interval=0.1)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        return {a["version"] for a in await kit.read(kit.out) if a["id"] == "before"}

    assert run(kit, scenario) == {1}
