"""One grammar of durations for every --since, --window, --every/--interval and window setting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from modelyard.durations import format_duration, parse_duration, parse_since, seconds
from modelyard.errors import BadRequestError

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_parse_duration() -> None:  # moved from test_monitor_drift.py with the parser
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("15m") == timedelta(minutes=15)
    assert parse_duration("1h") == timedelta(hours=1)
    assert parse_duration("2d") == timedelta(days=2)
    assert parse_duration("30") == timedelta(seconds=30)
    with pytest.raises(BadRequestError, match="not a duration"):
        parse_duration("soon")


@pytest.mark.parametrize(("text", "delta"), [
    ("2w", 14 * 86400), ("1h30m", 5400), ("1d 12h", 129600), ("1.5h", 5400), ("10min", 600),
    ("5sec", 5), ("2H", 7200), (" 45s ", 45), ("0.5", 0.5), ("1w2d3h4m5s", 604800 + 2 * 86400 + 3 * 3600 + 245),
])
def test_every_unit_and_combination(text: str, delta: float) -> None:
    assert parse_duration(text) == timedelta(seconds=delta)


def test_numbers_and_timedeltas_pass_through() -> None:
    assert parse_duration(300) == timedelta(minutes=5)
    assert parse_duration(0.25) == timedelta(seconds=0.25)
    assert parse_duration(timedelta(hours=3)) == timedelta(hours=3)
    assert seconds("1m30s") == 90.0


@pytest.mark.parametrize("text", ["", "h", "1x", "1h1h", "30m1h", "1h foo", "-5m", "5 minutes", "1e3"])
def test_errors_name_the_value_and_the_grammar(text: str) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_duration(text, what="--window")
    message = str(info.value)
    assert f"--window {text!r} is not a duration" in message
    assert "s, m, h, d, w" in message and "1h30m" in message
    assert info.value.context["field"] == "window"


def test_a_negative_number_is_not_a_duration() -> None:
    with pytest.raises(BadRequestError, match="negative"):
        parse_duration(-1)


@pytest.mark.parametrize(("text", "delta"), [("2w", 14 * 86400), ("1h30m", 5400), ("90", 90)])
def test_since_takes_every_duration_ago(text: str, delta: float) -> None:
    assert parse_since(text, now=NOW) == NOW - timedelta(seconds=delta)


def test_since_takes_iso_times_in_utc_unless_zoned() -> None:
    assert parse_since("2024-05-01T10:00", now=NOW) == datetime(2024, 5, 1, 10, tzinfo=UTC)
    zoned = parse_since("2024-05-01T10:00+02:00", now=NOW)
    assert zoned == datetime(2024, 5, 1, 8, tzinfo=UTC)
    with pytest.raises(BadRequestError) as info:
        parse_since("last tuesday")
    assert "--since 'last tuesday'" in str(info.value) and "ISO date/time" in str(info.value)
    assert "1h30m" in str(info.value) and info.value.context["field"] == "since"


@pytest.mark.parametrize(("value", "text"), [(5400, "1h30m"), (0.5, "0.5s"), (60, "1m"), (0, "0s"),
                                             (timedelta(weeks=2, hours=1), "2w1h"), (90.0, "1m30s")])
def test_format_duration_writes_what_parse_duration_reads(value: float | timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == (value if isinstance(value, timedelta) else timedelta(seconds=value))
