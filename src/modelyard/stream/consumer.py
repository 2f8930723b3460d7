"""The consumer loop: fetch a batch, predict it at once, publish answers and dead letters, then ack.

Order of effects per batch: the prediction records are written ahead (the log's segment, durable at
``MODELYARD_LOG_DURABILITY``), answers and dead letters are published and confirmed by the broker, and
only then are the inputs acknowledged. The batches are pipelined: the next batch is fetched while one is
predicted, and a batch's confirmations and acks are awaited while the following batches are predicted
(at most ``window`` batches wait to be settled), so the loop works at the model's and the broker's pace
rather than at the sum of their round trips. On JetStream (``modelyard stream``) the pulls and the answers
(publishes, their confirmations, the acks) run in two child processes (``nats.ChildFetcher``,
``nats.ChildPublisher``) and the log's shipping in a third (``predlog.shipper.ShipperProcess``): this
interpreter parses, predicts, writes the log ahead and hands the batch over. A crash anywhere before the ack means
a redelivery, and the answer's dedup id makes the second publish a no-op: at-least-once processing,
exactly-once answers. A message that is not JSON or fails the schema is dead-lettered with the reason;
nothing a message contains stops the loop. ``stop`` (SIGTERM) lets the batch in hand finish, then closes.

``FeedbackConsumer`` reads a labels subject beside it: outcomes of the answered messages, joined to the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from modelyard.errors import ModelyardError, SchemaError
from modelyard.monitor.fleet import FleetMember
from modelyard.predlog import PredictionLogWriter, PredictionRecord
from modelyard.predlog.outcomes import DEFAULT_KEY_WINDOW, Outcome, join_outcomes, parse_outcome, task_of_registry
from modelyard.registry import Registry, parse_ref
from modelyard.runtime import AliasFollower, Model, ModelLoader
from modelyard.stream.base import Broker, Message, OutMessage

log = logging.getLogger("modelyard.stream")


class ModelHolder:
    """The model a consumer predicts with: ``ref``'s version, followed by the runtime's one alias follower.

    An alias is re-resolved every ``interval`` seconds; a new version is loaded and warmed up in a thread,
    off the hot loop, and swapped in between two batches; a version that fails to load or to predict its
    own reference rows is refused and the old one keeps answering (``refusals`` counts it).
    """

    def __init__(self, registry: Registry, ref: str, interval: float = 2.0) -> None:
        self.registry = registry
        self.ref = ref
        self.name, self.selector = parse_ref(ref)
        self.interval = interval
        name, selector = parse_ref(ref)
        self.follows_alias = isinstance(selector, str)
        self.loader = ModelLoader(lambda n, v: registry.load_bundle(registry.get_version(n, v)))
        self.follower = AliasFollower(name, str(selector), self.loader,
                                      resolve=lambda: registry.resolve(ref).version)
        # The first version is loaded now: a consumer that cannot load it fails at start, loudly.
        self.follower.adopt(self.loader.load_sync(name, registry.resolve(ref).version))

    @property
    def model(self) -> Model:
        model = self.follower.model
        assert model is not None  # adopted in __init__, and a refusal never unsets it
        return model

    def serving(self) -> list[dict[str, Any]]:
        """What this consumer answers with now, for its fleet heartbeat."""
        alias = self.selector if isinstance(self.selector, str) else None
        return [{"model": self.name, "alias": alias, "version": self.model.version, "weight": None,
                 "pinned": alias is None}]

    @property
    def refusals(self) -> int:
        return self.loader.refusals

    async def refresh(self) -> bool:
        """Re-resolve ``ref`` once; True when a new version now answers."""
        return await self.follower.refresh()

    async def follow(self, stop: asyncio.Event) -> None:
        await self.follower.follow(stop, self.interval)


@dataclass
class StreamStats:
    answered: int = 0
    dead_lettered: int = 0
    retried: int = 0
    batches: int = 0


def predict_rows(model: Model, rows: list[dict[str, Any]]) -> tuple[list[int], list[Any], list[Any] | None,
                                                                    dict[int, tuple[str, str | None]]]:
    """Predict ``rows`` as one batch (``Model.predict_partial``); return (good indexes, predictions,
    probabilities, {bad index: (reason, field)}). Nothing a row contains makes it raise."""
    try:
        result = model.predict_partial(rows, probabilities=model.has_proba)
    except SchemaError as exc:  # no single row's fault: every row gets the reason
        return [], [], [] if model.has_proba else None, {i: (exc.message, exc.field) for i in range(len(rows))}
    bad = {e.row: (e.reason, e.field) for e in result.errors}
    probas = None if result.probabilities is None else result.probabilities.round(6).tolist()
    return result.positions.tolist(), result.predictions.tolist(), probas, bad


def dead_letter(msg_id: str, data: bytes, reason: str, field: str | None, subject: str,
                meta: dict[str, Any]) -> OutMessage:
    """The dead letter of one message: its id, the reason (also as a header), the field, the raw data and the
    subject it came from; deduplicated on ``dlq:<id>`` like an answer."""
    return OutMessage(f"dlq:{msg_id}", orjson.dumps({
        "id": msg_id, "reason": reason, "field": field, "data": data.decode("utf-8", "replace"),
        "subject": subject, **meta}), {"Modelyard-Reason": reason[:200].replace("\n", " ")})


def _one_openmp_thread() -> None:
    """Predictions of a few hundred rows lose more to an OpenMP team than they gain (see batch.executor)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="openmp")  # kept for the life of this (the predicting) thread


class StreamConsumer:
    """One consumer process's loop over ``broker``; see the module docstring for the guarantees."""

    def __init__(self, broker: Broker, holder: ModelHolder, *, out_subject: str,
                 dlq_subject: str | None = None, log: PredictionLogWriter | None = None, batch_size: int = 500,
                 fetch_timeout: float = 1.0, window: int = 2, member: FleetMember | None = None) -> None:
        self.broker = broker
        self.holder = holder
        self.out_subject = out_subject
        self.dlq_subject = dlq_subject or f"{broker.in_subject}.dlq"
        self.log = log  # records are written ahead (durable) before their messages are acked
        self.batch_size = batch_size
        self.fetch_timeout = fetch_timeout
        self.member = member  # this consumer's fleet heartbeat, beaten from the fetch loop when due
        self.window = window  # batches published and waiting for their confirmations and acks
        self.stats = StreamStats()
        self._settling: deque[asyncio.Task[None]] = deque()
        self._predictor = ThreadPoolExecutor(1, thread_name_prefix="stream-predict",
                                             initializer=_one_openmp_thread)

    async def run(self, stop: asyncio.Event) -> StreamStats:
        await self.broker.connect()
        follower = asyncio.create_task(self.holder.follow(stop)) if self.holder.follows_alias else None
        fetching: asyncio.Task[list[Message]] | None = None
        try:
            await self.broker.ensure_subject(self.out_subject)
            await self.broker.ensure_subject(self.dlq_subject)
            fetching = asyncio.create_task(self._fetch(stop))
            while True:
                messages = await fetching  # whatever was fetched is handled, even once stop is set
                if stop.is_set() and not messages:
                    break
                # the next batch is fetched while this one is predicted, logged and published
                fetching = asyncio.create_task(self._fetch(stop))
                if self.member is not None and self.member.due():
                    await asyncio.to_thread(self.member.beat_if_due)
                if not messages:
                    continue
                try:
                    await self.handle(messages)  # runs to completion even when stop is set meanwhile
                except Exception as exc:  # a broker or database hiccup: unacked work is redelivered
                    log.exception("batch of %d failed (%s); it will be redelivered", len(messages), exc)
                    await _sleep_unless(stop, 1.0)
        finally:
            if follower is not None:
                follower.cancel()
            if fetching is not None and not fetching.done():  # only when handling was cancelled: redelivered
                fetching.cancel()
            while self._settling:  # drain: every answered message is logged and acked before closing
                try:
                    await self._settling.popleft()
                except Exception as exc:
                    log.warning("could not settle a batch while stopping (%s); it will be redelivered", exc)
            await self.broker.close()
            self._predictor.shutdown(wait=False)
            if self.member is not None:
                await asyncio.to_thread(self.member.stop)
        return self.stats

    async def _fetch(self, stop: asyncio.Event) -> list[Message]:
        """The next batch; [] when idle, stopping, or after a failed fetch (retried a second later)."""
        if stop.is_set():
            return []
        try:
            return await self.broker.fetch(self.batch_size, self.fetch_timeout)
        except Exception as exc:
            log.warning("fetch failed (%s); retrying", exc)
            await _sleep_unless(stop, 1.0)
            return []

    async def handle(self, messages: Sequence[Message]) -> None:
        """Parse, predict and log the batch, publish its answers; their confirmation and the acks are
        settled in the background (at most ``window`` batches at a time)."""
        started = time.perf_counter()
        model = self.holder.model  # one version for the whole batch
        rows: list[dict[str, Any]] = []
        parsed: list[Message] = []
        dead: list[tuple[Message, str, str | None]] = []
        for m in messages:
            try:
                value = orjson.loads(m.data)
            except orjson.JSONDecodeError as exc:
                dead.append((m, f"not valid JSON: {exc}", None))
                continue
            if not isinstance(value, dict):
                dead.append((m, f"expected a JSON object of column values, got {type(value).__name__}", None))
                continue
            rows.append(value)
            parsed.append(m)
        try:
            loop = asyncio.get_running_loop()
            good, preds, probas, bad = (await loop.run_in_executor(self._predictor, predict_rows, model, rows)
                                        if rows else ([], [], None, {}))
        except Exception as exc:  # a bug, not the message's fault: let the broker redeliver later
            log.exception("batch of %d failed; will be redelivered: %s", len(messages), exc)
            await self.broker.nak(messages, delay=5.0)
            self.stats.retried += len(messages)
            return
        dead += [(parsed[i], reason, field) for i, (reason, field) in sorted(bad.items())]
        meta = {"model": model.name, "version": model.version}
        headers = {"Modelyard-Model": model.name, "Modelyard-Version": str(model.version)}
        labels = [str(c) for c in (model.classes_ or [])]
        answers = []
        for n, i in enumerate(good):
            body: dict[str, Any] = {"id": parsed[i].id, "prediction": preds[n], **meta}
            if probas is not None:
                body["probabilities"] = dict(zip(labels, probas[n], strict=False))
            answers.append(OutMessage(parsed[i].id, orjson.dumps(body), headers))
        letters = [dead_letter(m.id, m.data, reason, field, self.broker.in_subject, meta)
                   for m, reason, field in dead]
        if self.log is not None and (good or dead):  # written ahead, then answered: a crash after the
            latency_ms = (time.perf_counter() - started) * 1000.0  # publish below loses no record
            now = datetime.now(UTC)  # one clock reading for the batch (it was a tenth of the records' cost)
            name, version, subject = model.name, int(model.version or 0), self.broker.in_subject
            records = [PredictionRecord(
                request_id=parsed[i].id, model=name, version=version, route="stream",
                inputs=[rows[i]], outputs=[preds[n]], latency_ms=latency_ms, ts=now,
                meta={"subject": subject, "delivery": parsed[i].delivery,
                      **({"probabilities": [probas[n]]} if probas is not None else {})})
                for n, i in enumerate(good)]
            records += [PredictionRecord(
                request_id=m.id, model=name, version=version, route="stream",
                inputs=None, error=reason, latency_ms=latency_ms, ts=now,
                meta={"subject": subject, "dead_letter": self.dlq_subject})
                for m, reason, _ in dead]
            try:
                await self.log.commit(records)
            except Exception as exc:  # not logged: not answered either; redelivered later
                log.warning("prediction log unavailable (%s); %d messages will be redelivered", exc,
                            len(messages))
                await self.broker.nak(messages, delay=2.0)
                self.stats.retried += len(messages)
                return
        groups = [(self.out_subject, answers, [parsed[i] for i in good]),
                  (self.dlq_subject, letters, [m for m, _, _ in dead])]
        self._settling.append(asyncio.create_task(self._settle(await self.broker.answer(groups))))
        while len(self._settling) > self.window:
            await self._settling.popleft()

    async def _settle(self, settled: Awaitable[list[list[BaseException | None]]]) -> None:
        """Once the broker confirmed the answers and dead letters and acked their inputs (their records
        were written ahead before they were published; it nak'ed the inputs of what it did not confirm):
        count them."""
        answer_errors, letter_errors = await settled
        failed = [e for e in [*answer_errors, *letter_errors] if e is not None]
        if failed:  # their records are logged already; the redelivery's are deduplicated
            log.warning("%d publishes failed (%r); they will be redelivered", len(failed), failed[0])
            self.stats.retried += len(failed)
        self.stats.answered += sum(e is None for e in answer_errors)
        self.stats.dead_lettered += sum(e is None for e in letter_errors)
        self.stats.batches += 1


@dataclass
class FeedbackStats:
    received: int = 0
    matched: int = 0
    duplicate: int = 0
    unmatched: int = 0
    late: int = 0
    invalid: int = 0


class FeedbackConsumer:
    """Outcomes from a labels subject (``modelyard stream ... --feedback SUBJECT``), joined to the log.

    A message is one outcome (``{"request_id": <the input message's id>, "row"?: 0, "actual": ...}`` or
    ``{"key": {...}, "at"?: ..., "actual": ...}``) or a list of them. Each batch is joined and stored
    (``predlog.outcomes``, not strict: unknown ids are kept and counted as unmatched) before it is acked;
    a message that is not an outcome goes to the labels' dead-letter subject with the reason.
    """

    def __init__(self, broker: Broker, registry: Registry, model: str, *, dlq_subject: str | None = None,
                 batch_size: int = 500, fetch_timeout: float = 1.0, window: float = DEFAULT_KEY_WINDOW) -> None:
        self.broker = broker
        self.registry = registry
        self.model = model
        self.dlq_subject = dlq_subject or f"{broker.in_subject}.dlq"
        self.batch_size = batch_size
        self.fetch_timeout = fetch_timeout
        self.window = window
        self.stats = FeedbackStats()
        self._task_of = task_of_registry(registry)

    async def run(self, stop: asyncio.Event) -> FeedbackStats:
        await self.broker.connect()
        try:
            await self.broker.ensure_subject(self.dlq_subject)
            while not stop.is_set():
                try:
                    messages = await self.broker.fetch(self.batch_size, self.fetch_timeout)
                    if messages:
                        await self.handle(messages)
                except Exception as exc:  # unacked labels are redelivered
                    log.warning("labels batch failed (%s); it will be redelivered", exc)
                    await _sleep_unless(stop, 1.0)
        finally:
            await self.broker.close()
        return self.stats

    async def handle(self, messages: Sequence[Message]) -> None:
        outcomes: list[Outcome] = []
        dead: list[tuple[Message, str]] = []
        for m in messages:
            try:
                value = orjson.loads(m.data)
                items = value if isinstance(value, list) else [value]
                outcomes += [parse_outcome(item, i) for i, item in enumerate(items)]
            except orjson.JSONDecodeError as exc:
                dead.append((m, f"not valid JSON: {exc}"))
            except ModelyardError as exc:
                dead.append((m, exc.message))
        if outcomes:
            result = await asyncio.to_thread(join_outcomes, self.registry.engine, outcomes, model=self.model,
                                             source="stream", window=self.window, task_of=self._task_of)
            for name in ("received", "matched", "duplicate", "unmatched", "late"):
                setattr(self.stats, name, getattr(self.stats, name) + getattr(result, name))
        if dead:
            letters = [OutMessage(f"dlq:{m.id}", orjson.dumps({"id": m.id, "reason": reason,
                                                                "data": m.data.decode("utf-8", "replace")}),
                                  {"Modelyard-Reason": reason[:200].replace("\n", " ")}) for m, reason in dead]
            errors = await self.broker.publish(self.dlq_subject, letters)
            if any(e is not None for e in errors):
                raise RuntimeError(f"could not dead-letter {len(dead)} label messages")
            self.stats.invalid += len(dead)
        await self.broker.ack(messages)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
