"""Engines for the user's own databases (training data, batch input and output tables), beside the
registry's: cached per URL, never migrated, and their errors left as the driver raised them (they are about
the user's SQL, not about our store).

``read_query`` is how a training spec's ``data.query`` is read. It stays ``pandas.read_sql_query`` (binds
such as ``:name`` and the column types pandas gives) so the SHA-256 of the data, recorded in every bundle's
lineage, is the same as when that bundle was trained and ``reproduce`` still matches it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pandas as pd
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from modelyard.config import normalize_database_url

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # a reader's open cursor must not block a writer's commits
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def user_engine(url: str) -> Engine:
    """One engine per URL and process for a database of the user's."""
    url = normalize_database_url(url)
    with _lock:
        if url not in _engines:
            if url.startswith("sqlite"):
                engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_pre_ping=True)
            _engines[url] = engine
        return _engines[url]


def read_query(url: str, query: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The whole result of one SELECT as a frame; ``params`` are bound to its ``:name`` parameters."""
    with user_engine(url).connect() as conn:
        return pd.read_sql_query(text(query), conn, params=dict(params) if params else None)


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and run records."""
    return make_url(url).render_as_string(hide_password=True)
