"""One engine per backend for the contract suites: a fresh SQLite file per test, and one fresh PostgreSQL
database per session (unique name, dropped at the end) emptied before each test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete

from modelyard.registry import tables
from modelyard.registry.db import get_engine
from tests.conftest import PG_ADMIN_URL, _pg_available

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    """A PostgreSQL database of this test session's own, dropped afterwards."""
    import psycopg

    if not _pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: start it (see .ci/run)")
    name = f"modelyard_contracts_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    try:
        get_engine(url).dispose()
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Engine:
    """A migrated engine with empty tables, on SQLite or PostgreSQL."""
    if backend == "sqlite":
        return get_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    engine = get_engine(request.getfixturevalue("pg_session_url"))
    with engine.begin() as conn:
        for table in reversed(tables.metadata.sorted_tables):
            conn.execute(delete(table))
    return engine
