"""Outside ``registry`` nobody sees SQLAlchemy's errors: an unreachable database is ``StoreUnavailable`` (503),
while an error about the data itself is left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from modelyard.errors import ServiceUnavailableError, StoreUnavailable
from modelyard.registry.batch_runs import RunRecord, SqlBatchRunStore
from modelyard.registry.db import get_engine


def test_an_unreachable_database_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable) as caught:
        get_engine("postgresql://postgres@127.0.0.1:9/nowhere?connect_timeout=2")
    assert isinstance(caught.value, ServiceUnavailableError) and caught.value.status_code == 503
    assert "port 9" in str(caught.value.__cause__)  # the driver's error, kept as the cause for the log


def test_an_unusable_database_is_store_unavailable(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE modelyard_batch_runs")
    with pytest.raises(StoreUnavailable):
        SqlBatchRunStore(engine).get("nightly")


def test_a_constraint_violation_is_not_translated(tmp_path: Path) -> None:
    store = SqlBatchRunStore(get_engine(f"sqlite:///{tmp_path / 'registry.db'}"))
    run = RunRecord("nightly", "m", 1, "SELECT 1", "out", "running", None, 0, 0, {})
    store.create(run)
    with pytest.raises(IntegrityError):
        store.create(run)
