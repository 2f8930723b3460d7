"""Engines and migrations: one place that knows SQLite from PostgreSQL.

Engines made here translate the driver's "cannot reach / cannot use the database" errors into
``StoreUnavailable`` (a ``ModelyardError``, HTTP 503), so no caller outside ``registry`` needs to know
SQLAlchemy's exception types; errors about the data itself (a constraint, a value) stay as they are.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext

from modelyard.config import normalize_database_url
from modelyard.errors import StoreUnavailable

__all__ = ["Engine", "get_engine", "is_content_error", "log_engine", "migrate"]

_MIGRATION_LOCK_KEY = 0x6D6F64656C  # "model": a PostgreSQL advisory lock key
_migrated: set[str] = set()
_migrate_lock = threading.Lock()
UNAVAILABLE = "the registry database is unavailable; retry shortly"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, synchronous: str = "NORMAL") -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute(f"PRAGMA synchronous={synchronous}")
    cur.close()


def _sqlite_log_pragmas(dbapi_connection: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_connection, record, synchronous="FULL")


def _translate_errors(context: ExceptionContext) -> None:
    """``handle_error`` hook: a lost connection or an unusable database becomes ``StoreUnavailable``."""
    error = context.sqlalchemy_exception
    if context.is_disconnect or isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
        raise StoreUnavailable(UNAVAILABLE) from (error or context.original_exception)


def is_content_error(exc: BaseException) -> bool:
    """True when the database refused a write for its content (a value, a constraint), as opposed to being
    away: retrying the same rows would fail again."""
    if isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError | TypeError | ValueError):
        return True
    # SQLAlchemy wraps errors raised while preparing parameters (e.g. serializing JSON) in StatementError.
    return isinstance(exc, sa_exc.StatementError) and not isinstance(exc, sa_exc.DBAPIError)


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
    event.listen(engine, "handle_error", _translate_errors)
    migrate(engine)
    return engine


def _json_dumps(value: Any) -> str:
    options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    return orjson.dumps(value, option=options, default=str).decode()


def log_engine(url: str, *, power_safe: bool = True) -> Engine:
    """An engine of the prediction log's own (short connect timeout; orjson: NaN becomes null, numpy is
    welcome). Not migrated here: the writer migrates it once the database answers.

    On SQLite, ``power_safe`` keeps ``synchronous=FULL`` (a commit is on disk before the shipper lets its
    segment go: the ``machine`` durability). Without it the log commits as the registry does, WAL with
    ``synchronous=NORMAL``: a commit survives the process, not a power cut, which is all the segments
    themselves promise below ``machine`` (an fsync per shipped batch was about a fifth of the shipper's CPU)."""
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, json_serializer=_json_dumps,
                               connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_log_pragmas if power_safe else _sqlite_pragmas)
    else:
        engine = create_engine(url, json_serializer=_json_dumps, pool_pre_ping=True, pool_size=2,
                               max_overflow=2,
                               connect_args={"connect_timeout": 5, "options": "-c statement_timeout=30000"})
    event.listen(engine, "handle_error", _translate_errors)
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
