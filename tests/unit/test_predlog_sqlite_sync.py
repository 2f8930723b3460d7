"""The prediction log's SQLite commits: on disk before a segment is let go only at ``machine`` durability."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from modelyard.config import Settings
from modelyard.predlog.store import SqlSink
from modelyard.predlog.target import log_sink
from modelyard.registry.db import log_engine

FULL, NORMAL = 2, 1  # PRAGMA synchronous


def synchronous(url: str, **kwargs: bool) -> int:
    engine = log_engine(url, **kwargs)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            return int(conn.execute(text("PRAGMA synchronous")).scalar_one())
    finally:
        engine.dispose()


def test_the_log_engine_is_power_safe_unless_told_otherwise(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    assert synchronous(url) == FULL
    assert synchronous(url, power_safe=False) == NORMAL


@pytest.mark.parametrize(("durability", "power_safe"), [("machine", True), ("process", False), ("async", False)])
def test_the_sink_follows_the_durability_level(tmp_path: Path, durability: str, power_safe: bool) -> None:
    sink = log_sink(Settings(home=tmp_path, log_durability=durability))  # type: ignore[arg-type]
    assert isinstance(sink, SqlSink) and sink.power_safe is power_safe
    engine = sink._get_engine()
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA synchronous")).scalar_one() == (FULL if power_safe else NORMAL)
    sink.dispose()
