"""Length-prefixed frames on a child process's pipes: the one wire format of our helper interpreters (the
fetching, publishing, bundle-writing and log-shipping children).

A frame is 8 bytes of big-endian length, then that many bytes (a pickle, for every child we have). The
child programs are ``python -c`` strings; they import these two functions like any module.
"""

from __future__ import annotations

from typing import IO

__all__ = ["frame", "read_frame"]


def frame(data: bytes) -> bytes:
    """``data`` with its length in front, ready to write."""
    return len(data).to_bytes(8, "big") + data


def read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame's bytes, or None at the end of ``stream`` (or a frame cut short, or an empty one)."""
    head = stream.read(8)
    data = stream.read(int.from_bytes(head, "big")) if len(head) == 8 else b""
    return data or None
