"""What happens to one prediction request, whatever the protocol: read, route, validate, predict, count, log.

``predict_rows`` is the only place the server calls the model; a protocol module (``v1``, ``v2``) only turns
its wire format into rows and the outcome back into its wire format. Small requests are validated into
column arrays (no DataFrame) and predicted together with concurrent ones (``serve/batching.py``). A request
routed to a canary that fails is answered by the primary (the canary's failure is logged and counted); once
answered, the rows are handed to the shadow queue (``serve/shadow.py``) when a shadow or a mirror should see them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Request

from modelyard.errors import ModelyardError, SchemaError
from modelyard.monitor import metrics
from modelyard.predlog import PredictionLogWriter, PredictionRecord
from modelyard.runtime import Model
from modelyard.runtime.columns import Columns
from modelyard.serve.batching import Batching, in_thread
from modelyard.serve.http import read_json, request_id
from modelyard.serve.routing import Routed, Router

if TYPE_CHECKING:
    from modelyard.serve.shadow import ShadowRunner

log = logging.getLogger("modelyard.serve")
INLINE_ROWS = 64  # up to this many rows are predicted on the event loop; more go to a worker thread


@dataclass
class Parsed:
    """A request body in protocol-neutral form."""

    rows: Sequence[Mapping[str, Any]]
    probabilities: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    complete: Callable[[Model], Sequence[Mapping[str, Any]]] | None = None  # rows that need the schema


@dataclass
class Outcome:
    request_id: str
    routed: Routed
    parsed: Parsed
    predictions: list[Any]
    probabilities: list[list[float]] | None


@dataclass
class _Result:
    columns: Columns  # the validated rows
    predictions: np.ndarray
    probabilities: np.ndarray | None

    def frame(self) -> dict[str, np.ndarray]:
        """The validated rows, one array per column (built when first asked for: a batched one-row request's
        values are scalars until then)."""
        return self.columns.data


async def predict_rows(model: Model, rows: Sequence[Mapping[str, Any]], probabilities: bool,
                       batching: Batching | None = None, *, alone: bool = False) -> _Result:
    """Validate against the schema, then predict: the one call into the runtime.

    With ``batching``, a small request is validated here (on the event loop: cheaper than a thread hop)
    and joins its version's micro-batch (``alone``: no other request is in progress, see
    ``MicroBatcher.submit``); a larger one, or any request without batching past ``INLINE_ROWS``, is
    validated and predicted in one call in a worker thread.
    """
    if batching is not None and batching.joins(model, len(rows), probabilities):
        columns = _validate(model, rows)
        predictions, proba = await batching.predict(model, columns, probabilities, alone=alone)
        return _Result(columns, predictions, proba)
    if batching is None and len(rows) <= INLINE_ROWS:
        return predict_now(model, rows, probabilities)
    return await in_thread(predict_now, model, rows, probabilities)


def _validate(model: Model, rows: Sequence[Mapping[str, Any]]) -> Columns:
    try:
        return model.validate_columns(rows)
    except ModelyardError:
        raise
    except Exception as exc:  # input pandas could not digest: still the caller's rows, still a 422
        log.exception("validating rows for %s v%s failed unexpectedly", model.name, model.version)
        raise SchemaError(f"the rows could not be read: {exc}", field="instances") from exc


def predict_now(model: Model, rows: Sequence[Mapping[str, Any]], probabilities: bool) -> _Result:
    columns = _validate(model, rows)
    predictions = model.predict_frame(columns)
    proba = model.predict_proba_frame(columns) if probabilities else None
    return _Result(columns, predictions, proba)


def observe_success(routed: Routed, result: _Result, rows: Sequence[Mapping[str, Any]], seconds: float) -> None:
    """Every metric of one answered request: count and latency, the predicted values, the per-feature counts
    of missing and out-of-range inputs. The only monitoring hook on the success path: it queues the answer,
    counted in a later loop turn with the others answered meanwhile (``metrics.observe_answer``)."""
    model = routed.model
    metrics.observe_answer(model.name, str(model.version), routed.route, seconds, result.predictions,
                           model.classes_, result.frame, model.schema, rows)


def observe_failure(routed: Routed | None, exc: ModelyardError, seconds: float) -> None:
    """A refused request's count, with its status (``routed`` is None when it failed before routing)."""
    if routed is None:
        metrics.observe_request("", "", "", exc.status_code, seconds, exc.code)
    else:
        model = routed.model
        metrics.observe_request(model.name, str(model.version), routed.route, exc.status_code, seconds, exc.code)


def plain(values: np.ndarray) -> list[Any]:
    """JSON-ready values: NaN and infinities become null."""
    out: list[Any] = np.asarray(values).tolist()
    if values.dtype.kind != "f":
        return out
    # a few values (one-row requests): checked in Python, cheaper than two numpy calls
    finite = (all(map(math.isfinite, out)) if values.ndim == 1 and len(out) <= 64
              else bool(np.isfinite(values).all()))
    if not finite:
        out = [v if v == v and v not in (float("inf"), float("-inf")) else None for v in out]
    return out


class InferenceService:
    """Protocol-neutral handling of prediction requests, shared by v1 and v2."""

    def __init__(self, router: Router, writer: PredictionLogWriter | None, *, max_body_bytes: int,
                 batching: Batching | None = None, shadow: ShadowRunner | None = None) -> None:
        self.router = router
        self.writer = writer
        self.max_body_bytes = max_body_bytes
        self.batching = batching
        self.shadow = shadow
        self._canary_failing: set[tuple[str, int]] = set()
        self.in_flight = 0  # requests between the start and the end of ``infer``

    async def handle(
        self, request: Request, ref: str, parse: Callable[[Any], Parsed], protocol: str,
        read: Callable[[Request, int], Awaitable[Any]] = read_json,
    ) -> Outcome:
        """One REST request: its id from the headers, its body read by ``read`` and parsed by ``parse``."""

        async def parsed() -> Parsed:
            return parse(await read(request, self.max_body_bytes))

        return await self.infer(ref, lambda: request_id(request), request.headers, parsed, protocol)

    async def infer(
        self, ref: str, rid_of: Callable[[], str], headers: Mapping[str, str],
        parse: Callable[[], Awaitable[Parsed]], protocol: str,
    ) -> Outcome:
        """Any transport's request (REST, gRPC): route, predict, count, log; the one path to ``predict_rows``."""
        self.in_flight += 1
        try:
            if self.in_flight == 1:  # let the requests that arrived with this one start first, so that a
                await asyncio.sleep(0)  # request that then finds itself alone is (see ``_predict``, ``_commit``)
            return await self._infer(ref, rid_of, headers, parse, protocol)
        finally:
            self.in_flight -= 1

    @property
    def alone(self) -> bool:
        """One request in flight: it is predicted in its own turn (not handed to the batch's dispatcher) and
        its records are written at once (no group commit to share)."""
        return self.in_flight == 1

    async def _infer(
        self, ref: str, rid_of: Callable[[], str], headers: Mapping[str, str],
        parse: Callable[[], Awaitable[Parsed]], protocol: str,
    ) -> Outcome:
        started = time.perf_counter()
        routed: Routed | None = None
        parsed: Parsed | None = None
        rid = ""
        logged: list[PredictionRecord] = []
        try:
            rid = rid_of()
            parsed = await parse()
            routed = await self.router.select(ref, request_id=rid, headers=headers, rows=parsed.rows)
            try:
                result = await self._predict(routed.model, parsed)
            except Exception as exc:
                if routed.primary is None:
                    raise
                # The canary failed: the primary answers. Rows the primary refuses too are the caller's
                # mistake (raised from here), not a canary error.
                canary, routed = routed, routed.fall_back()
                canary_seconds = time.perf_counter() - started
                result = await self._predict(routed.model, parsed)
                logged += self._record_canary_error(rid, canary, parsed, exc, canary_seconds, protocol)
        except ModelyardError as exc:
            await self._commit(self._record_failure(rid, routed, parsed, exc, started, protocol), routed, started)
            observe_failure(routed, exc, time.perf_counter() - started)
            raise
        outcome = Outcome(rid, routed, parsed, plain(result.predictions),
                          None if result.probabilities is None else result.probabilities.tolist())
        seconds = time.perf_counter() - started
        await self._commit([*logged, *self._record_success(outcome, seconds, protocol)], routed, started)
        observe_success(routed, result, parsed.rows, seconds)  # queued: counted once the answer is on its way
        if self.shadow is not None and (routed.shadow or routed.mirror):
            self.shadow.after(outcome, protocol)
        return outcome

    async def _predict(self, model: Model, parsed: Parsed) -> _Result:
        if parsed.complete is not None:
            parsed.rows = parsed.complete(model)
        if parsed.probabilities and model.task != "classification":
            raise SchemaError(f"{model.name} v{model.version} is a {model.task} model: it has no "
                              "probabilities", field="probabilities")
        return await predict_rows(model, parsed.rows, parsed.probabilities, self.batching, alone=self.alone)

    # ---- bookkeeping: metrics and the prediction log -------------------------------------------------
    async def _commit(self, records: list[PredictionRecord], routed: Routed | None, started: float) -> None:
        """Written ahead before the answer leaves (``LogUnavailableError``, a 503, when it cannot be). Metrics
        are counted after it, with the status the caller gets: a refused request is a 503 there too."""
        if self.writer is not None and records:
            try:
                await self.writer.commit(records, alone=self.alone)
            except ModelyardError as exc:
                observe_failure(routed, exc, time.perf_counter() - started)
                raise

    def _record_success(self, outcome: Outcome, seconds: float, protocol: str) -> list[PredictionRecord]:
        routed = outcome.routed
        model = routed.model
        if self.writer is not None:
            meta: dict[str, Any] = {"protocol": protocol, "ref": _ref(routed), **outcome.parsed.meta}
            if outcome.probabilities is not None:
                meta["probabilities"] = outcome.probabilities
                meta["classes"] = model.classes_
            return [PredictionRecord(
                request_id=outcome.request_id, model=model.name, version=int(model.version or 0),
                route=routed.route, inputs=list(outcome.parsed.rows), outputs=outcome.predictions,
                n_rows=len(outcome.predictions), latency_ms=seconds * 1000.0, meta=meta,
            )]
        return []

    def _record_canary_error(self, rid: str, canary: Routed, parsed: Parsed, exc: Exception, seconds: float,
                             protocol: str) -> list[PredictionRecord]:
        """Counted and logged on route ``canary``: the watcher's error rate reads these records."""
        model = canary.model
        version = int(model.version or 0)
        error = f"{exc.code}: {exc.message}" if isinstance(exc, ModelyardError) else f"{type(exc).__name__}: {exc}"
        metrics.CANARY_ERRORS.labels(model.name, str(version)).inc()
        if (model.name, version) not in self._canary_failing:  # one line per canary version, not per request
            self._canary_failing.add((model.name, version))
            log.warning("canary %s v%d failed on a request, the primary answered it (counted in "
                        "modelyard_canary_errors_total): %s", model.name, version, error)
        if self.writer is not None:
            answered_by = canary.primary.version if canary.primary is not None else None
            return [PredictionRecord(
                request_id=rid, model=model.name, version=version, route=canary.route, inputs=list(parsed.rows),
                outputs=None, n_rows=len(parsed.rows), latency_ms=seconds * 1000.0, error=error,
                meta={"protocol": protocol, "ref": _ref(canary), "answered_by": answered_by, **parsed.meta},
            )]
        return []

    def _record_failure(self, rid: str, routed: Routed | None, parsed: Parsed | None, exc: ModelyardError,
                        started: float, protocol: str) -> list[PredictionRecord]:
        seconds = time.perf_counter() - started
        if routed is None:
            return []
        model = routed.model
        if self.writer is not None and parsed is not None and rid:
            return [PredictionRecord(
                request_id=rid, model=model.name, version=int(model.version or 0), route=routed.route,
                inputs=list(parsed.rows), outputs=None, n_rows=len(parsed.rows), latency_ms=seconds * 1000.0,
                error=f"{exc.code}: {exc.message}",
                meta={"protocol": protocol, "ref": _ref(routed), "status": exc.status_code, **parsed.meta},
            )]
        return []


def _ref(routed: Routed) -> str:
    return f"{routed.name}@{routed.selector}"
