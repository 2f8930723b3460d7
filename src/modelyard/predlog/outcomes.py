"""Outcomes joined to logged predictions: which record's row an outcome is the truth of.

An ``Outcome`` names its row in one of three ways:

- by request id and row (``request_id``, ``row``; row 0 by default): what the server answered with;
- by an entity key of the logged inputs and a time (``key={"house_id": 17}``, ``at``): the latest logged
  row of the model with that input value within ``window`` seconds before ``at``, for systems that never
  saw the request id;
- batch-scored rows by ``(run_id, key)``: request id ``"{run_id}:{key}"`` (what ``score --log-rows``
  logs), or the rows of the run's output table the caller passes as ``answers``.

``join_outcomes`` stores one outcome row per logged record of the request (the primary's or canary's
answer, the shadow's and mirror's too) through ``registry.outcomes`` and counts what it saw: matched,
duplicate (already stored, or twice in one call), unmatched (kept, route ``unmatched``) and late (the
outcome came more than ``late_after`` seconds after the prediction). Nothing is dropped silently.
With ``strict`` (the HTTP endpoint) an unknown id or a value of the wrong type is an error naming it and
nothing is stored.

On PostgreSQL the join itself runs in the database (``registry.outcome_join``: one COPY and one statement
per call); this module keeps what needs the model: the check of ``actual`` against the task and classes of
the versions joined, once per distinct value (numbers all at once). Elsewhere (SQLite), and when ``answers``
says where the records come from (a batch run's output table), the join is done here, record by record.
Both ways give the same rows and counts (``tests/contracts/test_outcome_join_contract.py``).
"""

from __future__ import annotations

import collections
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from modelyard.durations import parse_duration
from modelyard.errors import BadRequestError, ModelyardError, OutcomeError, UnknownRequestError
from modelyard.predlog.records import decode_outputs
from modelyard.registry.db import Engine
from modelyard.registry.outcome_join import JoinInput, database_join, joins_in_database
from modelyard.registry.outcomes import UNMATCHED, SqlOutcomeStore
from modelyard.registry.predictions import PredictionRow, SqlPredictionStore
from modelyard.registry.registry import Registry

__all__ = ["DEFAULT_KEY_WINDOW", "DEFAULT_LATE_AFTER", "FeedbackBody", "JoinResult", "Outcome", "TaskOf",
           "check_actual", "join_chunks", "join_outcomes", "key_text", "parse_feedback", "parse_outcome",
           "task_of_registry"]

MAX_KEY_WINDOW = 366 * 86400.0
DEFAULT_KEY_WINDOW = 3600.0
"""Seconds before the outcome's time an entity-key join looks for the prediction."""
DEFAULT_LATE_AFTER = 86400.0
"""An outcome arriving more than this many seconds after its prediction is counted as late (and kept)."""
MAX_LISTED = 20
JOINS_IN_FLIGHT = 2
"""Chunks ``join_chunks`` joins at once in the database (one backend each)."""
T = TypeVar("T")

TaskOf = Callable[[str, int], tuple[str, list[Any] | None]]
"""(model, version) → (task, classes): what a valid ``actual`` looks like."""


@dataclass(frozen=True)
class Outcome:
    actual: Any
    request_id: str | None = None
    row: int = 0
    key: Mapping[str, Any] | None = None
    at: datetime | None = None
    """When the outcome was observed (default: now); an entity-key join looks back from here."""


@dataclass
class JoinResult:
    received: int = 0
    matched: int = 0
    duplicate: int = 0
    unmatched: int = 0
    late: int = 0
    rows_stored: int = 0
    """Outcome rows written (one per logged record of a matched request, one per unmatched outcome)."""
    unmatched_ids: list[str] = field(default_factory=list)
    by_model: dict[str, dict[str, int]] = field(default_factory=dict)
    """model → {"matched"|"duplicate"|"unmatched"|"late": count} (unmatched ids of no known model: "")."""

    def count(self, model: str, status: str, n: int = 1) -> None:
        if n <= 0:
            return
        setattr(self, status, getattr(self, status) + n)
        counts = self.by_model.setdefault(model, {})
        counts[status] = counts.get(status, 0) + n

    def add(self, other: JoinResult) -> None:
        for name in ("received", "matched", "duplicate", "unmatched", "late", "rows_stored"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.unmatched_ids = (self.unmatched_ids + other.unmatched_ids)[:MAX_LISTED]
        for model, counts in other.by_model.items():
            mine = self.by_model.setdefault(model, {})
            for status, n in counts.items():
                mine[status] = mine.get(status, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return {"received": self.received, "matched": self.matched, "duplicate": self.duplicate,
                "unmatched": self.unmatched, "late": self.late, "rows_stored": self.rows_stored,
                "unmatched_ids": self.unmatched_ids}


def check_actual(actual: Any, task: str, classes: Sequence[Any] | None) -> str | None:
    """Why ``actual`` cannot be the truth of a ``task`` prediction (None when it can)."""
    if task == "regression":
        if isinstance(actual, bool) or not isinstance(actual, int | float):
            return f"'actual' must be a number for a regression model, not {type(actual).__name__}"
        try:
            finite = math.isfinite(float(actual))
        except OverflowError:
            finite = False
        if not finite:
            return "'actual' must be a finite number"
        return None
    if actual is None or (isinstance(actual, dict | list | float) and not (
            isinstance(actual, float) and actual.is_integer())):
        return f"'actual' must be one of the classes, not {type(actual).__name__}"
    if classes and str(actual) not in {str(c) for c in classes}:
        shown = ", ".join(map(str, list(classes)[:10]))
        return f"'actual' {actual!r} is not one of the model's classes ({shown})"
    return None


def key_text(value: Any) -> str:
    """An entity key's value as text, so 17, 17.0 (a number read from a column with NULLs) and "17" match."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _class_text(actual: Any) -> Any:
    return int(actual) if isinstance(actual, float) and actual.is_integer() else actual


@dataclass
class _Match:
    index: int
    outcome: Outcome
    request_id: str
    records: list[PredictionRow]


def join_outcomes(engine: Engine, outcomes: Sequence[Outcome], *, model: str | None = None,
                  source: str = "http", strict: bool = False, window: float = DEFAULT_KEY_WINDOW,
                  late_after: float = DEFAULT_LATE_AFTER, task_of: TaskOf | None = None,
                  answers: Callable[[list[str]], list[PredictionRow]] | None = None,
                  now: datetime | None = None) -> JoinResult:
    """Join ``outcomes`` to the logged predictions and store them; see the module's docstring.

    On PostgreSQL the join is done in the database (``registry.outcome_join``), unless ``answers`` says
    where the records come from; elsewhere (SQLite) here, record by record."""
    now = now or datetime.now(UTC)
    if model is None and any(o.key is not None for o in outcomes):
        raise BadRequestError("an outcome by entity key needs the model's name", field="model")
    if answers is None and joins_in_database(engine):
        return _join_in_database(engine, outcomes, model=model, source=source, strict=strict, window=window,
                                 late_after=late_after, task_of=task_of, now=now)
    store = SqlOutcomeStore(engine)
    log = SqlPredictionStore(engine)
    result = JoinResult(received=len(outcomes))
    matches: list[_Match] = []
    unmatched: list[tuple[int, Outcome, str]] = []

    by_id = [(i, o) for i, o in enumerate(outcomes) if o.key is None]
    if by_id:
        fetch = answers or log.answers
        found: dict[str, list[PredictionRow]] = defaultdict(list)
        for rec in sorted(fetch([str(o.request_id) for _, o in by_id]), key=_answered_first):
            if rec.get("error") is None and (model is None or rec["model"] == model):
                found[str(rec["request_id"])].append(rec)
        for i, o in by_id:
            recs = [r for r in found.get(str(o.request_id), ()) if len(_values(r)) > o.row]
            if recs:
                matches.append(_Match(i, o, str(o.request_id), recs))
            else:
                unmatched.append((i, o, str(o.request_id)))
    by_key = [(i, o) for i, o in enumerate(outcomes) if o.key is not None]
    if by_key and model is not None:
        matched, missing = _join_by_key(log, model, by_key, window, now)
        matches += matched
        unmatched += missing

    if strict and unmatched:
        i, o, _ = min(unmatched, key=lambda u: u[0])
        raise _unknown(o, i, window, now)
    if task_of is not None:
        for m in sorted(matches, key=lambda m: m.index):
            first = m.records[0]
            task, classes = task_of(str(first["model"]), int(first["version"]))
            problem = check_actual(m.outcome.actual, task, classes)
            if problem is not None:
                if strict:
                    raise OutcomeError(problem, field="actual", row=m.index)
                unmatched.append((m.index, m.outcome, m.request_id))  # unusable: kept as unmatched
                m.records = []
        matches = [m for m in matches if m.records]

    rows, seen = [], set()
    keys = [(m.request_id, m.outcome.row) for m in matches]
    model_of = {m.request_id: str(m.records[0]["model"]) for m in matches}
    already: set[tuple[str, int]] = set()
    for name in set(model_of.values()):
        already |= store.known(name, [k for k in keys if model_of[k[0]] == name])
    for m, k in zip(matches, keys, strict=True):
        if k in already or k in seen:
            result.count(model_of[k[0]], "duplicate")
            continue
        seen.add(k)
        result.count(model_of[k[0]], "matched")
        observed = m.outcome.at or now
        late = False
        for rec in m.records:
            predicted_at = rec["ts"]
            delay = (now - predicted_at).total_seconds()
            late = late or delay > late_after
            rows.append({
                "model": rec["model"], "request_id": m.request_id, "row": m.outcome.row, "route": rec["route"],
                "version": int(rec["version"]), "predicted_at": predicted_at,
                "predicted": _values(rec)[m.outcome.row], "probabilities": _proba(rec, m.outcome.row),
                "actual": _class_text(m.outcome.actual), "observed_at": observed, "received_at": now,
                "source": source, "matched": True, "late": delay > late_after,
            })
        if late:
            result.count(model_of[k[0]], "late")
    for _, o, ident in sorted(unmatched, key=lambda u: u[0]):
        result.count(model or "", "unmatched")
        if len(result.unmatched_ids) < MAX_LISTED:
            result.unmatched_ids.append(ident)
        if model is not None:
            rows.append({"model": model, "request_id": ident[:100], "row": o.row, "route": UNMATCHED,
                         "version": None, "predicted_at": None, "predicted": None, "probabilities": None,
                         "actual": o.actual, "observed_at": o.at or now, "received_at": now, "source": source,
                         "matched": False, "late": False})
    result.rows_stored = store.insert(rows)
    return result


def join_chunks(engine: Engine, chunks: Iterable[tuple[Sequence[Outcome], T]], *, in_flight: int | None = None,
                **options: Any) -> Iterator[tuple[JoinResult, T]]:
    """``join_outcomes(engine, chunk, **options)`` for each ``(chunk, tag)``, yielding ``(result, tag)`` in the
    chunks' order.

    Where the join runs in the database, ``in_flight`` chunks (default ``JOINS_IN_FLIGHT``) are joined at
    once, each in its own transaction on its own connection, while the next chunk is read: one PostgreSQL
    backend per chunk, so a long feed uses the machine's cores rather than one. A chunk is committed when its
    join returns, perhaps before an earlier one; a caller that records progress after each yielded result
    therefore never records a chunk as done that is not, and a resumed feed joins the rest again (stored rows
    count as duplicates). Elsewhere (SQLite: one writer) the chunks are joined one after the other. When a
    join fails, the joins already started are waited for and the error is raised."""
    width = in_flight or JOINS_IN_FLIGHT
    if width < 2 or options.get("answers") is not None or not joins_in_database(engine):
        for chunk, tag in chunks:
            yield join_outcomes(engine, chunk, **options), tag
        return
    pending: collections.deque[tuple[Future[JoinResult], T]] = collections.deque()
    with ThreadPoolExecutor(width, thread_name_prefix="modelyard-join") as pool:
        try:
            for chunk, tag in chunks:
                pending.append((pool.submit(join_outcomes, engine, chunk, **options), tag))
                if len(pending) >= width:
                    future, first = pending.popleft()
                    yield future.result(), first
            while pending:
                future, first = pending.popleft()
                yield future.result(), first
        finally:
            for future, _ in pending:
                future.cancel()  # not started yet; the running ones finish before the pool closes


def _unknown(o: Outcome, index: int, window: float, now: datetime) -> UnknownRequestError:
    if o.key is None:
        row = f" (row {o.row})" if o.row else ""
        return UnknownRequestError(f"no logged prediction for request id '{o.request_id}'{row}",
                                   field="request_id", row=index)
    return UnknownRequestError(f"no logged prediction for entity key {dict(o.key)} within {window:g}s before "
                               f"{o.at or now}", field="key", row=index)


def _key_of(o: Outcome) -> tuple[tuple[str, str], ...] | None:
    return None if o.key is None else tuple((c, key_text(v)) for c, v in sorted(o.key.items()))


def _join_in_database(engine: Engine, outcomes: Sequence[Outcome], *, model: str | None, source: str,
                      strict: bool, window: float, late_after: float, task_of: TaskOf | None,
                      now: datetime) -> JoinResult:
    """The join done by PostgreSQL: the outcomes go in as one COPY, one statement joins, stores and counts;
    here only the checks that need the model's task (over the distinct actual values, not row by row)."""
    by_key = any(o.key is not None for o in outcomes)
    actuals = [o.actual for o in outcomes]
    stored = [_class_text(a) for a in actuals]
    data = JoinInput(request_ids=[o.request_id for o in outcomes] if not by_key else
                     [o.request_id if o.key is None else None for o in outcomes],
                     rows=[o.row for o in outcomes], actuals=actuals, observed=[o.at for o in outcomes],
                     keys=[_key_of(o) for o in outcomes] if by_key else [],
                     stored_actuals=stored if any(s is not a for s, a in zip(stored, actuals, strict=True)) else None)
    result = JoinResult(received=len(outcomes))
    with database_join(engine, data, model=model, source=source, now=now, late_after=late_after,
                       window=window) as join:
        counts = join.run()
        if strict and counts.unmatched:
            i = counts.unmatched_first[0][0]
            raise _unknown(outcomes[i], i, window, now)  # nothing is stored: the transaction is rolled back
        if task_of is not None and counts.versions:
            bad = _rejected(outcomes, counts.versions, task_of, join.first_versions)
            if bad and strict:
                i = min(bad)
                raise OutcomeError(bad[i], field="actual", row=i)
            if bad:
                counts = join.run(rejected=sorted(bad))  # unusable: kept as unmatched
    for name, found in counts.found.items():
        matched = counts.matched.get(name, 0)
        result.count(name, "matched", matched)
        result.count(name, "duplicate", found - matched)
        result.count(name, "late", counts.late.get(name, 0))
    result.count(model or "", "unmatched", counts.unmatched)
    result.unmatched_ids = [ident for _, ident in counts.unmatched_first][:MAX_LISTED]
    result.rows_stored = counts.rows_stored
    return result


def _rejected(outcomes: Sequence[Outcome], versions: set[tuple[str, int]], task_of: TaskOf,
              first_versions: Callable[[], dict[tuple[str, int], list[int]]]) -> dict[int, str]:
    """Outcomes whose ``actual`` cannot be the truth of the version that answered them: index → why."""
    specs = {pair: task_of(*pair) for pair in versions}
    kinds = {(task, None if classes is None else tuple(map(str, classes))) for task, classes in specs.values()}
    if len(kinds) == 1:  # one task (and class list) for every version joined: check every outcome against it
        task, classes = next(iter(specs.values()))
        return _invalid(outcomes, range(len(outcomes)), task, classes)
    bad: dict[int, str] = {}
    for pair, indices in first_versions().items():
        bad.update(_invalid(outcomes, indices, *specs.get(pair) or task_of(*pair)))
    return bad


def _invalid(outcomes: Sequence[Outcome], indices: Sequence[int], task: str,
             classes: Sequence[Any] | None) -> dict[int, str]:
    """``check_actual`` over ``indices``: once per distinct value, or all at once for numbers."""
    values = [outcomes[i].actual for i in indices]
    if task == "regression" and {type(v) for v in values} <= {int, float}:
        try:
            if math.isfinite(math.fsum(values)):
                return {}
        except OverflowError:
            pass
    problems: dict[tuple[type, Any], str | None] | None
    try:
        distinct = set(zip(map(type, values), values, strict=True))
    except TypeError:  # an object or a list among them: checked one by one
        problems = None
    else:
        problems = {key: check_actual(key[1], task, classes) for key in distinct}
    if problems is not None and not any(problems.values()):
        return {}
    out = {}
    for i, v in zip(indices, values, strict=True):
        problem = check_actual(v, task, classes) if problems is None else problems.get((type(v), v))
        if problem is not None:
            out[i] = problem
    return out


def _answered_first(rec: PredictionRow) -> tuple[bool, str, int]:
    """The answer's record before a shadow's or mirror's: the one an outcome's type is checked against."""
    return rec["route"] in ("shadow", "mirror"), str(rec["route"]), int(rec["version"])


def _values(rec: PredictionRow) -> list[Any]:
    cached = rec.get("_values")
    if cached is None:
        cached = rec["_values"] = decode_outputs(rec.get("outputs"))
    return list(cached)


def _proba(rec: PredictionRow, row: int) -> Any:
    proba = (rec.get("meta") or {}).get("probabilities")
    return proba[row] if isinstance(proba, list) and len(proba) > row else None


def _join_by_key(log: SqlPredictionStore, model: str, items: list[tuple[int, Outcome]], window: float,
                 now: datetime) -> tuple[list[_Match], list[tuple[int, Outcome, str]]]:
    """The latest logged row with the outcome's key values within ``window`` seconds before its time."""
    times = [o.at or now for _, o in items]
    since, until = min(times) - timedelta(seconds=window), max(times) + timedelta(microseconds=1)
    records = log.select(model, since=since, until=until, limit=None)
    by_request: dict[str, list[PredictionRow]] = defaultdict(list)
    index: dict[tuple[tuple[str, str], ...], list[tuple[datetime, str, int]]] = defaultdict(list)
    columns = {tuple(sorted(o.key or {})) for _, o in items}
    for rec in records:
        if rec.get("error") is not None:
            continue
        by_request[str(rec["request_id"])].append(rec)
        inputs = rec.get("inputs")
        if not isinstance(inputs, list) or rec["route"] in ("shadow", "mirror"):
            continue
        for row, values in enumerate(inputs):
            if not isinstance(values, dict):
                continue
            for cols in columns:
                if all(c in values for c in cols):
                    index[tuple((c, key_text(values[c])) for c in cols)].append(
                        (rec["ts"], str(rec["request_id"]), row))
    matched, missing = [], []
    for (i, o), at in zip(items, times, strict=True):
        wanted = tuple((c, key_text(v)) for c, v in sorted((o.key or {}).items()))
        lo = at - timedelta(seconds=window)
        hits = [h for h in index.get(wanted, ()) if lo <= h[0] <= at]
        ident = ",".join(f"{c}={v}" for c, v in wanted)
        if not hits:
            missing.append((i, o, ident))
            continue
        _, request_id, row = max(hits)
        recs = sorted((r for r in by_request[request_id] if len(_values(r)) > row), key=_answered_first)
        matched.append(_Match(i, Outcome(o.actual, request_id, row, None, o.at), request_id, recs))
    return matched, missing


def task_of_registry(registry: Registry) -> TaskOf:
    """``TaskOf`` from the versions' manifests (read once per version: versions are immutable)."""
    cache: dict[tuple[str, int], tuple[str, list[Any] | None]] = {}

    def task_of(model: str, version: int) -> tuple[str, list[Any] | None]:
        if (model, version) not in cache:
            manifest = registry.get_version(model, version).manifest
            classes = manifest.output_schema.classes
            cache[(model, version)] = (manifest.task, list(classes) if classes is not None else None)
        return cache[(model, version)]

    return task_of


def _parse_time(value: Any, index: int) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequestError("'at' must be an ISO 8601 time", field="at", row=index)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequestError(f"'at' {value!r} is not an ISO 8601 time", field="at", row=index) from None
    if not 1970 <= at.year <= 9000:
        raise BadRequestError(f"'at' {value!r} is not a plausible time", field="at", row=index)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def parse_outcome(item: Any, index: int) -> Outcome:
    """One outcome object (``{request_id, row?, actual}`` or ``{key: {column: value}, at?, actual}``)."""
    if not isinstance(item, dict):
        raise BadRequestError("each outcome must be an object like {\"request_id\": ..., \"actual\": ...}",
                              field="outcomes", row=index)
    unknown = sorted(set(item) - {"request_id", "row", "actual", "key", "at"})
    if unknown:
        raise BadRequestError(f"unknown field '{unknown[0]}' in an outcome", field=unknown[0], row=index)
    if "actual" not in item:
        raise BadRequestError("an outcome needs 'actual', the true value", field="actual", row=index)
    row = item.get("row", 0)
    if isinstance(row, bool) or not isinstance(row, int) or not 0 <= row < 2**31:
        raise BadRequestError("'row' must be a row index (an integer from 0)", field="row", row=index)
    at = _parse_time(item.get("at"), index)
    if "key" in item:
        key = item["key"]
        if "request_id" in item:
            raise BadRequestError("an outcome names its row by 'request_id' or by 'key', not both",
                                  field="key", row=index)
        if not isinstance(key, dict) or not key or any(isinstance(v, dict | list) for v in key.values()):
            raise BadRequestError("'key' must be an object of input columns and values, e.g. {\"id\": 17}",
                                  field="key", row=index)
        if any("\x00" in c or (isinstance(v, str) and "\x00" in v) for c, v in key.items()):
            raise BadRequestError("'key' must not hold a NUL character", field="key", row=index)
        return Outcome(item["actual"], None, 0, key, at)
    rid = item.get("request_id")
    if not isinstance(rid, str) or not rid or len(rid) > 100 or "\x00" in rid:
        raise BadRequestError("'request_id' must be the request id a prediction answered with (a string)",
                              field="request_id", row=index)
    return Outcome(item["actual"], rid, row, None, at)


@dataclass(frozen=True)
class FeedbackBody:
    outcomes: list[Outcome]
    model: str | None = None
    window: float = DEFAULT_KEY_WINDOW


def parse_feedback(body: Any) -> FeedbackBody:
    """``[outcome, ...]`` or ``{"outcomes": [...], "model"?: name, "window"?: "1h"}`` (model and window for
    outcomes by entity key)."""
    model: str | None = None
    window = DEFAULT_KEY_WINDOW
    if isinstance(body, dict):
        unknown = sorted(set(body) - {"outcomes", "model", "window"})
        if unknown:
            raise BadRequestError(f"unknown field '{unknown[0]}'", field=unknown[0])
        model = body.get("model")
        if model is not None and (not isinstance(model, str) or not model or "\x00" in model):
            raise BadRequestError("'model' must be a model name", field="model")
        if body.get("window") is not None:
            try:
                window = parse_duration(body["window"], what="window").total_seconds()
            except (ModelyardError, OverflowError, ValueError, TypeError) as exc:
                raise BadRequestError(getattr(exc, "message", str(exc)), field="window") from None
            window = min(window, MAX_KEY_WINDOW)  # any duration is taken; a key looks back at most a year
        body = body.get("outcomes")
    if not isinstance(body, list) or not body:
        raise BadRequestError('the body must be a non-empty list of outcomes, or {"outcomes": [...]}',
                              field="outcomes")
    return FeedbackBody([parse_outcome(item, i) for i, item in enumerate(body)], model, window)
