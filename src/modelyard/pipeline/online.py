"""Online learning: a spec's pipeline updated with ``partial_fit`` from labelled events, one range at a time.

No broker here (``stream/learner.py`` owns the loop over JetStream): ``OnlineLearner`` takes events in
stream order (sequence, id, JSON bytes) and is a pure function of them, so replaying a version's recorded
range on top of its parent rebuilds it bit for bit (``reproduce_online`` in pipeline/reproduce.py).

What is deterministic, and why:

- an event is *held out* (never learnt; the version's metrics and reference set) when its stream sequence is
  a multiple of ``[training] holdout_every``; every other good event is learnt;
- the preprocessing is fitted on the chain's first ``warmup`` learnt events, then frozen (with
  ``preprocessing = "incremental"`` a scaler that has ``partial_fit`` keeps learning, chunk by chunk);
- learnt events go to ``partial_fit`` in chunks of exactly ``batch_size``, counted from the start of the
  range; the remainder is learnt when the range is cut, so how events were fetched does not matter;
- with ``publish_every`` a range ends exactly at its N-th good event (learnt or held out); ``feed`` stops
  there. A time trigger (``publish_minutes``) ends a range wherever it is: the range is recorded either way.

A bad event (not JSON, not an object, a missing or unusable outcome, a value the schema refuses) is
returned with the reason and counted; nothing an event contains raises.
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import joblib
import numpy as np
import orjson
import pandas as pd
from scipy import sparse
from sklearn.base import is_classifier
from sklearn.exceptions import UndefinedMetricWarning

from modelyard.bundle import Environment, GitState, Lineage, Manifest, TrainingCost
from modelyard.errors import SchemaError, SpecError
from modelyard.pipeline.assemble import assemble_bundle
from modelyard.pipeline.build import build_pipeline
from modelyard.pipeline.evaluate import DEFAULT_METRICS, check_metric_names, evaluate
from modelyard.pipeline.lineage import StreamLineage, environment
from modelyard.pipeline.spec import TrainSpec
from modelyard.runtime.columns import validate_columns
from modelyard.runtime.partial import row_problems
from modelyard.schema import ColumnSchema, InputSchema

_OUTCOME_TYPES = frozenset({int, float})  # what a numeric outcome may be in JSON (bool is not)


class Event(NamedTuple):
    """One labelled event as the stream holds it: its stream sequence, its id and its raw JSON (a tuple: a
    learner makes tens of thousands a second)."""

    seq: int
    id: str
    data: bytes


@dataclass(frozen=True)
class Rejected:
    event: Event
    reason: str
    field: str | None = None


@dataclass
class Cut:
    """One version's worth of learning: a copy of the pipeline and what the range held."""

    pipeline: Any
    first_seq: int
    last_seq: int
    learnt: int
    held_out: int
    dead_lettered: int
    X_fit: pd.DataFrame  # the range's most recent learnt events (the input profile)
    y_fit: np.ndarray
    X_holdout: pd.DataFrame  # its most recent held-out events (metrics and reference set)
    y_holdout: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)
    model_bytes: bytes = b""  # joblib's dump of ``pipeline``: the version's model.joblib, byte for byte

    @property
    def messages(self) -> int:
        return self.learnt + self.held_out + self.dead_lettered


def is_clusterer(estimator: Any) -> bool:
    return getattr(estimator, "_estimator_type", None) == "clusterer" or (
        hasattr(estimator, "n_clusters") and not is_classifier(estimator))


def check_online_spec(spec: TrainSpec) -> None:
    """What ``[training] mode = "online"`` needs beyond a valid spec (one clear ``SpecError`` otherwise)."""
    t = spec.training
    if t.mode != "online":
        raise SpecError(f"{spec.name}: [training] mode is {t.mode!r}; modelyard learn needs mode = \"online\"")
    if spec.selection.method != "none":
        raise SpecError(f"{spec.name}: selection.method = {spec.selection.method!r} needs a fit on all the data; "
                        "an online spec uses method = \"none\"")
    estimator = build_pipeline(spec).steps[-1][1]
    if is_classifier(estimator) and not t.classes:
        raise SpecError(f"{spec.name}: training.classes: an online classifier must declare every label "
                        "(partial_fit learns a fixed set of classes)")
    if t.publish_every is not None and t.publish_every < 2 * t.holdout_every:
        raise SpecError(f"{spec.name}: training.publish_every ({t.publish_every}) must hold at least two "
                        f"held-out events (2 * holdout_every = {2 * t.holdout_every})")


def event_schema(spec: TrainSpec) -> InputSchema:
    """The columns every event must carry, typed from the spec (missing values allowed: they are imputed)."""
    columns = [ColumnSchema(name=c, kind="numeric", dtype="float64", nullable=True) for c in spec.features.numeric]
    columns += [ColumnSchema(name=c, kind="categorical", dtype="object", nullable=True)
                for c in spec.features.categorical]
    return InputSchema(columns=columns, unseen_categories="allow")


class OnlineLearner:
    """The state between two cuts of one chain: a pipeline (fresh, or a parent version's) and the open range."""

    def __init__(self, spec: TrainSpec, pipeline: Any | None = None) -> None:
        check_online_spec(spec)
        self.spec = spec
        self.training = spec.training
        self.pipeline = pipeline if pipeline is not None else build_pipeline(spec)
        self.fitted = pipeline is not None
        self.schema = event_schema(spec)
        self.target = spec.data.target
        self._frozen = self.training.preprocessing == "frozen"
        self._use(self.pipeline)
        self.clusterer = is_clusterer(self.model)
        self.classifier = is_classifier(self.model)
        self.classes = None if not self.classifier else np.asarray(self.training.classes)
        self._known = None if self.classes is None else set(self.classes.tolist())
        self._pending: list[tuple[Any, np.ndarray]] = []  # learnt events not yet partial_fit (see _early)
        self._pending_rows = 0
        self.learnt_total = 0  # in this chain (the warm-up counts these)
        task = "classification" if self.classifier else "regression"
        names = spec.metrics or DEFAULT_METRICS[task]
        if self.classifier and len(self.training.classes or []) > 2 and not spec.metrics:
            names = [n for n in names if n != "roc_auc"]
        if not self.clusterer:
            check_metric_names(names, task)
        self.task, self.metric_names = task, names
        self._open_range()

    def _use(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self._pre = pipeline.steps[0][1]
        self.model = pipeline.steps[-1][1]

    # -- the open range ------------------------------------------------------------------------------------
    def _open_range(self) -> None:
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.learnt = self.held_out = self.dead_lettered = 0
        keep = self.training.holdout_rows
        self._fit_rows: deque[tuple[pd.DataFrame, np.ndarray]] = deque()
        self._fit_count = 0
        self._hold: deque[tuple[pd.DataFrame, np.ndarray]] = deque()
        self._hold_count = 0
        self._keep = keep

    @property
    def good(self) -> int:
        """Good events (learnt or held out) in the open range."""
        return self.learnt + self.held_out

    @property
    def ready(self) -> bool:
        """A version can be cut now: the preprocessing is fitted and at least two events are held out."""
        return (self.fitted or self._pending_rows >= self.training.warmup) and self.held_out >= 2

    @property
    def due(self) -> bool:
        """The count trigger: ``publish_every`` good events in the range, and ready."""
        every = self.training.publish_every
        return every is not None and self.good >= every and self.ready

    # -- feeding -------------------------------------------------------------------------------------------
    def feed(self, events: Sequence[Event]) -> tuple[int, list[Rejected]]:
        """Learn from ``events`` in order; stop right after the event that makes the range due.

        Returns how many events were consumed (the caller feeds the rest after cutting) and the rejected
        ones among them, in stream order. The whole call is column-wise: one decode pass, one schema
        validation, one preprocessing transform (frozen preprocessing), whatever the number of events.
        """
        if not events:
            return 0, []
        records, labels, where, rejected = self._decode(events)
        frame, kept, bad = self._validate(records)
        rejected += [(where[row], Rejected(events[where[row]], reason, column))
                     for row, (reason, column) in bad.items()]
        positions = np.asarray(where, dtype=np.int64)[kept]
        seqs = np.fromiter((events[int(p)].seq for p in positions), dtype=np.int64, count=len(positions))
        hold = seqs % self.training.holdout_every == 0
        consumed = self._stop_at(positions, hold, len(events))
        take = positions < consumed
        rejected = sorted((item for item in rejected if item[0] < consumed), key=lambda item: item[0])
        self._note_range(events[0].seq, events[consumed - 1].seq)
        self.dead_lettered += len(rejected)
        if take.any():
            y = self._labels(np.asarray(labels, dtype=object)[kept][take])
            good = frame if take.all() else frame.iloc[np.flatnonzero(take)].reset_index(drop=True)
            hold = hold[take]
            if hold.any():
                self._remember(self._hold, good[hold].reset_index(drop=True), y[hold], "_hold_count")
                self.held_out += int(hold.sum())
            if (~hold).any():
                learn_X = good if not hold.any() else good[~hold].reset_index(drop=True)
                learn_y = y[~hold]
                self._remember(self._fit_rows, learn_X, learn_y, "_fit_count")
                self._pending.append((self._early(learn_X), learn_y))
                self._pending_rows += len(learn_X)
                self.learnt += len(learn_X)
                self.learnt_total += len(learn_X)
                self._learn(flush=False)
        return consumed, [r for _, r in rejected]

    def _decode(self, events: Sequence[Event]
                ) -> tuple[list[dict[str, Any]], list[Any], list[int], list[tuple[int, Rejected]]]:
        """The JSON objects of ``events`` with their outcomes and positions, and the events refused so far.

        The common case (every event a JSON object with a usable outcome) is checked for the whole batch at
        once; otherwise each event is looked at and the bad ones get their reason.
        """
        loads = orjson.loads
        try:
            values: list[Any] = list(map(loads, [e.data for e in events]))
        except orjson.JSONDecodeError:
            values = []
        if len(values) == len(events) and all(type(v) is dict for v in values):
            target = self.target
            labels = [v.get(target) for v in values]
            if self._labels_usable(labels):
                return values, labels, list(range(len(events))), []
        records: list[dict[str, Any]] = []
        labels = []
        where: list[int] = []
        rejected: list[tuple[int, Rejected]] = []
        for i, event in enumerate(events):
            try:
                value = values[i] if values else loads(event.data)
            except orjson.JSONDecodeError as exc:
                rejected.append((i, Rejected(event, f"not valid JSON: {exc}")))
                continue
            if not isinstance(value, dict):
                rejected.append((i, Rejected(event, f"expected a JSON object of column values, got "
                                                    f"{type(value).__name__}")))
                continue
            label = value.get(self.target)
            problem = self._label_problem(label)
            if problem is not None:
                rejected.append((i, Rejected(event, problem, self.target)))
                continue
            records.append(value)
            labels.append(label)
            where.append(i)
        return records, labels, where, rejected

    def _labels_usable(self, labels: list[Any]) -> bool:
        """Every outcome usable (``_label_problem`` of each is None), decided column-wise where it can be."""
        if self.clusterer:
            return True
        if self._known is None:
            if not set(map(type, labels)) <= _OUTCOME_TYPES:
                return False
            try:
                return bool(np.isfinite(np.array(labels, dtype=np.float64)).all())
            except (OverflowError, ValueError, TypeError):
                return False
        return all(self._label_problem(label) is None for label in labels)

    def _label_problem(self, label: Any) -> str | None:
        """Why an event's outcome cannot be learnt, or None."""
        if self.clusterer:
            return None
        if label is None:
            return f"the outcome '{self.target}' is missing"
        if self._known is not None:
            if isinstance(label, (list, dict)) or label not in self._known:
                return f"the outcome {label!r} is not one of training.classes {sorted(map(str, self._known))}"
            return None
        finite = False
        if not isinstance(label, bool) and isinstance(label, (int, float)):
            try:
                finite = math.isfinite(label)
            except OverflowError:  # an integer too large for a float
                finite = False
        if not finite:
            return f"the outcome '{self.target}' must be a finite number, got {label!r}"
        return None

    def _validate(self, records: list[dict[str, Any]]
                  ) -> tuple[pd.DataFrame, np.ndarray, dict[int, tuple[str, str | None]]]:
        """The schema's frame of the records it accepts, their indexes, and the refused ones' reasons."""
        kept = np.arange(len(records))
        bad: dict[int, tuple[str, str | None]] = {}
        while len(kept):  # the schema names every bad value, but a row of the wrong shape hides the others
            try:
                return validate_columns(self.schema, [records[i] for i in kept]).to_frame(), kept, bad
            except SchemaError as exc:
                problems = row_problems(exc)
                if not problems:
                    raise
            bad.update({int(kept[p.row]): (p.reason, p.field) for p in problems})
            kept = np.delete(kept, [p.row for p in problems])
        return pd.DataFrame(), kept, bad

    def _stop_at(self, positions: np.ndarray, hold: np.ndarray, n_events: int) -> int:
        """How many events to consume: all, or up to the good event that makes the range due."""
        every = self.training.publish_every
        if every is None or len(positions) == 0:
            return n_events
        good = self.good + np.arange(1, len(positions) + 1)
        held = self.held_out + np.cumsum(hold)
        fitted = np.full(len(positions), True) if self.fitted else (
            self._pending_rows + np.cumsum(~hold) >= self.training.warmup)
        due = np.flatnonzero((good >= every) & (held >= 2) & fitted)
        return n_events if len(due) == 0 else int(positions[due[0]]) + 1

    def _note_range(self, first: int, last: int) -> None:
        if self.first_seq is None:
            self.first_seq = first
        self.last_seq = last

    def _labels(self, y: np.ndarray) -> np.ndarray:
        if self.classes is not None:
            return y.astype(self.classes.dtype)
        if self.clusterer:
            return y
        return y.astype("float64")

    def _remember(self, buffer: deque[tuple[pd.DataFrame, np.ndarray]], X: pd.DataFrame, y: np.ndarray,
                  counter: str) -> None:
        """Keep the range's most recent ``holdout_rows`` events of a kind (whole frames, trimmed at the cut)."""
        buffer.append((X, y))
        setattr(self, counter, getattr(self, counter) + len(X))
        while buffer and getattr(self, counter) - len(buffer[0][0]) >= self._keep:
            setattr(self, counter, getattr(self, counter) - len(buffer.popleft()[0]))

    # -- learning ------------------------------------------------------------------------------------------
    def _early(self, X: pd.DataFrame) -> Any:
        """Learnt events as they wait for ``partial_fit``: already transformed when the preprocessing is fitted
        and frozen (it is row by row, so one transform of the whole feed gives the same rows as one per
        chunk), else as they came (the warm-up has not fitted it yet, or the scalers keep learning)."""
        return self._pre.transform(X) if self.fitted and self._frozen else X

    def _learn(self, *, flush: bool) -> None:
        if not self.fitted:
            if self._pending_rows < self.training.warmup:
                return
            X, _ = self._take(self.training.warmup, peek=True)
            self._pre.fit(X)
            self.fitted = True
            if self._frozen and self._pending:
                X, y = self._take(self._pending_rows, peek=True)
                self._pending = [(self._pre.transform(X), y)]
        size = self.training.batch_size
        while self._pending_rows >= size or (flush and self._pending_rows):
            X, y = self._take(min(size, self._pending_rows))
            self._partial_fit(X, y)

    def _take(self, n: int, *, peek: bool = False) -> tuple[Any, np.ndarray]:
        """The first ``n`` pending learnt events (removed unless ``peek``): a frame, or transformed rows."""
        parts, labels, got, i = [], [], 0, 0
        while got < n:
            X, y = self._pending[i]
            need = n - got
            if len(y) <= need:
                parts.append(X)
                labels.append(y)
                got += len(y)
                i += 1
            else:
                parts.append(_rows(X, 0, need))
                labels.append(y[:need])
                got += need
                if not peek:
                    self._pending[i] = (_rows(X, need, len(y)), y[need:])
        if not peek:
            del self._pending[:i]
            self._pending_rows -= n
        return _stacked(parts), labels[0] if len(labels) == 1 else np.concatenate(labels)

    def _partial_fit(self, X: Any, y: np.ndarray) -> None:
        if self._frozen:
            Xt = X  # transformed when it was fed (``_early``)
        else:
            _update_scalers(self._pre, X)
            Xt = self._pre.transform(X)
        kwargs: dict[str, Any] = {}
        if self.classes is not None:
            kwargs["classes"] = self.classes
        try:
            if self.clusterer:
                self.model.partial_fit(Xt)
            else:
                self.model.partial_fit(Xt, y, **kwargs)
        except Exception as exc:
            raise SpecError(f"{self.spec.model.estimator}.partial_fit failed: {exc}".splitlines()[0]) from exc

    # -- cutting -------------------------------------------------------------------------------------------
    def cut(self) -> Cut | None:
        """Close the range (its remaining learnt events go to ``partial_fit``) and snapshot it; None when no
        version can be cut yet (see ``ready``)."""
        if not self.ready or self.first_seq is None or self.last_seq is None:
            return None
        self._learn(flush=True)
        # The version is a deep copy, dumped here (``model_bytes``, written as they are wherever the bundle
        # is written); learning goes on from the state as it loads. Either changes how objects are shared
        # inside the pipeline, and with it the bytes of a later dump: a replay (reproduce.py: a deep copy
        # of the loaded parent) takes the same steps, so it dumps the same bytes.
        pipeline = copy.deepcopy(self.pipeline)
        model_bytes = _dumped(pipeline)
        self._use(joblib.load(io.BytesIO(_dumped(self.pipeline))))
        X_fit, y_fit = _joined(self._fit_rows, self._keep)
        X_hold, y_hold = _joined(self._hold, self._keep)
        cut = Cut(pipeline, self.first_seq, self.last_seq, self.learnt, self.held_out, self.dead_lettered,
                  X_fit, y_fit, X_hold, y_hold, self._metrics(pipeline, X_hold, y_hold), model_bytes)
        self._open_range()
        return cut

    def _metrics(self, pipeline: Any, X: pd.DataFrame, y: np.ndarray) -> dict[str, float]:
        if self.clusterer:
            return {"inertia": float(-pipeline.score(X))}
        with warnings.catch_warnings():  # a small window may hold one class: the metric says so, not a warning
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            return evaluate(pipeline, X, y, self.task, self.metric_names)


def _rows(X: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a pending part (a frame or transformed rows), numbered from 0."""
    if isinstance(X, pd.DataFrame):
        return X.iloc[start:stop].reset_index(drop=True)
    return X[start:stop]


def _stacked(parts: list[Any]) -> Any:
    if len(parts) == 1:
        return parts[0].reset_index(drop=True) if isinstance(parts[0], pd.DataFrame) else parts[0]
    if isinstance(parts[0], pd.DataFrame):
        return pd.concat(parts, ignore_index=True)
    if sparse.issparse(parts[0]):
        return sparse.vstack(parts, format="csr")
    return np.concatenate(parts)


def _dumped(pipeline: Any) -> bytes:
    """What ``joblib.dump(pipeline, path)`` writes (the same bytes as to a file)."""
    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer)
    return buffer.getvalue()


def _update_scalers(pre: Any, X: pd.DataFrame) -> None:
    """``preprocessing = "incremental"``: every scaler step with ``partial_fit`` learns from ``X`` too."""
    for _name, transformer, columns in pre.transformers_:
        steps = getattr(transformer, "steps", None)
        if not steps or not isinstance(columns, list):
            continue
        part = X[columns]
        for n, (_step, est) in enumerate(steps):
            if n and hasattr(est, "partial_fit") and not hasattr(est, "categories_"):
                before = steps[:n]
                data = part
                for _b, prior in before:
                    data = prior.transform(data)
                est.partial_fit(data)


def _joined(buffer: deque[tuple[pd.DataFrame, np.ndarray]], keep: int) -> tuple[pd.DataFrame, np.ndarray]:
    frames = [X for X, _ in buffer]
    X = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    y = np.concatenate([y for _, y in buffer])
    return X.iloc[-keep:].reset_index(drop=True), y[-keep:]


@dataclass(frozen=True)
class Origin:
    """Where a chain's events come from (the stream half of its versions' lineage)."""

    broker: str
    stream: str
    subject: str
    consumer: str
    dead_letter_subject: str | None = None


def cut_lineage(spec: TrainSpec, cut: Cut, origin: Origin, parent_version: int | None,
                environment_: Environment | None = None, git: GitState | None = None) -> Lineage:
    """The lineage of the version a cut becomes: the spec, and the exact stream range with its counts."""
    stream = StreamLineage(broker=origin.broker, stream=origin.stream, subject=origin.subject,
                           consumer=origin.consumer, first_seq=cut.first_seq, last_seq=cut.last_seq,
                           messages=cut.messages, learnt=cut.learnt, held_out=cut.held_out,
                           dead_lettered=cut.dead_lettered, parent_version=parent_version,
                           dead_letter_subject=origin.dead_letter_subject)
    return Lineage.model_validate({  # ``stream`` is a key Lineage keeps without typing it (see lineage.py)
        "source": f"stream:{origin.subject}", "spec": spec.as_dict(),
        "spec_dir": str(spec.base_dir) if spec.base_dir else None, "seed": spec.seed,
        "git": git, "environment": environment_ or environment(spec.model.estimator),
        "stream": stream.model_dump(mode="json")})


def write_cut_bundle(directory: Path, spec: TrainSpec, cut: Cut, lineage: Lineage,
                     training_cost: TrainingCost | None = None) -> Manifest:
    """A normal bundle of a cut (``assemble.py``): the held-out events are its reference set."""
    return assemble_bundle(
        directory, name=spec.name, pipeline=cut.pipeline, model_bytes=cut.model_bytes or None,
        X_fit=cut.X_fit, X_ref=cut.X_holdout,
        y_ref=cut.y_holdout, y_fit=None if is_clusterer(cut.pipeline.steps[-1][1]) else cut.y_fit,
        target=spec.data.target, metrics=cut.metrics, lineage=lineage, categorical=spec.features.categorical,
        unseen_categories=spec.schema_.unseen_categories, seed=spec.seed, fast_path=spec.training.fast_path,
        training_cost=training_cost, importance=spec.training.importance)
