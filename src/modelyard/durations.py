"""The one grammar of durations: every ``--since``, ``--window``, ``--every``/``--interval`` and window setting.

A duration is a number of seconds (``30``, ``0.5``) or numbers each followed by a unit, largest first and
optionally spaced: ``90s``, ``15m``, ``1.5h``, ``2d``, ``2w``, ``1h30m``, ``1d 12h``. Units: ``s`` (``sec``),
``m`` (``min``), ``h``, ``d``, ``w``, in any case. ``--since`` also takes an ISO date/time
(``2024-05-01``, ``2024-05-01T12:00``, with or without a zone; UTC when it has none).

It lives beside ``config`` and ``errors`` at the bottom of the layering, so every layer may import it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from modelyard.errors import BadRequestError

__all__ = ["DURATION_PATTERN", "GRAMMAR", "UNITS", "format_duration", "parse_duration", "parse_since", "seconds"]

UNITS: dict[str, float] = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "min": 60, "s": 1, "sec": 1}
GRAMMAR = "a number of seconds, or numbers with units s, m, h, d, w (e.g. 90s, 15m, 2h, 7d, 2w, 1h30m)"
_N = r"[0-9]{1,4}(\.[0-9]{1,6})?"
DURATION_PATTERN = (rf"^({_N}|({_N}[wW])?({_N}[dD])?({_N}[hH])?({_N}([mM][iI][nN]|[mM]))?"
                    rf"({_N}([sS][eE][cC]|[sS]))?)$")
"""A JSON Schema ``pattern`` for the documents (OpenAPI): a strict subset of what ``parse_duration`` takes (no
spaces, at most four digits a part; with minLength 1, never empty), so that whatever matches parses and fits a
datetime."""
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|min|m|sec|s)(?![a-z])", re.IGNORECASE)
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
_ORDER = {"w": 0, "d": 1, "h": 2, "m": 3, "min": 3, "s": 4, "sec": 4}


def _parse(text: str) -> timedelta | None:
    value = text.strip()
    if _NUMBER.match(value):
        return timedelta(seconds=float(value))
    pos, total, last = 0, 0.0, -1
    for match in _PART.finditer(value):
        if value[pos:match.start()].strip():
            return None  # something between the parts that is not a part
        unit = match.group(2).lower()
        if _ORDER[unit] <= last:
            return None  # each unit once, largest first: "30m1h" and "1h1h" are typos, not durations
        last = _ORDER[unit]
        total += float(match.group(1)) * UNITS[unit]
        pos = match.end()
    if pos == 0 or value[pos:].strip():
        return None
    return timedelta(seconds=total)


def parse_duration(text: str | float | timedelta, *, what: str = "duration") -> timedelta:
    """``90s``, ``15m``, ``1h30m``, ``2w``, a number of seconds (or a timedelta, as it is) → a timedelta.

    ``what`` names the option or setting in the error, e.g. ``--window`` or ``MODELYARD_MONITOR_WINDOW``.
    """
    if isinstance(text, timedelta):
        return text
    if isinstance(text, bool):
        raise BadRequestError(f"{what} {text!r} is not a duration: expected {GRAMMAR}")
    if isinstance(text, int | float):
        if text < 0:
            raise BadRequestError(f"{what} {text!r} is not a duration: it is negative; expected {GRAMMAR}")
        return timedelta(seconds=float(text))
    parsed = _parse(str(text))
    if parsed is None:
        raise BadRequestError(f"{what} {text!r} is not a duration: expected {GRAMMAR}",
                              field=what.lstrip("-") if what.startswith("--") else None)
    return parsed


def seconds(text: str | float | timedelta, *, what: str = "duration") -> float:
    """The duration in seconds, as a float (intervals, TTLs)."""
    return parse_duration(text, what=what).total_seconds()


def parse_since(text: str, *, now: datetime | None = None, what: str = "--since") -> datetime:
    """A duration ago (``15m``, ``2h``, ``7d``, ``2w``, ``1h30m``) or an ISO date/time → an aware datetime."""
    now = now or datetime.now(UTC)
    ago = _parse(text)
    if ago is not None:
        return now - ago
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadRequestError(
            f"{what} {text!r} is neither a duration nor a time: expected a duration ago, {GRAMMAR}, "
            "or an ISO date/time like 2024-05-01T12:00 (UTC when it has no zone)",
            field=what.lstrip("-"),
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def format_duration(value: float | timedelta) -> str:
    """Seconds (or a timedelta) in the same grammar, shortest form: ``5400`` → ``1h30m``, ``0.5`` → ``0.5s``."""
    total = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if total < 60 and total != int(total):
        return f"{total:g}s"
    rest, parts = round(total), []
    for unit in ("w", "d", "h", "m", "s"):
        count, rest = divmod(rest, int(UNITS[unit]))
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
