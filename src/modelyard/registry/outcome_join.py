"""Outcomes joined to the prediction log inside PostgreSQL: set-based, one statement per chunk of outcomes.

``predlog.outcomes.join_outcomes`` decides *what* a join means (strict mode, the check of ``actual`` against
the version's task, the counts it reports); this module does the joining where the rows are:

1. the outcomes are COPYed into a temporary table (index, request id or entity key, row, actual, time);
2. outcomes named by an entity key are resolved in SQL: the logged input rows of the model within the
   window (``inputs -> row -> column``, the value compared as ``predlog.outcomes.key_text`` spells it) are
   hash-joined to the keys, and the latest one before each outcome's time wins;
3. one statement joins every outcome to every logged record of its request (primary or canary, and the
   shadow's or mirror's record), takes the predicted value (``outputs -> row``, unwrapped as
   ``predlog.records.prediction_value`` does) and the probabilities (``meta -> probabilities -> row``),
   inserts the new outcome rows and the unmatched ones (route ``unmatched``), and returns the counts:
   per model the outcomes that found a record and those stored now (the rest are duplicates), the late
   ones, the unmatched ones (the first few named) and the (model, version) pairs it joined.

The insert skips what is already stored by looking it up first (an outcome of the same model, request id and
row under any route; one index probe per row), not with ``ON CONFLICT``: PostgreSQL's speculative insertion
doubled the cost of the insert here. Two joins of the same outcomes at once can therefore collide on the
unique constraint (or deadlock); the statement is then run again from a savepoint, and the rows the other
join stored count as duplicates.

The caller checks the counts (an unknown id in strict mode, an ``actual`` of the wrong type) before the
transaction commits: ``run`` again with ``rejected`` indices (they become unmatched), or raise to store
nothing. SQLite has no such path: ``predlog`` joins in Python there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Engine

from modelyard.registry.lease import as_utc
from modelyard.registry.outcomes import UNMATCHED

if TYPE_CHECKING:
    import psycopg

__all__ = ["DatabaseJoin", "JoinCounts", "JoinInput", "database_join", "joins_in_database"]

TEMP = "modelyard_outcomes_join"
NULL = "\\N"
MAX_NAMED = 20
"""Unmatched outcomes named in the counts (the first ones, by index)."""
_RETRIES = 3
_UNWRAP_DEPTH = 4
"""One-element lists unwrapped this deep (``[[x]]`` is x); deeper nesting gives no predicted value."""
_ANSWERED_FIRST = "(p.route IN ('shadow', 'mirror')), p.route, p.version"
"""The record whose (model, version) an outcome is checked against: the answer before a shadow's."""


def joins_in_database(engine: Engine) -> bool:
    """True when outcomes are joined by ``database_join`` (PostgreSQL); False: join them in Python."""
    return engine.dialect.name == "postgresql"


@dataclass
class JoinInput:
    """The outcomes of one join, column by column (index i is the i-th outcome)."""

    request_ids: list[str | None]
    """The request id named, None for an outcome named by an entity key."""
    rows: list[int]
    actuals: list[Any]
    observed: list[datetime | None]
    """When the outcome was observed (None: now)."""
    keys: list[tuple[tuple[str, str], ...] | None] = field(default_factory=list)
    """Per outcome named by an entity key: (column, value as text) pairs, sorted by column; else None.
    Empty when no outcome is named by key."""
    stored_actuals: list[Any] | None = None
    """The actual values as a matched row stores them (an integral float as an integer: the class 1, not
    1.0), when they differ from ``actuals`` (which unmatched rows keep as sent)."""


@dataclass
class JoinCounts:
    versions: set[tuple[str, int]] = field(default_factory=set)
    """(model, version) of every logged record joined."""
    found: dict[str, int] = field(default_factory=dict)
    """model → outcomes that found a logged record (stored by this join, or duplicates)."""
    matched: dict[str, int] = field(default_factory=dict)
    """model → outcomes stored by this join."""
    late: dict[str, int] = field(default_factory=dict)
    """model → outcomes stored by this join more than ``late_after`` after a prediction."""
    unmatched: int = 0
    unmatched_first: list[tuple[int, str]] = field(default_factory=list)
    """(index, request id or key) of the first ``MAX_NAMED`` unmatched outcomes."""
    rows_stored: int = 0


def _pv(e: str, depth: int) -> str:
    """SQL: ``predlog.records.prediction_value`` of the JSON expression ``e`` (SQL NULL for None)."""
    inner = f"{_pv(f'({e}) -> 0', depth - 1)}" if depth > 1 else "NULL::json"
    return (f"CASE json_typeof({e}) WHEN 'object' THEN coalesce(({e}) -> 'prediction', ({e}) -> 'label', "
            f"({e}) -> 'value') WHEN 'array' THEN CASE WHEN json_array_length({e}) = 1 THEN {inner} END "
            f"WHEN 'null' THEN NULL::json ELSE {e} END")


# ``predlog.records.decode_outputs`` of p.outputs as a JSON array (NULL when it has no rows): a list as it
# is; an object's "predictions" (or "outputs", or the object itself); a single value as one row.
_INNER = "coalesce(p.outputs -> 'predictions', p.outputs -> 'outputs', json_build_array(p.outputs))"
_ELEMS = (f"CASE json_typeof(p.outputs) WHEN 'array' THEN p.outputs "
          f"WHEN 'object' THEN CASE WHEN json_typeof({_INNER}) = 'array' THEN {_INNER} "
          f"ELSE json_build_array({_INNER}) END "
          "WHEN 'null' THEN NULL ELSE json_build_array(p.outputs) END")
_PROBA = ("CASE WHEN json_typeof(p.meta -> 'probabilities') = 'array' "
          "AND json_array_length(p.meta -> 'probabilities') > t.row THEN p.meta -> 'probabilities' -> t.row END")
_PREDICTED = _pv("p.e", _UNWRAP_DEPTH)


def _canon(e: str) -> str:
    """SQL: ``predlog.outcomes.key_text`` of the logged JSONB value ``e`` (an integral number without its
    fraction, True/False/None as Python spells them)."""
    return (f"CASE jsonb_typeof({e}) WHEN 'string' THEN ({e}) #>> '{{}}' "
            f"WHEN 'number' THEN CASE WHEN ({e})::numeric = trunc(({e})::numeric) THEN trunc(({e})::numeric)::text "
            f"ELSE ({e})::text END "
            f"WHEN 'boolean' THEN CASE WHEN ({e}) = 'true'::jsonb THEN 'True' ELSE 'False' END "
            f"WHEN 'null' THEN 'None' END")


def _lateral(model_filter: bool) -> str:
    """Each outcome with each logged record of its request that has its row, one index probe per outcome, the
    outcomes in index order (``i``): a window ``PARTITION BY t.i`` over it needs no sort."""
    where = " AND p.model = %(model)s" if model_filter else ""
    # ``elems`` is an array or NULL, so "it has the row" is ``elems -> row IS NOT NULL`` (a JSON null element is
    # 'null', not NULL): the array is parsed for the test and once more for ``e``, the row's element (json, not
    # jsonb: each operator parses the text again)
    return ("FROM (SELECT * FROM src ORDER BY i) t CROSS JOIN LATERAL (SELECT q.*, q.elems -> t.row AS e "
            f"FROM (SELECT p.model, p.version, p.route, p.ts, p.meta, {_ELEMS} AS elems "
            f"FROM modelyard_predictions p WHERE p.request_id = t.request_id AND p.error IS NULL{where} OFFSET 0) q "
            "WHERE CASE WHEN t.row >= 0 THEN q.elems -> t.row IS NOT NULL ELSE q.elems IS NOT NULL END) p "
            "WHERE NOT (t.i = ANY(%(rejected)s::int[]))")


def _src(key_sets: list[tuple[str, ...]]) -> str:
    """The ``src`` CTE: every outcome with its request id and row (resolved in SQL for entity keys)."""
    plain = (f"src AS NOT MATERIALIZED (SELECT t.i, t.request_id, t.row, t.ident, t.actual, t.stored_actual, "
             f"coalesce(t.observed_at, %(now)s) AS observed_at FROM {TEMP} t)")
    if not key_sets:
        return plain
    cands, picks = [], []
    for n, cols in enumerate(key_sets):
        values = ", ".join(f"{_canon(f'r.v -> %(kc_{n}_{c})s::text')} AS k{c}" for c in range(len(cols)))
        present = " AND ".join(f"r.v -> %(kc_{n}_{c})s::text IS NOT NULL" for c in range(len(cols)))
        cands.append(
            f"cand_{n} AS (SELECT p.request_id, p.ts, (r.ord - 1)::int AS row, {values} "
            # JSONB: each record's inputs parsed once, not once per operator
            # (JSONB cannot hold a NUL: inputs holding one are not matched by key, rather than failing the join)
            "FROM modelyard_predictions p CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN json_typeof(p.inputs) "
            "= 'array' AND strpos(p.inputs::text, '\\u0000') = 0 THEN p.inputs::jsonb ELSE '[]'::jsonb END) "
            "WITH ORDINALITY AS r(v, ord) "
            "WHERE p.model = %(model)s AND p.ts >= %(since)s AND p.ts <= %(until)s AND p.error IS NULL "
            f"AND p.route NOT IN ('shadow', 'mirror') AND jsonb_typeof(r.v) = 'object' AND {present})")
        match = " AND ".join(f"c.k{c} = (t.key ->> {c})" for c in range(len(cols)))
        picks.append(
            f"(SELECT DISTINCT ON (t.i) t.i, c.request_id, c.row FROM {TEMP} t JOIN cand_{n} c ON t.kset = {n} "
            f"AND {match} AND c.ts >= coalesce(t.observed_at, %(now)s) - %(window)s "
            "AND c.ts <= coalesce(t.observed_at, %(now)s) "
            "ORDER BY t.i, c.ts DESC, c.request_id COLLATE \"C\" DESC, c.row DESC)")
    return (", ".join(cands) + ", keyed AS MATERIALIZED (" + " UNION ALL ".join(picks) + "), "
            "src AS NOT MATERIALIZED (SELECT t.i, coalesce(k.request_id, t.request_id) AS request_id, "
            "coalesce(k.row, t.row) AS row, "
            f"t.ident, t.actual, t.stored_actual, coalesce(t.observed_at, %(now)s) AS observed_at FROM {TEMP} t "
            "LEFT JOIN keyed k ON k.i = t.i)")


_COLS = ('model, request_id, "row", route, version, predicted_at, predicted, probabilities, actual, observed_at, '
         "received_at, source, matched, late")
_LATE = "%(now)s - ts > %(late_after)s"
"""A row is late when its own prediction was made more than ``late_after`` before now; an outcome when one of
its rows is (its earliest record, ``first_ts``)."""


def _statement(key_sets: list[tuple[str, ...]], model_filter: bool, store_unmatched: bool, repeats: bool) -> str:
    """The join; ``repeats``: two outcomes may name the same row (else the first-of-each window is skipped)."""
    unmatched_insert = (
        f", um_ins AS (INSERT INTO modelyard_outcomes ({_COLS}) SELECT DISTINCT ON (left(u.ident, 100), u.row) "
        f"%(model)s, left(u.ident, 100), u.row, '{UNMATCHED}', NULL, NULL, NULL, NULL, u.actual, u.observed_at, "
        "%(now)s, %(source)s, false, false FROM um u LEFT JOIN LATERAL (SELECT 1 AS hit FROM modelyard_outcomes o "
        "WHERE o.model = %(model)s AND o.request_id = left(u.ident, 100) AND o.row = u.row "
        f"AND o.route = '{UNMATCHED}' LIMIT 1) o ON true WHERE o.hit IS NULL "
        "ORDER BY left(u.ident, 100), u.row, u.i RETURNING 1)"
        if store_unmatched else "")
    stored_unmatched = "(SELECT count(*) FROM um_ins)" if store_unmatched else "0"
    return (
        f"WITH {_src(key_sets)}, "
        "j AS MATERIALIZED (SELECT t.i, t.request_id, t.row, t.stored_actual, t.observed_at, p.model, p.version, "
        # ``rn`` is 1 on one record of each outcome (what counts it), ``first_ts`` is its earliest record's time
        # (late); one window over the whole join (a window inside the LATERAL was set up again per outcome)
        f"p.route, p.ts, row_number() OVER w AS rn, min(p.ts) OVER w AS first_ts, {_PREDICTED} AS predicted, "
        f"{_PROBA} AS probabilities {_lateral(model_filter)} WINDOW w AS (PARTITION BY t.i)), "
        + ("c AS (SELECT j.*, min(j.i) OVER (PARTITION BY j.model, j.request_id, j.row) AS first_i FROM j), "
           if repeats else "c AS (SELECT j.*, j.i AS first_i FROM j), ") +
        # what is stored already, one index probe per row (LATERAL ... LIMIT 1: an anti-join planned from stale
        # statistics of a table just filled merged against the whole index instead)
        "f AS MATERIALIZED (SELECT c.* FROM c LEFT JOIN LATERAL (SELECT 1 AS hit FROM modelyard_outcomes o "
        "WHERE o.model = c.model AND o.request_id = c.request_id AND o.row = c.row LIMIT 1) o ON true "
        "WHERE c.i = c.first_i AND o.hit IS NULL), "
        f"ins AS (INSERT INTO modelyard_outcomes ({_COLS}) SELECT model, request_id, row, route, version, ts, "
        f"predicted, probabilities, stored_actual, observed_at, %(now)s, %(source)s, true, {_LATE} FROM f "
        "RETURNING 1), "
        "um AS (SELECT t.i, coalesce(t.request_id, t.ident) AS ident, t.row, t.actual, t.observed_at FROM src t "
        "WHERE NOT EXISTS (SELECT 1 FROM j WHERE j.i = t.i))"
        f"{unmatched_insert} "
        "SELECT 'v', model, version, NULL::bigint, NULL::bigint, NULL::text FROM j GROUP BY model, version "
        "UNION ALL SELECT 'o', model, NULL, count(*), NULL, NULL FROM j WHERE rn = 1 GROUP BY model "
        "UNION ALL SELECT 'm', model, NULL, count(*), count(*) FILTER (WHERE %(now)s - first_ts > %(late_after)s), "
        "NULL FROM f WHERE rn = 1 GROUP BY model "
        f"UNION ALL SELECT 's', NULL, NULL, (SELECT count(*) FROM ins), {stored_unmatched}, NULL "
        "UNION ALL SELECT 'n', NULL, NULL, count(*), NULL, NULL FROM um "
        f"UNION ALL (SELECT 'u', NULL, NULL, i, NULL, ident FROM um ORDER BY i LIMIT {MAX_NAMED})"
    )


def _first_versions(key_sets: list[tuple[str, ...]], model_filter: bool) -> str:
    return (f"WITH {_src(key_sets)}, firsts AS (SELECT DISTINCT ON (t.i) t.i, p.model, p.version "
            f"{_lateral(model_filter)} ORDER BY t.i, {_ANSWERED_FIRST}) "
            "SELECT model, version, array_agg(i ORDER BY i) FROM firsts GROUP BY model, version")


def _escaped(column: list[str]) -> list[str]:
    """COPY's text format escapes backslash, tab, newline and carriage return (checked once per column); a NUL,
    which PostgreSQL text cannot hold (nor can a logged request id or input), is dropped."""
    blob = "".join(column)
    if not any(ch in blob for ch in "\\\t\n\r\x00"):
        return column
    return [s.replace("\x00", "").replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r") for s in column]


def _json_texts(values: list[Any]) -> list[str]:
    """Each value as JSON text; numbers in one orjson call (they hold no comma to split on). A value JSON cannot
    hold (nested too deep, a Decimal) is null here: it is no number and no class, so the check of ``actual``
    rejects it, with the value itself in its message."""
    options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    if {type(v) for v in values} <= {int, float}:
        try:
            return orjson.dumps(values, option=options).decode()[1:-1].split(",") if values else []
        except TypeError:  # an integer beyond 64 bits
            pass
    out = []
    for v in values:
        try:
            out.append(orjson.dumps(v, option=options).decode())
        except TypeError:
            out.append(str(v) if isinstance(v, int) else "null")
    return out


def _column(values: list[str | None]) -> list[str]:
    """Text values for COPY, None as NULL."""
    texts = _escaped([v or "" for v in values])
    return [NULL if v is None else t for v, t in zip(values, texts, strict=True)]


def _copy_buffer(data: JoinInput, key_sets: list[tuple[str, ...]]) -> tuple[str, str]:
    """The columns COPYed and their text: only those that hold something (the rest stay NULL), one ``join``
    per row (no per-row formatting call)."""
    n = len(data.rows)
    columns: dict[str, list[str]] = {"i": list(map(str, range(n)))}
    if data.keys:
        set_of = {cols: i for i, cols in enumerate(key_sets)}
        columns["request_id"] = _column(data.request_ids)
        columns["ident"] = _column([None if k is None else ",".join(f"{c}={v}" for c, v in k) for k in data.keys])
        columns["kset"] = [NULL if k is None else str(set_of[tuple(c for c, _ in k)]) for k in data.keys]
        columns["key"] = _column([None if k is None else orjson.dumps([v.replace("\x00", "") for _, v in k]).decode()
                                  for k in data.keys])
    else:
        columns["request_id"] = _escaped([str(r) for r in data.request_ids])
    columns["row"] = list(map(str, data.rows))
    actuals = columns["actual"] = _escaped(_json_texts(data.actuals))
    columns["stored_actual"] = actuals if data.stored_actuals is None else _escaped(_json_texts(data.stored_actuals))
    if any(t is not None for t in data.observed):
        times: dict[datetime, str] = {}
        columns["observed_at"] = [NULL if t is None else times.setdefault(t, as_utc(t).isoformat())
                                  for t in data.observed]
    names = ", ".join(f'"{c}"' for c in columns)
    if not n:
        return names, ""
    return names, "\n".join(map("\t".join, zip(*columns.values(), strict=True))) + "\n"


class DatabaseJoin:
    """One join in one transaction: ``run`` (again, with rejected outcomes) until the caller is satisfied;
    the transaction commits when ``database_join``'s block ends without an exception."""

    def __init__(self, cur: psycopg.Cursor[Any], params: dict[str, Any], key_sets: list[tuple[str, ...]],
                 model_filter: bool, store_unmatched: bool, repeats: bool) -> None:
        self._cur = cur
        self._params = params
        self._key_sets = key_sets
        self._model_filter = model_filter
        self._statement = _statement(key_sets, model_filter, store_unmatched, repeats)
        self._ran = False

    def run(self, rejected: Sequence[int] = ()) -> JoinCounts:
        """Join and store; ``rejected`` outcomes (indices) are stored as unmatched. Undoes an earlier run."""
        from psycopg import errors  # the driver, imported only where PostgreSQL is used

        for attempt in range(_RETRIES):
            if self._ran or attempt:
                self._cur.execute("ROLLBACK TO SAVEPOINT modelyard_join")
            self._ran = True
            try:
                self._cur.execute(self._statement, {**self._params, "rejected": list(rejected)})
                return self._counts(self._cur.fetchall())
            except (errors.UniqueViolation, errors.DeadlockDetected):
                if attempt == _RETRIES - 1:
                    raise  # another join of the same outcomes kept colliding with this one
        raise AssertionError("unreachable")

    def plan(self, rejected: Sequence[int] = ()) -> str:
        """What PostgreSQL would do for ``run`` (``EXPLAIN``), for a slow join and for the tests."""
        self._cur.execute("EXPLAIN " + self._statement, {**self._params, "rejected": list(rejected)})
        return "\n".join(str(r[0]) for r in self._cur.fetchall())

    def first_versions(self, rejected: Sequence[int] = ()) -> dict[tuple[str, int], list[int]]:
        """(model, version) of each outcome's answering record → the outcomes' indices (reads only)."""
        self._cur.execute(_first_versions(self._key_sets, self._model_filter),
                          {**self._params, "rejected": list(rejected)})
        return {(str(m), int(v)): [int(i) for i in idx] for m, v, idx in self._cur.fetchall()}

    @staticmethod
    def _counts(rows: list[tuple[Any, ...]]) -> JoinCounts:
        out = JoinCounts()
        for kind, model, version, a, b, ident in rows:
            if kind == "v":
                out.versions.add((str(model), int(version)))
            elif kind == "o":
                out.found[str(model)] = int(a)
            elif kind == "m":
                out.matched[str(model)] = int(a)
                out.late[str(model)] = int(b)
            elif kind == "s":
                out.rows_stored = int(a) + int(b)
            elif kind == "n":
                out.unmatched = int(a)
            else:
                out.unmatched_first.append((int(a), str(ident)))
        out.unmatched_first.sort()
        return out


@contextmanager
def database_join(engine: Engine, data: JoinInput, *, model: str | None, source: str, now: datetime,
                  late_after: float, window: float) -> Iterator[DatabaseJoin]:
    """COPY the outcomes into a temporary table and hand back the join (see the module's docstring)."""
    if data.keys and model is None:
        raise ValueError("outcomes by entity key are joined within one model")
    key_sets = sorted({tuple(c for c, _ in k) for k in data.keys if k})
    params: dict[str, Any] = {"model": model, "source": source, "now": as_utc(now),
                              "late_after": timedelta(seconds=late_after), "window": timedelta(seconds=window)}
    for n, cols in enumerate(key_sets):
        params.update({f"kc_{n}_{c}": col.replace("\x00", "") for c, col in enumerate(cols)})
    if key_sets:
        times = [as_utc(t or now) for t, k in zip(data.observed, data.keys, strict=True) if k]
        params["since"], params["until"] = min(times) - timedelta(seconds=window), max(times)
    copied, buffer = _copy_buffer(data, key_sets)
    # two keys may resolve to one logged row; by request id, a repeat is seen here
    repeats = bool(key_sets) or len(set(zip(data.request_ids, data.rows, strict=True))) < len(data.rows)
    with engine.begin() as conn:
        dbapi = conn.connection.driver_connection
        with dbapi.cursor() as cur:  # type: ignore[union-attr]
            cur.execute("SET LOCAL jit = off")  # compiling the plan cost more than it saved at these sizes
            cur.execute("SET LOCAL work_mem = '64MB'")  # a 50k chunk's sorts and hashes stay in memory
            # Each outcome is probed by index. Planned from an outcomes table that looked empty (a new one,
            # stale statistics), a sequential probe per outcome made a 50k chunk run for minutes while another
            # join was filling the table: two joins at once, as two feedback requests or `feedback` processes.
            cur.execute("SET LOCAL enable_seqscan = off")
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {TEMP} (i int, request_id text, row int, ident text, "
                        "kset int, key json, actual json, stored_actual json, observed_at timestamptz) "
                        "ON COMMIT DELETE ROWS")
            with cur.copy(f"COPY {TEMP} ({copied}) FROM STDIN") as copy:
                copy.write(buffer)
            if key_sets:
                cur.execute(f"ANALYZE {TEMP}")  # the keys' hash join is planned from the outcomes' real count
            cur.execute("SAVEPOINT modelyard_join")
            yield DatabaseJoin(cur, params, key_sets, model_filter=model is not None,
                               store_unmatched=model is not None, repeats=repeats)
