"""Explanations over HTTP: ``POST /v1/models/{name}/explain`` (the predict body, the predict routing) and
``GET /v1/predictions/{request_id}/explain`` (a logged prediction, with the exact version that made it).

The POST is routed like a predict (``serve/routing.py``: aliases, canary split, pinned versions), validated
like one, and logged on the route ``explain`` with the route the router chose in ``meta``; the GET returns
the same document as ``modelyard explain REQUEST_ID --json``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response

from modelyard.errors import ModelyardError
from modelyard.explain import RowExplanation, explainer_for
from modelyard.monitor import metrics
from modelyard.predlog import PredictionRecord, find_request, log_reader
from modelyard.predlog.past import explain_logged, pick_record
from modelyard.runtime import Model
from modelyard.serve import v1
from modelyard.serve.batching import in_thread
from modelyard.serve.http import json_response, read_json, request_id
from modelyard.serve.inference import _validate
from modelyard.serve.routing import Routed
from modelyard.serve.schemas import ERRORS, REQUEST_ID_PARAMETER, PredictRequest, errors, json_body
from modelyard.serve.state import server_state

ROUTE = "explain"
router = APIRouter(prefix="/v1", tags=["explain"])


def explain_now(model: Model, rows: Sequence[Mapping[str, Any]]) -> list[RowExplanation]:
    frame = _validate(model, rows).to_frame()
    return explainer_for(model).explain(frame)


@router.post("/models/{name}/explain", responses={**ERRORS, **errors(501)},
             openapi_extra=json_body(PredictRequest, REQUEST_ID_PARAMETER),
             summary="Explain rows: one attribution per input column, per class for classifiers")
async def explain(name: str, request: Request) -> Response:
    """The body of ``predict``; ``name``, ``name@alias`` or ``name@version`` are routed as for ``predict``."""
    state = server_state(request)
    service = state.service
    started = time.perf_counter()
    rid = request_id(request)
    parsed = v1.parse(await read_json(request, service.max_body_bytes))
    routed = await service.router.select(name, request_id=rid, headers=request.headers, rows=parsed.rows)
    model = routed.model
    try:
        rows = await in_thread(explain_now, model, parsed.rows)
    except ModelyardError as exc:
        _record(state.writer, rid, routed, parsed.rows, None, started, error=exc)
        raise
    predictions = [r.prediction for r in rows]
    _record(state.writer, rid, routed, parsed.rows, predictions, started, explainer=rows[0].explainer if rows
            else None)
    return json_response({"explanations": [r.to_json() for r in rows], "predictions": predictions,
                          "model": {"name": model.name, "version": model.version}, "request_id": rid,
                          "route": routed.route}, 200, rid)


def _record(writer: Any, rid: str, routed: Routed, rows: Sequence[Mapping[str, Any]], outputs: list[Any] | None,
            started: float, *, error: ModelyardError | None = None, explainer: str | None = None) -> None:
    """Metrics and the prediction log, on the route ``explain`` (``meta.routed`` says which route chose it)."""
    model = routed.model
    seconds = time.perf_counter() - started
    status = error.status_code if error is not None else 200
    metrics.observe_request(model.name, str(model.version), ROUTE, status, seconds,
                            error.code if error is not None else None)
    if writer is None:
        return
    meta: dict[str, Any] = {"protocol": "v1", "ref": f"{routed.name}@{routed.selector}", "routed": routed.route}
    if explainer is not None:
        meta["explainer"] = explainer
    writer.submit(PredictionRecord(
        request_id=rid, model=model.name, version=int(model.version or 0), route=ROUTE, inputs=list(rows),
        outputs=outputs, n_rows=len(rows), latency_ms=seconds * 1000.0,
        error=None if error is None else f"{error.code}: {error.message}", meta=meta,
    ))


@router.get("/predictions/{request_id}/explain", responses=errors(
    404, 409, 501, 503, s404="No such request, no answer on that route, or no such row",
    s409="The version no longer gives the logged answer"),
            summary="Explain a logged prediction with the exact version that made it")
async def explain_past(request_id: str, request: Request, row: int = 0, route: str | None = None) -> Response:
    """Replays the logged inputs (a mismatch is a 409), then explains row ``row``: as ``modelyard explain``."""
    state = server_state(request)
    source = log_reader(state.registry.settings, state.registry.engine)
    records = await anyio.to_thread.run_sync(find_request, source, request_id)
    record = pick_record(records, route)
    model = await state.repository.get(record.model, int(record.version))
    past = await in_thread(lambda: explain_logged(state.registry, record, row=row, model=model))
    return json_response(past.to_json())
