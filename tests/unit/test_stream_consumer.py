"""The stream consumer's batch prediction and broker selection, without services."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import LinearRegression

from modelyard.config import Settings
from modelyard.errors import PredictionError
from modelyard.registry import Registry
from modelyard.runtime import Model
from modelyard.runtime.columns import Columns
from modelyard.stream import ModelHolder, StreamError, open_broker, predict_rows
from modelyard.stream.base import Broker, safe_name
from tests.batchstream_helpers import house_bundle_once, houses_input, publish_linear


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.load(house_bundle_once(tmp_path_factory))


def test_predict_rows_sets_bad_rows_aside_and_predicts_the_rest_in_one_batch(model: Model) -> None:
    rows = json.loads(houses_input(30).drop(columns=["id"]).to_json(orient="records"))
    rows[3]["area_sqm"] = "big"
    del rows[17]["floors"]
    rows[29]["house_type"] = None
    good, preds, probas, bad = predict_rows(model, rows)
    assert sorted(bad) == [3, 17, 29] and probas is None
    assert bad[3] == ("column 'area_sqm': 'big' is not a number", "area_sqm")
    assert bad[17] == ("the row is missing column 'floors'", "floors")
    assert sorted(good) == [i for i in range(30) if i not in bad]
    expected = model.predict([rows[i] for i in good])
    np.testing.assert_allclose(preds, expected)


def test_every_row_bad_gives_no_predictions(model: Model) -> None:
    good, preds, _, bad = predict_rows(model, [{"area_sqm": 1}, {}])
    assert good == [] and preds == [] and sorted(bad) == [0, 1]


def test_open_broker_picks_the_adapter_by_scheme() -> None:
    assert type(open_broker("nats://127.0.0.1:4222", "a.in", durable="d")).__name__ == "JetStreamBroker"
    assert type(open_broker("redis://127.0.0.1:6379/0", "a.in", durable="d")).__name__ == "RedisStreamBroker"
    with pytest.raises(StreamError, match="no broker adapter"):
        open_broker("kafka://127.0.0.1:9092", "a.in", durable="d")
    assert safe_name("modelyard-house prices-houses.in>") == "modelyard-house_prices-houses_in_"


class _BreaksOnHugeHouses(Model):
    """A model whose predict fails on some valid rows (as a buggy custom transformer would)."""

    def predict_frame(self, frame):  # type: ignore[no-untyped-def]
        columns = frame if isinstance(frame, Columns) else Columns.from_frame(frame)
        if (columns.data["area_sqm"] > 500).any():
            raise PredictionError("area too large for this model", model=self.name, version=self.version)
        return super().predict_frame(frame)


def test_a_row_that_breaks_the_model_is_set_aside_and_the_batch_still_answered(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    model = _BreaksOnHugeHouses.load(house_bundle_once(tmp_path_factory))
    rows = json.loads(houses_input(10).drop(columns=["id"]).to_json(orient="records"))
    rows[4]["area_sqm"] = 550.0
    good, preds, _, bad = predict_rows(model, rows)
    assert bad == {4: ("area too large for this model", None)}
    assert good == [i for i in range(10) if i != 4] and len(preds) == 9


class Fragile(RegressorMixin, BaseEstimator):
    """A linear model that raises once ``broken`` is set: a version that loads but cannot predict."""

    broken = False

    def fit(self, X: Any, y: Any) -> Fragile:
        self.model_ = LinearRegression().fit(X, y)
        return self

    def predict(self, X: Any) -> np.ndarray:
        if type(self).broken:
            raise RuntimeError("this version cannot predict")
        return np.asarray(self.model_.predict(X))


def test_the_consumer_refuses_a_version_that_cannot_predict_and_keeps_answering_with_the_old_one(
        sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    publish_linear(sqlite_settings, "lin")
    publish_linear(sqlite_settings, "lin", Fragile(), alias=None)
    monkeypatch.setattr(Fragile, "broken", True)
    registry = Registry(sqlite_settings)
    holder = ModelHolder(registry, "lin@production", interval=0.05)
    registry.set_alias("lin", "production", 2)

    async def follow_until_v2_was_tried() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(holder.follow(stop))
        deadline = time.monotonic() + 30
        try:  # until the follower either took v2 (as the old holder did) or refused it
            while holder.model.version != 2 and not getattr(holder, "refusals", 0):
                assert time.monotonic() < deadline, "v2 was never considered"
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await task

    asyncio.run(follow_until_v2_was_tried())
    assert holder.model.version == 1  # v2 refused: v1 keeps answering
    good, preds, _, bad = predict_rows(holder.model, [{"a": 1.0, "b": 0.0}])
    assert good == [0] and bad == {} and preds[0] == pytest.approx(3.0)
    assert holder.refusals == 1


class _GatedBroker(Broker):
    """A broker whose publish confirmations wait for ``gate``: what the consumer does meanwhile is recorded."""

    in_subject = "in"

    def __init__(self, batches: list[list[Any]], gate: asyncio.Event, events: list[tuple[str, str]]) -> None:
        self.batches, self.gate, self.events = batches, gate, events

    async def connect(self) -> None: ...

    async def ensure_subject(self, subject: str) -> None: ...

    async def fetch(self, max_messages: int, timeout: float) -> list[Any]:
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(0.01)
        return []

    async def send(self, subject: str, messages: Any) -> Any:
        self.events += [("sent", m.id) for m in messages]

        async def confirmed() -> list[BaseException | None]:
            await self.gate.wait()
            return [None for _ in messages]
        return confirmed()

    async def publish(self, subject: str, messages: Any) -> list[BaseException | None]:
        raise AssertionError("the consumer sends (it does not wait for each batch's confirmations)")

    async def ack(self, messages: Any) -> None:
        self.events += [("acked", m.id) for m in messages]

    async def nak(self, messages: Any, delay: float = 1.0) -> None:
        raise AssertionError("nothing is nak'd here")

    async def close(self) -> None: ...


def test_batches_are_pipelined_and_a_message_is_acked_only_once_logged_and_confirmed(model: Model) -> None:
    from modelyard.stream import StreamConsumer
    from modelyard.stream.base import Message

    rows = json.loads(houses_input(15).drop(columns=["id"]).to_json(orient="records"))
    messages = [Message(id=f"m{i}", data=json.dumps(r).encode(), raw=None) for i, r in enumerate(rows)]
    events: list[tuple[str, str]] = []

    class Log:
        async def commit(self, records: Any) -> None:
            events.extend(("logged", r.request_id) for r in records)

    class Holder:
        follows_alias = False

        def __init__(self) -> None:
            self.model = model

    async def scenario() -> None:
        gate, stop = asyncio.Event(), asyncio.Event()
        broker = _GatedBroker([messages[0:5], messages[5:10], messages[10:15]], gate, events)
        consumer = StreamConsumer(broker, Holder(), out_subject="out", log=Log(), batch_size=5,  # type: ignore[arg-type]
                                  window=2)
        task = asyncio.create_task(consumer.run(stop))
        while sum(e == "sent" for e, _ in events) < 10:  # the second batch goes out unconfirmed first one
            await asyncio.sleep(0.005)
        assert not any(e == "acked" for e, _ in events)
        gate.set()
        while sum(e == "acked" for e, _ in events) < 15:
            await asyncio.sleep(0.005)
        stop.set()
        stats = await asyncio.wait_for(task, 30)
        assert stats.answered == 15 and stats.batches == 3

    asyncio.run(scenario())
    for m in messages:
        order = [e for e, mid in events if mid == m.id]
        assert order == ["logged", "sent", "acked"], (m.id, order)
