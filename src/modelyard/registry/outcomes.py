"""Outcomes, ``modelyard_outcomes``: the true value of a logged prediction row, stored beside what the model
answered (one row per logged record of the request: the primary's or canary's answer, and the shadow's or
mirror's when there was one, so versions that saw the same row can be compared pair by pair).

Writes are idempotent on (model, request_id, row, route): an outcome sent twice is stored once and
``insert`` says how many rows were new. An outcome that matched no logged prediction is kept too (route
``unmatched``, no version), so unmatched outcomes are counted, not dropped. The join itself (which record a
request id, an entity key or a batch key names) is ``predlog.outcomes``; this module only stores and reads.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import orjson
from sqlalchemy import Engine, and_, func, or_, select, text, tuple_
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from modelyard.registry.lease import as_utc
from modelyard.registry.tables import outcomes

__all__ = ["UNMATCHED", "OutcomeCounts", "OutcomeStore", "SqlOutcomeStore"]

UNMATCHED = "unmatched"
"""The route of an outcome that matched no logged prediction."""
COLUMNS = ("model", "request_id", "row", "route", "version", "predicted_at", "predicted", "probabilities",
           "actual", "observed_at", "received_at", "source", "matched", "late")
_JSON = {"predicted", "probabilities", "actual"}
_KNOWN_CHUNK = 500  # (request_id, row) pairs per lookup on SQLite (its bound-parameter limit is 32766)


@dataclass(frozen=True)
class OutcomeCounts:
    """How many outcome rows a model holds: matched to a prediction, unmatched, and late among the matched."""

    matched: int = 0
    unmatched: int = 0
    late: int = 0


@runtime_checkable
class OutcomeStore(Protocol):
    def insert(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Store rows (the columns of ``COLUMNS``), skipping any already stored; return how many were new."""
        ...

    def known(self, model: str, keys: Sequence[tuple[str, int]]) -> set[tuple[str, int]]:
        """Which (request_id, row) of ``keys`` already hold an outcome of ``model``."""
        ...

    def select(self, model: str, *, since: datetime | None = None, until: datetime | None = None,
               version: int | None = None, routes: Sequence[str] = (),
               limit: int | None = None) -> list[dict[str, Any]]:
        """Matched outcome rows with ``since <= predicted_at < until``, oldest prediction first."""
        ...

    def counts(self, model: str, *, since: datetime | None = None) -> OutcomeCounts: ...


class SqlOutcomeStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def insert(self, rows: Sequence[Mapping[str, Any]]) -> int:
        if not rows:
            return 0
        if self.engine.dialect.name == "postgresql":
            return self._copy(rows)
        stmt = sqlite_insert(outcomes).on_conflict_do_nothing()
        with self.engine.begin() as conn:
            result = conn.execute(stmt, [{c: r.get(c) for c in COLUMNS} for r in rows])
            return max(int(result.rowcount), 0)

    def _copy(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """PostgreSQL: COPY into a temporary table, then one INSERT ... ON CONFLICT DO NOTHING from it."""
        buffer = io.StringIO()
        for r in rows:
            buffer.write("\t".join(_copy_field(c, r.get(c)) for c in COLUMNS))
            buffer.write("\n")
        cols = ", ".join(f'"{c}"' for c in COLUMNS)
        with self.engine.begin() as conn:
            conn.execute(text("CREATE TEMP TABLE IF NOT EXISTS modelyard_outcomes_in "
                              "(LIKE modelyard_outcomes INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"))
            dbapi = conn.connection.driver_connection
            with dbapi.cursor() as cur:  # type: ignore[union-attr]
                with cur.copy(f"COPY modelyard_outcomes_in ({cols}) FROM STDIN") as copy:
                    copy.write(buffer.getvalue())
                cur.execute(f"INSERT INTO modelyard_outcomes ({cols}) SELECT {cols} FROM modelyard_outcomes_in "
                            "ON CONFLICT ON CONSTRAINT uq_outcome_request_row_route DO NOTHING")
                return max(int(cur.rowcount), 0)

    def known(self, model: str, keys: Sequence[tuple[str, int]]) -> set[tuple[str, int]]:
        if not keys:
            return set()
        o = outcomes.c
        found: set[tuple[str, int]] = set()
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "postgresql":
                ids = sorted({k[0] for k in keys})
                query = select(o.request_id, o.row).where(o.model == model, o.request_id == func.any(ids))
                wanted = set(keys)
                found = {(str(a), int(b)) for a, b in conn.execute(query) if (a, b) in wanted}
                return found
            for i in range(0, len(keys), _KNOWN_CHUNK):
                part = keys[i:i + _KNOWN_CHUNK]
                query = select(o.request_id, o.row).where(o.model == model,
                                                          tuple_(o.request_id, o.row).in_(part))
                found |= {(str(a), int(b)) for a, b in conn.execute(query)}
        return found

    def select(self, model: str, *, since: datetime | None = None, until: datetime | None = None,
               version: int | None = None, routes: Sequence[str] = (),
               limit: int | None = None) -> list[dict[str, Any]]:
        o = outcomes.c
        query = select(outcomes).where(o.model == model, o.matched.is_(True)).order_by(o.predicted_at, o.id)
        if since is not None:
            query = query.where(o.predicted_at >= as_utc(since))
        if until is not None:
            query = query.where(o.predicted_at < as_utc(until))
        if version is not None:
            query = query.where(o.version == version)
        if routes:
            query = query.where(o.route.in_(list(routes)))
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            out = []
            for r in conn.execute(query).mappings():
                row = dict(r)
                row.pop("id", None)
                for col in ("predicted_at", "observed_at", "received_at"):
                    if row.get(col) is not None:
                        row[col] = as_utc(row[col])
                out.append(row)
            return out

    def counts(self, model: str, *, since: datetime | None = None) -> OutcomeCounts:
        o = outcomes.c
        query = select(o.matched, o.late, func.count()).where(o.model == model).group_by(o.matched, o.late)
        if since is not None:
            query = query.where(or_(o.predicted_at >= as_utc(since),
                                    and_(o.predicted_at.is_(None), o.received_at >= as_utc(since))))
        matched = unmatched = late = 0
        with self.engine.connect() as conn:
            for is_matched, is_late, n in conn.execute(query):
                if is_matched:
                    matched += int(n)
                    late += int(n) if is_late else 0
                else:
                    unmatched += int(n)
        return OutcomeCounts(matched, unmatched, late)


def _copy_field(column: str, value: Any) -> str:
    """One value in COPY's text format: ``\\N`` for NULL, backslash, tab and newline escaped."""
    if value is None:
        return "\\N"
    if column in _JSON:
        raw = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()
    elif isinstance(value, datetime):
        raw = value.isoformat()
    elif isinstance(value, bool):
        raw = "t" if value else "f"
    else:
        raw = str(value)
    return raw.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
