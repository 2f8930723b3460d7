"""`OneWriteTransport`: a response's writes leave as one, nothing held outlives the loop's turn or a close."""

from __future__ import annotations

import asyncio
from typing import Any

from modelyard.serve.wire import OneWriteTransport


class Recorder:
    """The socket transport's side: what reached it, in order, and as how many calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, data: Any) -> None:
        self.calls.append(("writelines", [bytes(d) for d in data]))

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", None))

    def write_eof(self) -> None:
        self.calls.append(("write_eof", None))

    def is_closing(self) -> bool:
        return self.closing

    def set_protocol(self, protocol: Any) -> None:
        self.calls.append(("set_protocol", protocol))

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5)}.get(name, default)

    def sent(self) -> bytes:
        out = b""
        for kind, data in self.calls:
            if kind == "write":
                out += data
            elif kind == "writelines":
                out += b"".join(data)
        return out


def run(body: Any) -> Recorder:
    async def main() -> Recorder:
        rec = Recorder()
        await body(OneWriteTransport(rec, asyncio.get_running_loop()), rec)  # type: ignore[arg-type]
        return rec

    return asyncio.run(main())


def test_head_and_body_leave_in_one_write() -> None:
    async def body(t: OneWriteTransport, rec: Recorder) -> None:
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        assert rec.calls == []  # held: the body comes next
        t.write(b"{}")
        assert rec.calls == [("write", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")]
        await asyncio.sleep(0)  # the safety-net flush finds nothing held
        assert len(rec.calls) == 1

    run(body)


def test_a_write_with_nothing_after_it_leaves_when_the_loop_turns() -> None:
    async def body(t: OneWriteTransport, rec: Recorder) -> None:
        t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await asyncio.sleep(0)
        assert rec.calls == [("write", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")]
        t.write(b"5\r\nhello\r\n")  # a streamed chunk on its own: held for one turn only
        await asyncio.sleep(0)
        assert rec.sent().endswith(b"5\r\nhello\r\n")

    run(body)


def test_order_is_kept_across_many_writes() -> None:
    async def body(t: OneWriteTransport, rec: Recorder) -> None:
        parts = [b"%d," % i for i in range(11)]
        for p in parts:
            t.write(p)
        await asyncio.sleep(0)
        assert rec.sent() == b"".join(parts)
        assert sum(kind == "write" for kind, _ in rec.calls) == 6  # pairs, then the odd one at the turn

    run(body)


def test_close_and_eof_and_a_new_protocol_send_what_is_held_first() -> None:
    async def body(t: OneWriteTransport, rec: Recorder) -> None:
        t.write(b"a")
        t.write_eof()
        t.write(b"b")
        t.set_protocol("ws")  # type: ignore[arg-type]
        t.write(b"c")
        t.close()
        assert rec.calls == [("write", b"a"), ("write_eof", None), ("write", b"b"), ("set_protocol", "ws"),
                             ("write", b"c"), ("close", None)]
        assert t.is_closing()
        await asyncio.sleep(0)
        assert len(rec.calls) == 6  # the scheduled flushes find nothing left

    run(body)


def test_abort_drops_what_is_held() -> None:
    async def body(t: OneWriteTransport, rec: Recorder) -> None:
        t.write(b"half")
        t.abort()
        await asyncio.sleep(0)
        assert rec.calls == [("abort", None)]

    run(body)


def test_a_large_body_is_gathered_not_copied_and_the_buffer_counts_what_is_held() -> None:
    async def body(t: OneWriteTransport, rec: Recorder) -> None:
        head, big = b"HTTP/1.1 200 OK\r\n\r\n", b"x" * 100_000
        t.write(head)
        assert t.get_write_buffer_size() == 7 + len(head)
        t.write(memoryview(big))
        assert rec.calls == [("writelines", [head, big])]
        assert t.get_write_buffer_size() == 7
        t.writelines([b"p", b"q"])
        t.write(b"")  # an empty write after a held one still sends it with nothing added
        assert rec.calls[-1] == ("write", b"pq")
        t.write(b"")  # and with nothing held it schedules nothing
        await asyncio.sleep(0)
        assert rec.sent() == head + big + b"pq"
        assert t.get_extra_info("peername") == ("127.0.0.1", 5)

    run(body)


def test_what_is_held_when_the_peer_goes_is_dropped_not_written_to_a_closed_transport() -> None:
    async def body(t: OneWriteTransport, rec: Recorder) -> None:
        t.write(b"5\r\nhello\r\n")
        rec.closing = True  # connection_lost: the socket is gone before the loop turns
        await asyncio.sleep(0)
        assert rec.calls == []

    run(body)
