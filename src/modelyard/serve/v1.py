"""REST v1: ``POST /v1/models/{name}/predict`` with ``{"instances": [...]}``, and model listings.

``name`` may be ``name`` (the ``production`` alias), ``name@alias`` or ``name@3``.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from modelyard.durations import DURATION_PATTERN, parse_duration
from modelyard.errors import BadRequestError, SchemaError
from modelyard.monitor.fleet import read_fleet
from modelyard.serve.http import json_response
from modelyard.serve.inference import Outcome, Parsed
from modelyard.serve.schemas import (
    ERRORS,
    LISTED,
    REQUEST_ID_PARAMETER,
    V1_OK,
    ModelList,
    PredictRequest,
    PredictResponse,
    errors,
    json_body,
)
from modelyard.serve.state import server_state

router = APIRouter(prefix="/v1", tags=["v1"])


def parse(body: Any) -> Parsed:
    if not isinstance(body, dict):
        raise SchemaError('the body must be a JSON object like {"instances": [{...}]}', field="instances")
    instances = body.get("instances")
    if not isinstance(instances, list):
        raise SchemaError("'instances' must be a list of row objects ({column: value})", field="instances")
    probabilities = body.get("probabilities", False)
    if not isinstance(probabilities, bool):
        raise SchemaError("'probabilities' must be true or false", field="probabilities")
    return Parsed(instances, probabilities)


def render(outcome: Outcome) -> dict[str, Any]:
    model = outcome.routed.model
    body: dict[str, Any] = {"predictions": outcome.predictions,
                            "model": {"name": model.name, "version": model.version},
                            "request_id": outcome.request_id}
    if outcome.probabilities is not None:
        body["probabilities"] = outcome.probabilities
        body["classes"] = model.classes_
    return body


@router.post("/models/{name}/predict", response_model=PredictResponse, responses={**V1_OK, **ERRORS},
             openapi_extra=json_body(PredictRequest, REQUEST_ID_PARAMETER), summary="Predict rows with a model")
async def predict(name: str, request: Request) -> Response:
    """``name``, ``name@alias`` or ``name@version``; the default alias is ``production``."""
    outcome = await server_state(request).service.handle(request, name, parse, "v1")
    return json_response(render(outcome), 200, outcome.request_id)


@router.get("/models", response_model=ModelList, responses=LISTED, summary="Every model served, with its aliases")
async def list_models(request: Request) -> Response:
    state = server_state(request)
    models = [{"name": m.name, "aliases": m.aliases, "serving": m.loaded,
               "canary_weight": m.weights.get("canary") or 0.0}
              for m in state.repository.info()]
    return json_response({"models": models})


@router.get("/models/{name}", responses=errors(404, 503), summary="One model: versions, aliases, schema")
async def show_model(name: str, request: Request) -> Response:
    state = server_state(request)
    registry = state.registry
    versions = await anyio.to_thread.run_sync(registry.versions, name)
    aliases = await anyio.to_thread.run_sync(registry.aliases, name)
    serving = next((m.loaded for m in state.repository.info() if m.name == name), {})
    by_version = {v.version: v for v in versions}
    primary = aliases.get("production")
    manifest = by_version[primary.version].manifest if primary and primary.version in by_version else (
        versions[-1].manifest if versions else None)
    return json_response({
        "name": name,
        "versions": [{"version": v.version, "created_at": v.created_at, "created_by": v.created_by,
                      "metrics": v.manifest.metrics} for v in versions],
        "aliases": {a: {"version": r.version, "weight": r.weight, "updated_at": r.updated_at}
                    for a, r in sorted(aliases.items())},
        "serving": serving,
        "task": manifest.task if manifest else None,
        "input_schema": manifest.input_schema.model_dump(mode="json") if manifest else None,
        "output_schema": manifest.output_schema.model_dump(mode="json") if manifest else None,
    })


@router.get("/fleet", responses=errors(400, 503),
            summary="What runs where: every server, stream consumer and batch run by its heartbeat")
async def fleet(request: Request, since: str = Query("1h", description="Instances seen in this window: 15m, "
                                                                       "1h, 1d.",
                                                    json_schema_extra={"pattern": DURATION_PATTERN,
                                                                       "minLength": 1})) -> Response:
    """Every instance seen in ``since`` (kind, host, pid, region, zone, what it serves, start and last-seen
    time, ``stale`` when it missed three heartbeats), the ``grid`` of regions x models x versions with the
    instance counts, and ``skew``: one alias of one model answered by two versions at once beyond a
    rollout (canary and shadow are other aliases)."""
    try:
        window = parse_duration(since, what="since")
    except OverflowError:
        raise BadRequestError(f"since {since!r} is too long a duration", field="since") from None
    registry = server_state(request).registry
    return json_response(await anyio.to_thread.run_sync(lambda: read_fleet(registry, since=window)))
