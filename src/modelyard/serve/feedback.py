"""``POST /v1/feedback``: the true outcomes of logged predictions, joined to the records that answered.

The body is a list of outcomes, or an object holding one (``{"outcomes": [...], "model": ..., "window":
"1h"}``: the model and window are for outcomes named by an entity key). An outcome names its row by
``request_id`` (and ``row``, 0 by default) or by ``key`` (input columns and values) and ``at``. The call is
all or nothing: a malformed outcome (400), an unknown request id or key (404) or a value of the wrong type
for the model (422) is refused with the one error shape naming the outcome (``row``) and its ``field``,
and nothing is stored. Sending the same outcomes again is harmless: they are counted as duplicates.
"""

from __future__ import annotations

import time
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response

from modelyard.errors import UnknownRequestError
from modelyard.monitor import metrics
from modelyard.predlog.outcomes import JoinResult, join_outcomes, parse_feedback, task_of_registry
from modelyard.serve.http import json_response, read_json
from modelyard.serve.schemas import ERRORS, FeedbackRequest, FeedbackResponse, json_body
from modelyard.serve.state import ServerState, server_state

router = APIRouter(prefix="/v1", tags=["feedback"])


def _join(state: ServerState, body: Any) -> JoinResult:
    parsed = parse_feedback(body)
    if state.task_of is None:
        state.task_of = task_of_registry(state.registry)
    task_of = state.task_of

    def attempt() -> JoinResult:
        return join_outcomes(state.registry.engine, parsed.outcomes, model=parsed.model, source="http",
                             strict=True, window=parsed.window, task_of=task_of)

    if state.writer is not None and any(o.key is not None for o in parsed.outcomes):
        # a key joins the latest prediction in its window, which may still be in this process's segment
        state.writer.flush(timeout=5.0)
    for wait in (0.0, 0.2, 0.5):  # the prediction may still be on its way from the log's segment
        try:
            return attempt()
        except UnknownRequestError:
            if state.writer is None:
                raise
            state.writer.flush(timeout=5.0)
            time.sleep(wait)
    return attempt()


RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ERRORS[400]["model"], "description": "A malformed body or outcome (the error names it)"},
    404: {"model": ERRORS[404]["model"], "description": "An outcome naming a request id or key nothing logged"},
    413: ERRORS[413],
    422: {"model": ERRORS[422]["model"], "description": "An outcome of the wrong type for the model"},
}


@router.post("/feedback", response_model=FeedbackResponse, openapi_extra=json_body(FeedbackRequest),
             responses=RESPONSES,
             summary="Outcomes of logged predictions (by request id and row, or by entity key and time)")
async def feedback(request: Request) -> Response:
    """A list of ``{request_id, row?, actual}`` (or ``{key, at?, actual}``), or ``{"outcomes": [...]}``."""
    state = server_state(request)
    body = await read_json(request, state.service.max_body_bytes)
    result = await anyio.to_thread.run_sync(_join, state, body)
    for model, counts in result.by_model.items():
        for status, count in counts.items():
            metrics.OUTCOMES.labels(model, status).inc(count)
    return json_response(result.to_dict())
