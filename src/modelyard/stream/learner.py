"""``modelyard learn``: labelled events from JetStream → ``OnlineLearner`` → a published version per range.

The position is kept with the model: every version's lineage records the exact range of stream sequences
it learnt (first..last), and the registry's publish (one transaction) is the commit point. At start the
learner finds the last version of its chain (same model, subject and consumer), loads its pipeline and
recreates its durable consumer at ``last_seq + 1``; a fresh chain starts at ``--from-seq`` (default 1).

Why not the consumer's acks alone: a publish and an ack are two systems and cannot commit together, so the
registry has to be the truth in any case. The durable consumer is still acked only after the version is
published (``AckPolicy.ALL`` on the range's last message), so its ack floor shows the published position and
its pending count what was learnt since. A SIGKILL before the publish loses only memory: the range is
delivered again to the next learner and learnt again from the parent; a SIGKILL after it re-reads nothing.
Each event is counted once, in exactly one version's range.

Bad events are dead-lettered (the stream consumer's format, ``consumer.dead_letter``) before the version
whose range holds them is published; a replayed range dead-letters them again under the same
``Nats-Msg-Id`` (deduplicated within the dead-letter stream's duplicate window). SIGTERM lets the version in
flight finish, cuts what was learnt since (when a version can be cut) and exits.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nats.js.api import AckPolicy

from modelyard.bundle import Bundle
from modelyard.errors import SpecError, StreamError
from modelyard.pipeline import TrainSpec, parse_spec
from modelyard.pipeline.lineage import StreamLineage, environment, git_state, stream_lineage
from modelyard.pipeline.online import Cut, Event, OnlineLearner, Origin, Rejected, cut_lineage, write_cut_bundle
from modelyard.registry import Registry, VersionRecord
from modelyard.stream.base import Message, safe_name
from modelyard.stream.consumer import dead_letter
from modelyard.stream.nats import JetStreamBroker

log = logging.getLogger("modelyard.learn")


@dataclass
class LearnStats:
    """What the learner published (counts of the published ranges) and saw."""

    learnt: int = 0
    held_out: int = 0
    dead_lettered: int = 0
    versions: list[int] = field(default_factory=list)


def default_consumer(name: str, subject: str) -> str:
    return safe_name(f"modelyard-learn-{name}-{subject}")


def chain_head(registry: Registry, name: str, subject: str, consumer: str
               ) -> tuple[VersionRecord, StreamLineage] | None:
    """The last version ``name`` learnt from ``subject`` through ``consumer``: where a learner resumes."""
    if name not in registry.models():
        return None
    for record in reversed(registry.versions(name)):
        lineage = stream_lineage(record.manifest.lineage)
        if lineage is not None and lineage.subject == subject and lineage.consumer == consumer:
            return record, lineage
    return None


def resolve_spec(given: TrainSpec | None, head: tuple[VersionRecord, StreamLineage] | None, name: str,
                 subject: str) -> TrainSpec:
    """The spec a learner runs: the chain's recorded one (a different ``--spec`` is refused), or ``given``."""
    if head is None:
        if given is None:
            raise SpecError(f"{name} has no version learnt from {subject} yet: give the online spec (--spec)")
        return given
    record = head[0]
    recorded = record.manifest.lineage.spec or {}
    base = record.manifest.lineage.spec_dir
    spec = parse_spec(recorded, base_dir=Path(base) if base else None,
                      origin=f"{name} v{record.version} manifest")
    if given is not None and given.as_dict() != spec.as_dict():
        raise SpecError(f"the spec differs from the one {name} v{record.version} learnt with; a chain keeps its "
                        f"spec (learn under another --durable to start a new chain)")
    return spec


class StreamLearner:
    """One learner process's loop over a JetStream subject; see the module docstring for the guarantees."""

    def __init__(self, registry: Registry, spec: TrainSpec, *, broker_url: str, in_subject: str,
                 consumer: str | None = None, dlq_subject: str | None = None, alias: str | None = None,
                 fetch_batch: int = 1000, fetch_timeout: float = 1.0, from_seq: int = 1) -> None:
        self.registry = registry
        self.consumer = consumer or default_consumer(spec.name, in_subject)
        head = chain_head(registry, spec.name, in_subject, self.consumer)
        self.spec = resolve_spec(spec, head, spec.name, in_subject)
        parent: Bundle | None = registry.load_bundle(head[0]) if head else None
        self.parent_version = head[0].version if head else None
        self.start_seq = head[1].last_seq + 1 if head else from_seq
        self.learner = OnlineLearner(self.spec, parent.pipeline_ if parent else None)
        self.url = broker_url
        self.in_subject = in_subject
        self.dlq_subject = dlq_subject or f"{in_subject}.dlq"
        self.alias = alias
        self.fetch_batch = fetch_batch
        self.fetch_timeout = fetch_timeout
        minutes = self.spec.training.publish_minutes
        self.broker = JetStreamBroker(broker_url, in_subject, durable=self.consumer, start_seq=self.start_seq,
                                      ack_policy=AckPolicy.ALL, max_ack_pending=-1,
                                      ack_wait=max(600.0, 2 * 60 * (minutes or 0)))
        self.stats = LearnStats()
        self._inflight: asyncio.Task[None] | None = None
        self._publisher = ThreadPoolExecutor(1, thread_name_prefix="learn-publish")
        self._feeder = ThreadPoolExecutor(1, thread_name_prefix="learn-feed")
        self._environment = environment(self.spec.model.estimator)
        self._git = git_state(self.spec.base_dir)
        self._range_started = time.monotonic()
        self._origin: Origin | None = None

    async def run(self, stop: asyncio.Event) -> LearnStats:
        await self.broker.connect()
        try:
            assert self.broker.stream is not None
            self._origin = Origin(self.url, self.broker.stream, self.in_subject, self.consumer, self.dlq_subject)
            await self.broker.ensure_subject(self.dlq_subject)
            log.info("learning %s from %s (stream %s) from sequence %d, on top of %s", self.spec.name,
                     self.in_subject, self.broker.stream, self.start_seq,
                     f"v{self.parent_version}" if self.parent_version else "nothing (a new chain)")
            await self._loop(stop)
            if self._inflight is not None:  # stopped: finish the version in flight, then cut the rest
                await self._inflight
            await self._cut(self._last)
            if self._inflight is not None:
                await self._inflight
        finally:
            await self.broker.close()
            self._publisher.shutdown(wait=False)
            self._feeder.shutdown(wait=False)
        return self.stats

    async def _loop(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        high = self.start_seq - 1
        self._last: Message | None = None
        pending = asyncio.ensure_future(self.broker.fetch(self.fetch_batch, self.fetch_timeout))
        while not stop.is_set():
            try:
                messages = await pending
            except Exception as exc:
                log.warning("fetch failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                messages = []
            pending = asyncio.ensure_future(self.broker.fetch(self.fetch_batch, self.fetch_timeout))
            fresh = [m for m in messages if (m.seq or 0) > high]  # a redelivery was counted already
            if fresh:
                high = fresh[-1].seq or high
            events = [Event(m.seq or 0, m.id, m.data) for m in fresh]
            i = 0
            while i < len(events):
                n, rejected = await loop.run_in_executor(self._feeder, self.learner.feed, events[i:])
                await self._dead_letters(rejected)
                i += n
                self._last = fresh[i - 1]
                if self.learner.due:
                    await self._cut(self._last)
            minutes = self.spec.training.publish_minutes
            if minutes is not None and time.monotonic() - self._range_started >= 60 * minutes:
                await self._cut(self._last)
        pending.cancel()

    async def _dead_letters(self, rejected: list[Rejected]) -> None:
        if not rejected:
            return
        meta = {"model": self.spec.name, "consumer": self.consumer}
        letters = [dead_letter(r.event.id, r.event.data, r.reason, r.field, self.in_subject,
                               {**meta, "seq": r.event.seq}) for r in rejected]
        for attempt in range(3):
            errors = await self.broker.publish(self.dlq_subject, letters)
            failed = [letter for letter, err in zip(letters, errors, strict=True) if err is not None]
            if not failed:
                return
            letters = failed
            await asyncio.sleep(0.5 * (attempt + 1))
        raise StreamError(f"could not publish {len(letters)} dead letters to {self.dlq_subject}")

    async def _cut(self, last: Message | None) -> None:
        self._range_started = time.monotonic()
        if last is None:
            return
        if self._inflight is not None:  # one version in flight at a time; its failure stops the learner
            await self._inflight
            self._inflight = None
        cut = await asyncio.get_running_loop().run_in_executor(self._feeder, self.learner.cut)
        if cut is not None:
            self._inflight = asyncio.create_task(self._publish(cut, last))

    async def _publish(self, cut: Cut, last: Message) -> None:
        loop = asyncio.get_running_loop()
        for attempt in range(3):
            try:
                version = await loop.run_in_executor(self._publisher, self._publish_sync, cut, self.parent_version)
                break
            except Exception as exc:
                if attempt == 2:
                    raise
                log.warning("publishing the version of %d..%d failed (%s); retrying", cut.first_seq,
                            cut.last_seq, exc)
                await asyncio.sleep(1.0 + attempt)
        await self.broker.ack([last])  # AckPolicy.ALL: the whole range
        self.parent_version = version
        self.stats.versions.append(version)
        self.stats.learnt += cut.learnt
        self.stats.held_out += cut.held_out
        self.stats.dead_lettered += cut.dead_lettered
        shown = ", ".join(f"{k} {v:.4g}" for k, v in cut.metrics.items())
        log.info("published %s v%d: sequences %d..%d, %d learnt, %d held out, %d dead-lettered; held out: %s",
                 self.spec.name, version, cut.first_seq, cut.last_seq, cut.learnt, cut.held_out,
                 cut.dead_lettered, shown)

    def _publish_sync(self, cut: Cut, parent: int | None) -> int:
        assert self._origin is not None
        lineage = cut_lineage(self.spec, cut, self._origin, parent, self._environment, self._git)
        with tempfile.TemporaryDirectory(prefix="modelyard-learn-") as tmp:
            write_cut_bundle(Path(tmp) / "bundle", self.spec, cut, lineage)
            return self.registry.publish(
                Path(tmp) / "bundle", name=self.spec.name, alias=self.alias,
                reason=f"learnt online from {self.in_subject} sequences {cut.first_seq}..{cut.last_seq}: "
                       f"{cut.learnt} learnt, {cut.held_out} held out, {cut.dead_lettered} dead-lettered")


async def replay_range(url: str, lineage: StreamLineage) -> list[Event]:
    """The events of a version's recorded range, read back from JetStream."""
    broker = JetStreamBroker(url, lineage.subject, durable=lineage.consumer, create_streams=False)
    try:
        await broker.connect_reader()
        if broker.stream != lineage.stream:
            raise StreamError(f"{lineage.subject} is now captured by stream {broker.stream}, not "
                              f"{lineage.stream}: the recorded sequences would mean other events")
        messages = await broker.read_range(lineage.first_seq, lineage.last_seq)
    finally:
        await broker.close()
    return [Event(m.seq or 0, m.id, m.data) for m in messages]


def replay(url: str, lineage: StreamLineage) -> list[Event]:
    """``replay_range`` for synchronous callers (``modelyard reproduce``)."""
    return asyncio.run(replay_range(url, lineage))
