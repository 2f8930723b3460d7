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

Throughput: a fetch brings up to ``--fetch-batch`` events (5000 by default), learnt in one ``feed`` (one
decode, one validation, one preprocessing transform) while the next batch is on its way: pulled by a child
interpreter (``nats.ChildFetcher``); if it dies the learner stops with ``FetcherError`` and the next one
resumes from the registry's position, as after a SIGKILL. A cut version's
bundle (profile, ONNX copy and its parity check: the costly part) is written by a child interpreter
(``BundleWriter``), so that learning goes on in this one while it is written; this process then publishes it.
Versions are published one after the other, in the order they were cut (each is the next one's parent);
learning goes on meanwhile, up to ``MAX_QUEUED`` versions ahead of the registry.

Bad events are dead-lettered (the stream consumer's format, ``consumer.dead_letter``) before the version
whose range holds them is published; a replayed range dead-letters them again under the same
``Nats-Msg-Id`` (deduplicated within the dead-letter stream's duplicate window). SIGTERM cuts what was learnt
since the last cut (when a version can be cut), publishes every version cut and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nats.js.api import AckPolicy

from modelyard._pipes import frame, read_frame
from modelyard.bundle import Bundle, Lineage
from modelyard.errors import ModelyardError, SpecError, StreamError
from modelyard.pipeline import TrainSpec, parse_spec
from modelyard.pipeline.lineage import StreamLineage, environment, git_state, stream_lineage
from modelyard.pipeline.online import Cut, Event, OnlineLearner, Origin, Rejected, cut_lineage
from modelyard.registry import Registry, VersionRecord
from modelyard.stream.base import Message, safe_name
from modelyard.stream.consumer import dead_letter
from modelyard.stream.nats import FetcherError, JetStreamBroker

log = logging.getLogger("modelyard.learn")
MAX_QUEUED = 3  # versions cut and not yet published before the learner waits for the registry


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


WRITER = """
import os, pickle, sys
protocol_in, protocol_out = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)  # whatever a library prints goes to stderr, never into the answers
from modelyard._pipes import frame, read_frame
from modelyard.pipeline.online import write_cut_bundle
while (data := read_frame(protocol_in)) is not None:
    job = pickle.loads(data)
    try:
        write_cut_bundle(*job)
        answer = ("done", None)
    except Exception as exc:
        try:
            answer = ("failed", pickle.loads(pickle.dumps(exc)))
        except Exception:
            answer = ("failed", RuntimeError(f"{type(exc).__name__}: {exc}"))
    data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    protocol_out.write(frame(data))
    protocol_out.flush()
"""
"""The bundle writer's program (``python -c WRITER``): jobs (``write_cut_bundle``'s arguments) come pickled on
stdin, each prefixed with its length; one answer per job goes back the same way. It exits at the end of
its stdin, which is also what happens when the learner is killed."""


class BundleWriter:
    """A child interpreter that writes cut bundles (``write_cut_bundle``), started once and reused.

    Why a process: a version's bundle costs a few hundred milliseconds of Python (profile, ONNX conversion
    and parity check), as much as learning ten thousand events; written in a thread, it would hold the
    interpreter lock that long. Why not ``multiprocessing``: its spawn re-runs the caller's ``__main__`` (the
    CLI itself), as pipeline/budget.py explains. The model's bytes travel as the learner dumped them
    (``Cut.model_bytes``), so what the child writes is what a replay rebuilds. A child that died is
    started again for the next job.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = subprocess.Popen([sys.executable, "-c", WRITER], env=env, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE)

    def write(self, directory: Path, spec: TrainSpec, cut: Cut, lineage: Lineage) -> None:
        """Write the bundle of ``cut`` into ``directory`` (blocking: call it from a thread)."""
        job = pickle.dumps((directory, spec, cut, lineage), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._start()
            proc = self._proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(frame(job))
                proc.stdin.flush()
                data = read_frame(proc.stdout)
            except OSError:
                data = None
            if not data:
                code = proc.poll()
                self._stop()
                raise ModelyardError(f"the bundle writer process ended while writing {spec.name}'s version of "
                                     f"sequences {cut.first_seq}..{cut.last_seq} (exit code {code}); its "
                                     "error is above in the learner's stderr")
        status, error = pickle.loads(data)
        if status == "failed":
            raise error

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        with self._lock:
            self._stop()


class StreamLearner:
    """One learner process's loop over a JetStream subject; see the module docstring for the guarantees."""

    def __init__(self, registry: Registry, spec: TrainSpec, *, broker_url: str, in_subject: str,
                 consumer: str | None = None, dlq_subject: str | None = None, alias: str | None = None,
                 fetch_batch: int = 5000, fetch_timeout: float = 1.0, from_seq: int = 1) -> None:
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
                                      ack_wait=max(600.0, 2 * 60 * (minutes or 0)), fetch_in_child=True)
        self.stats = LearnStats()
        self._publishing: deque[asyncio.Task[None]] = deque()  # versions cut, published in order
        self._publisher = ThreadPoolExecutor(1, thread_name_prefix="learn-publish")
        self._writer = BundleWriter()
        self._feeder = ThreadPoolExecutor(1, thread_name_prefix="learn-feed")
        self._environment = environment(self.spec.model.estimator)
        self._git = git_state(self.spec.base_dir)
        self._range_started = time.monotonic()
        self._origin: Origin | None = None

    async def run(self, stop: asyncio.Event) -> LearnStats:
        await self.broker.connect()
        self._writer.start()  # its imports run while the first range is learnt
        try:
            assert self.broker.stream is not None
            self._origin = Origin(self.url, self.broker.stream, self.in_subject, self.consumer, self.dlq_subject)
            await self.broker.ensure_subject(self.dlq_subject)
            log.info("learning %s from %s (stream %s) from sequence %d, on top of %s", self.spec.name,
                     self.in_subject, self.broker.stream, self.start_seq,
                     f"v{self.parent_version}" if self.parent_version else "nothing (a new chain)")
            await self._loop(stop)
            await self._cut(self._last)  # stopped: cut what was learnt since, publish every version cut
            while self._publishing:
                await self._publishing.popleft()
        finally:
            # stopped by an error: the versions already cut are still published (in order) before this
            # returns, so that no learner started after it can learn their ranges again
            for failed in await asyncio.gather(*self._publishing, return_exceptions=True):
                if isinstance(failed, BaseException):
                    log.error("a version cut before the learner stopped was not published: %s", failed)
            self._publishing.clear()
            await self.broker.close()
            self._publisher.shutdown(wait=False)
            self._feeder.shutdown(wait=False)
            await asyncio.to_thread(self._writer.close)
        return self.stats

    async def _loop(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        high = self.start_seq - 1
        self._last: Message | None = None
        pending = asyncio.ensure_future(self.broker.fetch(self.fetch_batch, self.fetch_timeout))
        while not stop.is_set():
            try:
                messages = await pending
            except FetcherError:
                raise  # events it had pulled may be missing: start over from the registry's position
            except Exception as exc:
                log.warning("fetch failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                messages = []
            pending = asyncio.ensure_future(self.broker.fetch(self.fetch_batch, self.fetch_timeout))
            fresh = messages  # in stream order; a redelivery was counted already
            if fresh and (fresh[0].seq or 0) <= high:
                fresh = [m for m in messages if (m.seq or 0) > high]
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
        cut = await asyncio.get_running_loop().run_in_executor(self._feeder, self.learner.cut)
        if cut is None:
            return
        after = self._publishing[-1] if self._publishing else None
        self._publishing.append(asyncio.create_task(self._publish(cut, last, after)))
        # learning goes on while versions are written and published, one after the other; a failed one
        # stops the learner, and it waits when it is MAX_QUEUED versions ahead of the registry
        while self._publishing and (self._publishing[0].done() or len(self._publishing) > MAX_QUEUED):
            await self._publishing.popleft()

    async def _publish(self, cut: Cut, last: Message, after: asyncio.Task[None] | None) -> None:
        loop = asyncio.get_running_loop()
        if after is not None:
            await after  # its version is this one's parent
        started = time.perf_counter()
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
        log.info("published %s v%d: sequences %d..%d, %d learnt, %d held out, %d dead-lettered; held out: %s "
                 "(written and published in %.2f s)", self.spec.name, version, cut.first_seq, cut.last_seq,
                 cut.learnt, cut.held_out, cut.dead_lettered, shown, time.perf_counter() - started)

    def _publish_sync(self, cut: Cut, parent: int | None) -> int:
        assert self._origin is not None
        lineage = cut_lineage(self.spec, cut, self._origin, parent, self._environment, self._git)
        with tempfile.TemporaryDirectory(prefix="modelyard-learn-") as tmp:
            self._writer.write(Path(tmp) / "bundle", self.spec, cut, lineage)
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
