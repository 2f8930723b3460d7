"""Engines and migrations: one place that knows SQLite from PostgreSQL."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text

from modelyard.config import normalize_database_url

_MIGRATION_LOCK_KEY = 0x6D6F64656C  # "model": a PostgreSQL advisory lock key
_migrated: set[str] = set()
_migrate_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


MAX_ENGINES = 16
_engines: OrderedDict[str, Engine] = OrderedDict()
_engines_lock = threading.Lock()


def get_engine(url: str) -> Engine:
    """One engine per database and process (keyed by the normalized URL, so ``postgresql://`` and
    ``postgresql+psycopg://`` share one), migrated to the newest schema on first use. The least recently used
    engine beyond ``MAX_ENGINES`` is disposed, so its pooled connections are closed, not left to the GC."""
    url = normalize_database_url(url)
    with _engines_lock:
        engine = _engines.get(url)
        if engine is not None:
            _engines.move_to_end(url)
            return engine
    engine = _new_engine(url)
    with _engines_lock:
        existing = _engines.get(url)
        if existing is not None:  # another thread made one meanwhile: keep that one
            engine.dispose()
            return existing
        _engines[url] = engine
        while len(_engines) > MAX_ENGINES:
            _, evicted = _engines.popitem(last=False)
            evicted.dispose()
    return engine


def _new_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    migrate(engine)
    return engine


def migrate(engine: Engine) -> None:
    """Bring the database to the newest migration; concurrent processes take turns."""
    key = str(engine.url)
    with _migrate_lock:
        if key in _migrated:
            return
        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        _migrated.add(key)
