"""NATS JetStream: a durable pull consumer on the input, answers published with ``Nats-Msg-Id``.

Several processes with the same durable name share the work. An answer's ``Nats-Msg-Id`` is the input
message's id (its own ``Nats-Msg-Id`` if it had one, else ``<stream>:<sequence>``), so the output stream
drops the second answer to a redelivered message (within its duplicate window, two minutes by default).

With ``start_seq`` the durable consumer is recreated to deliver from that stream sequence on: the online
learner (``stream/learner.py``) keeps its position in the registry, with the version it published, and
starts its consumer there. ``read_range`` replays an exact range of sequences (``modelyard reproduce``).

``fetch`` speaks the pull protocol itself: one request (``$JS.API.CONSUMER.MSG.NEXT``) for the whole batch to
a subscription that only appends what arrives to a buffer. nats-py's ``PullSubscription.fetch`` starts an
asyncio task per message, which costs more than everything a learner does with the message. A request
first asks for what is there now (``no_wait``); when nothing is, a second one waits up to the timeout and
``fetch`` returns with the first messages it brings. At most one request is open at a time; what arrives
after a ``fetch`` gave up waiting stays in the buffer for the next one, so no delivered message is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import nats
import nats.aio.client
import nats.aio.subscription
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from modelyard._gc import settle_heap
from modelyard._pipes import frame, read_frame
from modelyard.errors import StreamError
from modelyard.stream.base import Broker, Message, OutMessage, loop_factory, safe_name

PULL_GRACE = 1.0  # seconds past a pull request's expiry after which it is taken as over without its status


class FetcherError(StreamError):
    """The fetching child is gone: what it had pulled and not handed over may be missing from the stream
    order, so the caller must start over from its own committed position (the learner stops)."""


FETCHER = """
import asyncio, os, pickle, sys
out = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)  # whatever a library prints goes to stderr, never into the batches
from modelyard._gc import settle_heap
from modelyard._pipes import frame
from modelyard.stream.base import loop_factory
from modelyard.stream.nats import JetStreamBroker
url, subject, durable, batch, timeout = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])

def send(data):
    out.write(frame(data))
    out.flush()

async def main():
    parent = os.getppid()
    broker = JetStreamBroker(url, subject, durable=durable, create_streams=False)
    await broker.join()
    settle_heap(batches=True)
    loop = asyncio.get_running_loop()
    try:
        while os.getppid() == parent:  # never pull for a learner that is gone (its successor may be pulling)
            data = pickle.dumps(await broker.fetch_handed(batch, timeout), protocol=5)
            await loop.run_in_executor(None, send, data)
    except (BrokenPipeError, ValueError):  # the reading process is gone
        pass

with asyncio.Runner(loop_factory=loop_factory()) as runner:
    runner.run(main())
"""
"""The fetching child's program (``python -c FETCHER URL SUBJECT DURABLE BATCH TIMEOUT``): it pulls from the
durable consumer and writes each batch to stdout (pickled, prefixed with its length; an empty one when
idle), waiting for the reader to take it: the pipe is the prefetch bound. It exits when the reader is gone
(its pipe closed, or its parent process dead: checked before every pull, so that a killed learner's child
does not take events from the consumer its successor recreated under the same name)."""


class ChildFetcher:
    """Pull in a child interpreter (``FETCHER``), hand over batches through a pipe.

    Why: receiving a message costs nats-py as much Python as learning or predicting it (protocol parsing,
    headers, a ``Msg`` object), and one interpreter runs one thread of Python at a time; in a child it runs
    beside the learning (the online learner) or the predicting (the stream consumer). The messages come
    back with their ack subject as ``Message.raw`` (acked by the parent's own connection). If the child
    dies, what it had pulled is delivered again only after ``ack_wait``, out of order: ``FetcherError``
    tells the caller. The learner, which keeps its position itself, starts over from it; the stream
    consumer, for which order does not matter, fetches again (the broker starts a new child).
    """

    def __init__(self, url: str, subject: str, durable: str, batch: int, timeout: float) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = subprocess.Popen([sys.executable, "-c", FETCHER, url, subject, durable, str(batch),
                                       str(timeout)], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def read(self) -> list[Message]:
        """The next batch (blocking: call it from a thread)."""
        out = self._proc.stdout
        assert out is not None
        data = read_frame(out)
        if data is None:
            raise FetcherError(f"the fetching process ended (exit code {self._proc.poll()}); its error is in "
                               "stderr above")
        return [Message(id=msg_id, data=body, raw=reply, delivery=delivered, seq=seq)
                for seq, msg_id, body, reply, delivered in pickle.loads(data)]

    def close(self) -> None:
        """Stop the child (what it pulled and did not hand over is delivered again from the next position):
        first, so that a ``read`` waiting in another thread gets the end of the pipe."""
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


PUBLISHER = """
import os, sys
out = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)  # whatever a library prints goes to stderr, never into the results
from modelyard.stream.nats import publish_in_child
publish_in_child(sys.argv[1], float(sys.argv[2]), sys.stdin.buffer, out)
"""
"""The publishing child's program (``python -c PUBLISHER URL TIMEOUT``): jobs come pickled on stdin, each
prefixed with its length: ``(job id, [(subject, dedup id, data, headers, ack subject), ...], nak delay)``.
Each item is published; once JetStream confirmed it, its input's ack subject is acked (nak'ed with the
delay when it was refused or not confirmed within TIMEOUT); then ``(job id, [error text or None, ...])``
goes back on stdout the same way. At the end of stdin (the consumer closed it, or died) it settles the
jobs it has and exits."""


def _read_pickle(stream: Any) -> Any:
    """The next frame of ``stream`` unpickled, or None at its end."""
    data = read_frame(stream)
    return None if data is None else pickle.loads(data)


def publish_in_child(url: str, timeout: float, jobs: Any, results: Any) -> None:
    """``PUBLISHER``'s loop."""
    import orjson

    async def main() -> None:
        nc = await nats.connect(url, name="modelyard-stream-publisher", connect_timeout=5,
                                max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        settle_heap(batches=True)
        prefix = nc.new_inbox()
        waiting: dict[str, tuple[list[str | None], int, asyncio.Event, list[int]]] = {}

        async def on_confirmation(msg: Msg) -> None:
            entry = waiting.pop(msg.subject, None)
            if entry is None:
                return
            errors, i, done, left = entry
            status = (msg.headers or {}).get("Status")
            if status is not None:  # 503: no stream captures the subject
                errors[i] = f"no JetStream stream answered (status {status})"
            elif b'"error"' in msg.data or b'"seq"' not in msg.data:  # a confirmation ({"stream": ..,
                # "seq": ..}) is not parsed: only what may be an error is
                answer = orjson.loads(msg.data)
                errors[i] = None if "error" not in answer else str(answer["error"].get("description", answer))
            else:
                errors[i] = None
            left[0] -= 1
            if left[0] == 0:
                done.set()

        await nc.subscribe(prefix + ".*", cb=on_confirmation)
        loop = asyncio.get_running_loop()
        writer = ThreadPoolExecutor(1, thread_name_prefix="publisher-results")  # in order, off the loop
        settling: set[asyncio.Task[None]] = set()
        count = 0

        async def settle(job_id: int, items: list[tuple[str, str, bytes, dict[str, str], str]],
                         errors: list[str | None], done: asyncio.Event, replies: list[str], nak: bytes) -> None:
            try:
                await asyncio.wait_for(done.wait(), timeout)
            except TimeoutError:
                for reply in replies:
                    if (entry := waiting.pop(reply, None)) is not None:
                        errors[entry[1]] = f"no confirmation within {timeout}s"
            for (_, _, _, _, ack), error in zip(items, errors, strict=True):
                await nc.publish(ack, Msg.Ack.Ack if error is None else nak)
            await loop.run_in_executor(writer, _write_result, results, job_id, errors)

        while (job := await loop.run_in_executor(None, _read_pickle, jobs)) is not None:
            job_id, items, nak_delay = job
            nak = Msg.Ack.Nak + b" " + json.dumps({"delay": int(nak_delay * 1e9)}).encode()
            errors: list[str | None] = ["unconfirmed"] * len(items)
            done, left, replies = asyncio.Event(), [len(items)], []
            if not items:
                done.set()
            for i, (subject, out_id, data, headers, _) in enumerate(items):
                count += 1
                reply = f"{prefix}.{count}"
                waiting[reply] = (errors, i, done, left)
                replies.append(reply)
                await nc.publish(subject, data, reply=reply, headers={"Nats-Msg-Id": out_id, **headers})
            task = asyncio.create_task(settle(job_id, items, errors, done, replies, nak))
            settling.add(task)
            task.add_done_callback(settling.discard)
        await asyncio.gather(*settling)
        await nc.flush(timeout=5)
        await nc.close()
        writer.shutdown()

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())


def _write_result(results: Any, job_id: int, errors: list[str | None]) -> None:
    try:
        results.write(frame(pickle.dumps((job_id, errors), protocol=5)))
        results.flush()
    except (BrokenPipeError, ValueError):  # the consumer is gone: its inputs are acked or nak'ed anyway
        pass


class ChildPublisher:
    """Answer in a child interpreter (``PUBLISHER``): publish, wait for JetStream's confirmations, ack.

    Why: per answer, nats-py spends more Python than predicting it costs (building the publish, parsing the
    confirmation, resolving its future, publishing the ack); in a child it runs beside the predicting. The
    consumer writes each batch's records ahead before it hands the batch over, so what the child acks is
    logged. If the child dies, the inputs it had not acked are redelivered after ``ack_wait`` (their
    answers are deduplicated): ``submit``'s futures fail with ``StreamError`` and the next one starts a
    new child.
    """

    def __init__(self, url: str, timeout: float) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, url, str(timeout)], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="stream-publisher")  # jobs in order
        self._waiting: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[list[str | None]]]] = {}
        self._lock = threading.Lock()
        self._jobs = 0
        self._reader = threading.Thread(target=self._read, name="stream-publisher-results", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None and self._reader.is_alive()

    async def submit(self, items: list[tuple[str, str, bytes, dict[str, str], str]],
                     nak_delay: float) -> list[str | None]:
        """Hand ``items`` (subject, dedup id, data, headers, ack subject) over; their errors once settled."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[str | None]] = loop.create_future()
        with self._lock:
            self._jobs += 1
            job_id = self._jobs
            self._waiting[job_id] = (loop, future)
        data = frame(pickle.dumps((job_id, items, nak_delay), protocol=5))
        await loop.run_in_executor(self._sender, self._send, data)
        return await future

    def _send(self, data: bytes) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(data)
            stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the reader fails every waiting job

    def _read(self) -> None:
        while (result := _read_pickle(self._proc.stdout)) is not None:
            job_id, errors = result
            with self._lock:
                loop, future = self._waiting.pop(job_id)
            loop.call_soon_threadsafe(_set_result, future, errors)
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        error = StreamError(f"the publishing process ended (exit code {self._proc.poll()}); its inputs that were "
                            "not acked are redelivered after ack_wait")
        for loop, future in waiting.values():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_set_exception, future, error)

    def close(self, timeout: float = 30.0) -> None:
        """Let the child settle what it has and exit (blocking: call it from a thread)."""
        self._sender.shutdown(wait=True)
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def _set_result(future: asyncio.Future[list[str | None]], errors: list[str | None]) -> None:
    if not future.done():
        future.set_result(errors)


def _set_exception(future: asyncio.Future[list[str | None]], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class JetStreamBroker(Broker):
    """``fetch_in_child``: pull in a ``ChildFetcher`` (the online learner, the stream consumer), with the first
    ``fetch``'s batch size and timeout. ``publish_in_child``: ``answer`` hands its groups to a
    ``ChildPublisher`` (the stream consumer)."""

    def __init__(self, url: str, in_subject: str, *, durable: str, ack_wait: float = 30.0,
                 publish_timeout: float = 10.0, create_streams: bool = True, start_seq: int | None = None,
                 ack_policy: AckPolicy = AckPolicy.EXPLICIT, max_ack_pending: int | None = None,
                 fetch_in_child: bool = False, publish_in_child: bool = False) -> None:
        self.url = url
        self.fetch_in_child = fetch_in_child
        self.publish_in_child = publish_in_child
        self._child: ChildFetcher | None = None
        self._publisher: ChildPublisher | None = None
        self.in_subject = in_subject
        self.durable = safe_name(durable)
        self.ack_wait = ack_wait
        self.publish_timeout = publish_timeout
        self.create_streams = create_streams
        self.start_seq = start_seq
        self.ack_policy = ack_policy
        self.max_ack_pending = max_ack_pending
        self.stream: str | None = None  # the stream capturing in_subject, once connected
        self.nc: nats.aio.client.Client | None = None
        self.js: nats.js.JetStreamContext | None = None
        self._pulled: deque[Msg] = deque()  # delivered to the pull inbox, not fetched yet
        self._arrived = asyncio.Event()  # set whenever a message or a pull request's end arrives
        self._pull_sub: nats.aio.subscription.Subscription | None = None
        self._pull_subject = ""  # $JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>
        self._inbox = ""
        self._owed = 0  # messages the open pull request may still deliver (0: none is open)
        self._open_until = 0.0  # monotonic time after which the open request is over in any case

    async def connect(self) -> None:
        stream = await self.connect_reader()
        assert self.js is not None
        config = ConsumerConfig(durable_name=self.durable, ack_policy=self.ack_policy,
                                deliver_policy=DeliverPolicy.ALL, ack_wait=self.ack_wait, max_deliver=-1,
                                filter_subject=self.in_subject, max_ack_pending=self.max_ack_pending)
        if self.start_seq is not None:  # the position is the caller's: start the consumer over from it
            config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, self.start_seq
            try:
                await self.js.delete_consumer(stream, self.durable)
            except nats.js.errors.NotFoundError:
                pass
        try:
            await self.js.consumer_info(stream, self.durable)  # joined as it is (others may share it)
        except nats.js.errors.NotFoundError:
            await self.js.add_consumer(stream, config)
        await self._join(stream)
        if self.publish_in_child and self._publisher is None:  # its start-up (imports) before the first batch
            self._publisher = ChildPublisher(self.url, self.publish_timeout)

    async def join(self) -> None:
        """Connect and pull from the durable consumer as it is (``FETCHER``: it must exist already)."""
        await self._join(await self.connect_reader())

    async def _join(self, stream: str) -> None:
        assert self.nc is not None
        self._pull_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{self.durable}"
        self._inbox = self.nc.new_inbox()
        self._pull_sub = await self.nc.subscribe(self._inbox, cb=self._on_pulled)

    async def connect_reader(self) -> str:
        """Connect and find the stream capturing ``in_subject`` (no consumer: ``read_range`` needs none)."""
        try:
            self.nc = await nats.connect(self.url, name=f"modelyard-stream-{self.durable}", connect_timeout=5,
                                         max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        except Exception as exc:
            raise StreamError(f"cannot connect to NATS at {self.url}: {exc!r}") from exc
        self.js = self.nc.jetstream(timeout=self.publish_timeout)
        self.stream = await self._stream_for(self.in_subject)
        return self.stream

    async def _stream_for(self, subject: str) -> str:
        assert self.js is not None
        try:
            return await self.js.find_stream_name_by_subject(subject)
        except nats.js.errors.NotFoundError:
            if not self.create_streams:
                raise StreamError(f"no JetStream stream captures subject '{subject}'") from None
        name = "MODELYARD_" + safe_name(subject).upper()
        await self.js.add_stream(name=name, subjects=[subject], duplicate_window=120.0)
        return name

    async def ensure_subject(self, subject: str) -> None:
        await self._stream_for(subject)

    @property
    def fetcher_pid(self) -> int | None:
        """The fetching child's process id (``fetch_in_child``, once fetching), for operators and tests."""
        return self._child.pid if self._child is not None else None

    async def fetch(self, max_messages: int, timeout: float) -> list[Message]:
        assert self.nc is not None and self._pull_sub is not None
        if self.fetch_in_child:
            if self._child is None:
                self._child = ChildFetcher(self.url, self.in_subject, self.durable, max_messages, timeout)
            child = self._child
            try:
                return await asyncio.to_thread(child.read)
            except FetcherError:  # the next fetch starts a new child
                if self._child is child:
                    self._child = None
                await asyncio.to_thread(child.close)
                raise
        return [self._message(m) for m in await self._pull(max_messages, timeout)]

    async def fetch_handed(self, max_messages: int, timeout: float) -> list[tuple[int, str, bytes, str, int]]:
        """``fetch`` as ``FETCHER`` hands it over: (sequence, id, data, ack subject, delivery) of each."""
        out = []
        for m in await self._pull(max_messages, timeout):
            seq, delivered = _ack_numbers(m)
            out.append((seq, (m.headers or {}).get("Nats-Msg-Id") or f"{self.stream}:{seq}", m.data, m.reply,
                        delivered))
        return out

    async def _pull(self, max_messages: int, timeout: float) -> list[Msg]:
        deadline = time.monotonic() + timeout
        if not self._pulled and not self._request_open():  # what is there now, at once
            await self._request(max_messages, no_wait=True)
            await self._wait(lambda: len(self._pulled) >= max_messages or not self._request_open(), deadline)
        if not self._pulled and not self._request_open() and deadline - time.monotonic() > 0.01:
            await self._request(max_messages, expires=deadline - time.monotonic())  # wait for the next ones
        if not self._pulled:
            await self._wait(lambda: bool(self._pulled) or not self._request_open(), deadline)
            await asyncio.sleep(0)  # let the messages that came with the first one in
        return [self._pulled.popleft() for _ in range(min(max_messages, len(self._pulled)))]

    async def _on_pulled(self, msg: Msg) -> None:
        """The pull inbox's callback: a stream message (it has an ack subject) or the end of a request (a
        status: 404 no messages, 408 expired, 409 ...; 100 is a heartbeat, never asked for)."""
        if msg.reply:
            self._pulled.append(msg)
            self._owed -= 1
        elif (msg.headers or {}).get("Status") != "100":
            self._owed = 0
        self._arrived.set()

    def _request_open(self) -> bool:
        if self._owed > 0 and time.monotonic() > self._open_until:
            self._owed = 0  # its end was lost (a reconnect): what it still brings lands in the buffer anyway
        return self._owed > 0

    async def _request(self, batch: int, *, no_wait: bool = False, expires: float | None = None) -> None:
        assert self.nc is not None
        body: dict[str, Any] = {"batch": batch}
        if no_wait:
            body["no_wait"] = True
        if expires is not None:
            body["expires"] = int(expires * 1e9)
        self._owed = batch
        self._open_until = time.monotonic() + (expires if expires is not None else self.publish_timeout) + PULL_GRACE
        await self.nc.publish(self._pull_subject, json.dumps(body).encode(), reply=self._inbox)

    async def _wait(self, done: Callable[[], bool], deadline: float) -> None:
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return

    def _message(self, m: Msg) -> Message:
        seq, delivered = _ack_numbers(m)
        msg_id = (m.headers or {}).get("Nats-Msg-Id") or f"{self.stream}:{seq}"
        return Message(id=msg_id, data=m.data, raw=m, delivery=delivered, seq=seq)

    async def read_range(self, first_seq: int, last_seq: int, *, batch: int = 1000,
                         timeout: float = 5.0) -> list[Message]:
        """Every message of ``in_subject`` with a stream sequence in ``first_seq``..``last_seq``, in order, from
        an ephemeral consumer (the durable one is not touched). ``StreamError`` when the stream no longer
        holds the end of the range."""
        assert self.js is not None and self.stream is not None
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                opt_start_seq=first_seq, filter_subject=self.in_subject, inactive_threshold=60.0)
        sub = await self.js.pull_subscribe(self.in_subject, stream=self.stream, config=config)
        out: list[Message] = []
        try:
            while not out or (out[-1].seq or 0) < last_seq:
                try:
                    msgs = await sub.fetch(batch=batch, timeout=timeout)
                except (TimeoutError, nats.errors.TimeoutError):
                    raise StreamError(f"stream {self.stream} holds {self.in_subject} only up to sequence "
                                      f"{out[-1].seq if out else first_seq - 1}; the range ends at "
                                      f"{last_seq}") from None
                for m in msgs:
                    seq = m.metadata.sequence.stream
                    if seq <= last_seq:
                        msg_id = (m.headers or {}).get("Nats-Msg-Id") or f"{self.stream}:{seq}"
                        out.append(Message(id=msg_id, data=m.data, seq=seq))
                    else:
                        return out
        finally:
            await sub.unsubscribe()
        return out

    async def publish(self, subject: str, messages: Sequence[OutMessage]) -> list[BaseException | None]:
        return await (await self.send(subject, messages))

    async def send(self, subject: str, messages: Sequence[OutMessage]) -> Awaitable[list[BaseException | None]]:
        """Every message goes out now (``publish_async``, bounded by the client's window of pending acks);
        the confirmations are awaited together, under one timeout, by what this returns."""
        assert self.js is not None
        futures: list[asyncio.Future[Any]] = []
        for m in messages:
            futures.append(await self.js.publish_async(subject, m.data,
                                                       headers={"Nats-Msg-Id": m.id, **m.headers}))
        return self._confirmed(futures)

    async def _confirmed(self, futures: list[asyncio.Future[Any]]) -> list[BaseException | None]:
        if futures:
            _, pending = await asyncio.wait(futures, timeout=self.publish_timeout)
            for f in pending:
                f.cancel()
        return [TimeoutError(f"no confirmation within {self.publish_timeout}s") if f.cancelled()
                else f.exception() for f in futures]

    async def answer(self, groups: Sequence[tuple[str, Sequence[OutMessage], Sequence[Message]]],
                     nak_delay: float = 1.0) -> Awaitable[list[list[BaseException | None]]]:
        if not self.publish_in_child:
            return await super().answer(groups, nak_delay)
        if self._publisher is None or not self._publisher.alive:
            self._publisher = ChildPublisher(self.url, self.publish_timeout)
        items = [(subject, out.id, out.data, out.headers, m.raw if isinstance(m.raw, str) else m.raw.reply)
                 for subject, outs, inputs in groups for out, m in zip(outs, inputs, strict=True)]
        settled = asyncio.ensure_future(self._publisher.submit(items, nak_delay))

        async def errors() -> list[list[BaseException | None]]:
            texts = iter(await settled)
            return [[None if (t := next(texts)) is None else StreamError(t) for _ in outs] for _, outs, _ in groups]

        return errors()

    async def ack(self, messages: Sequence[Message]) -> None:
        for m in messages:
            if isinstance(m.raw, str):  # fetched by a ``ChildFetcher``: its ack subject
                assert self.nc is not None
                await self.nc.publish(m.raw, Msg.Ack.Ack)
            else:
                await m.raw.ack()

    async def nak(self, messages: Sequence[Message], delay: float = 1.0) -> None:
        for m in messages:
            if isinstance(m.raw, str):  # fetched by a ``ChildFetcher``: its ack subject
                assert self.nc is not None
                delayed = b" " + json.dumps({"delay": int(delay * 1e9)}).encode() if delay else b""
                await self.nc.publish(m.raw, Msg.Ack.Nak + delayed)  # what ``Msg.nak`` sends
            else:
                await m.raw.nak(delay=delay)

    async def close(self) -> None:
        self._pulled.clear()  # delivered, never fetched: redelivered after ack_wait (or from a new position)
        if self._child is not None:
            await asyncio.to_thread(self._child.close)
            self._child = None
        if self._publisher is not None:  # it settles what it was given first
            await asyncio.to_thread(self._publisher.close)
            self._publisher = None
        if self.nc is not None and not self.nc.is_closed:
            try:
                await self.nc.flush(timeout=5)
            finally:
                await self.nc.close()


def _ack_numbers(m: Msg) -> tuple[int, int]:
    """(stream sequence, delivery count) of a JetStream message, read from its ack subject: ``$JS.ACK.<stream>.
    <consumer>.<delivered>.<stream seq>...`` (9 tokens) or the form with domain and account hash."""
    tokens = m.reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[4]) or 1
    if len(tokens) >= 11:
        return int(tokens[Msg.Ack.StreamSeq]), int(tokens[Msg.Ack.NumDelivered]) or 1
    md = m.metadata  # raises nats' own error for a subject of another shape
    return md.sequence.stream, md.num_delivered or 1
