"""The Open Inference Protocol (KServe v2 / Triton HTTP): health, metadata and ``infer``.

Two input layouts are understood: one tensor per column (named like the column, shape ``[n]`` or ``[n, 1]``,
as MLServer's pandas codec sends), or a single 2-D tensor ``[n, k]`` whose columns follow the model's
schema order (as KServe's sklearn server takes it). Outputs are ``predict`` and, for classifiers when asked
for in ``outputs``, ``predict_proba`` (``[n, classes]``).
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from modelyard._version import __version__
from modelyard.errors import SchemaError
from modelyard.registry import parse_ref
from modelyard.runtime import Model
from modelyard.serve.http import json_response
from modelyard.serve.inference import Outcome, Parsed
from modelyard.serve.schemas import ERRORS, InferRequest, InferResponse, json_body
from modelyard.serve.state import server_state

router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])
DATATYPES = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
             "FP64", "BYTES"}
OUTPUTS = {"predict", "predict_proba"}
NOT_READY = 400  # the protocol's health answer for false: "a 4xx status code indicates false"


def _flatten(data: Any, out: list[Any]) -> list[Any]:
    for item in data:
        if isinstance(item, list):
            _flatten(item, out)
        else:
            out.append(item)
    return out


def _tensor(raw: Any, i: int) -> tuple[str, list[int], list[Any]]:
    if not isinstance(raw, dict):
        raise SchemaError(f"inputs[{i}] must be an object with name, shape, datatype, data", field="inputs")
    name, shape, datatype, data = raw.get("name"), raw.get("shape"), raw.get("datatype"), raw.get("data")
    if not isinstance(name, str) or not name:
        raise SchemaError(f"inputs[{i}] needs a 'name'", field="inputs")
    if (not isinstance(shape, list) or not shape or len(shape) > 2
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise SchemaError(f"input '{name}': 'shape' must be [rows] or [rows, columns], non-negative",
                          field=name)
    if datatype not in DATATYPES:
        known = ", ".join(sorted(DATATYPES))
        raise SchemaError(f"input '{name}': datatype {datatype!r} is not one of {known}", field=name)
    if not isinstance(data, list):
        raise SchemaError(f"input '{name}': 'data' must be a list", field=name)
    flat = _flatten(data, [])
    if math.prod(shape) != len(flat):
        raise SchemaError(f"input '{name}': shape {shape} holds {math.prod(shape)} values, "
                          f"data has {len(flat)}", field=name)
    return name, shape, flat


def parse(body: Any) -> Parsed:
    if not isinstance(body, dict):
        raise SchemaError("the body must be a JSON object with 'inputs'", field="inputs")
    raw_inputs = body.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise SchemaError("'inputs' must be a non-empty list of tensors", field="inputs")
    tensors = [_tensor(t, i) for i, t in enumerate(raw_inputs)]
    requested = body.get("outputs")
    names: set[str] = set()
    if requested is not None:
        if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
            raise SchemaError("'outputs' must be a list of {\"name\": ...}", field="outputs")
        names = {o.get("name") for o in requested}  # type: ignore[misc]
        unknown = names - OUTPUTS
        if unknown:
            first = sorted(map(str, unknown))[0]
            raise SchemaError(f"unknown output {first!r} (predict, predict_proba)", field="outputs")
    params = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
    probabilities = "predict_proba" in names or params.get("probabilities") is True
    meta: dict[str, Any] = {"outputs": sorted(names) or ["predict"]}
    if isinstance(body.get("id"), str):
        meta["id"] = body["id"]
    if len(tensors) == 1 and len(tensors[0][1]) == 2 and tensors[0][1][1] != 1:
        name, shape, flat = tensors[0]
        return Parsed([], probabilities, meta, complete=lambda model: _matrix_rows(model, name, shape, flat))
    n_rows = {shape[0] for _, shape, _ in tensors}
    if len(n_rows) != 1:
        raise SchemaError("all inputs must have the same number of rows (shape[0])", field="inputs")
    for name, shape, _ in tensors:
        if len(shape) == 2 and shape[1] != 1:
            raise SchemaError(f"input '{name}': a column tensor must have shape [n] or [n, 1]", field=name)
    columns = [(name, flat) for name, _, flat in tensors]
    rows = [{name: flat[i] for name, flat in columns} for i in range(n_rows.pop())]
    return Parsed(rows, probabilities, meta)


def _matrix_rows(model: Model, name: str, shape: list[int], flat: list[Any]) -> list[dict[str, Any]]:
    columns = model.schema.names
    n, k = shape
    if k != len(columns):
        raise SchemaError(f"input '{name}' has {k} columns; {model.name} takes {len(columns)}: "
                          f"{', '.join(columns)}", field=name)
    return [dict(zip(columns, flat[i * k:(i + 1) * k], strict=True)) for i in range(n)]


def _datatype(values: list[Any]) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, (int, float)) or v is None for v in values):
        return "FP64"
    return "BYTES"


def render(outcome: Outcome) -> dict[str, Any]:
    model = outcome.routed.model
    n = len(outcome.predictions)
    outputs = []
    if "predict" in outcome.parsed.meta["outputs"]:
        outputs.append({"name": "predict", "shape": [n], "datatype": _datatype(outcome.predictions),
                        "data": outcome.predictions})
    if outcome.probabilities is not None:
        k = len(model.classes_ or [])
        outputs.append({"name": "predict_proba", "shape": [n, k], "datatype": "FP64",
                        "data": [p for row in outcome.probabilities for p in row],
                        "parameters": {"classes": model.classes_}})
    return {"model_name": model.name, "model_version": str(model.version),
            "id": outcome.parsed.meta.get("id", outcome.request_id),
            "parameters": {"request_id": outcome.request_id}, "outputs": outputs}


def _ref(name: str, version: str | None) -> str:
    return name if version is None else f"{parse_ref(name)[0]}@{version}"


@router.get("", summary="Server metadata")
async def server_metadata() -> Response:
    return json_response({"name": "modelyard", "version": __version__, "extensions": []})


@router.get("/health/live", summary="Liveness")
async def live() -> Response:
    return json_response({"live": True})


@router.get("/health/ready", summary="Readiness: every production model loaded and warm, not shutting down")
async def ready(request: Request) -> Response:
    """200 when ready, 400 when not: the protocol's health status codes (a 4xx means false)."""
    state = server_state(request)
    is_ready = state.repository.ready and not state.stopping
    return json_response({"ready": is_ready}, 200 if is_ready else NOT_READY)


async def _model(request: Request, name: str, version: str | None) -> Model:
    model_name, selector = parse_ref(_ref(name, version))
    return await server_state(request).repository.get(model_name, selector)


def _metadata(model: Model) -> dict[str, Any]:
    inputs = [{"name": c.name, "datatype": "FP64" if c.kind == "numeric" else "BYTES", "shape": [-1]}
              for c in model.schema.columns]
    classes = model.classes_
    outputs = [{"name": "predict", "datatype": "FP64" if classes is None else _datatype(list(classes)),
                "shape": [-1]}]
    if model.task == "classification":
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(classes or [])]})
    return {"name": model.name, "versions": [str(model.version)], "platform": "sklearn",
            "inputs": inputs, "outputs": outputs}


@router.get("/models/{name}", responses={404: ERRORS[404]}, summary="Model metadata")
async def model_metadata(name: str, request: Request) -> Response:
    return json_response(_metadata(await _model(request, name, None)))


@router.get("/models/{name}/versions/{version}", responses={404: ERRORS[404]}, summary="Version metadata")
async def version_metadata(name: str, version: str, request: Request) -> Response:
    return json_response(_metadata(await _model(request, name, version)))


async def _ready(request: Request, name: str, version: str | None) -> Response:
    """200 when the version the server chooses (production) or the one named is loaded and warm, 400 when it
    is not (its bundle was refused); an unknown model or version is a 404."""
    model_name, selector = parse_ref(_ref(name, version))
    is_ready = await server_state(request).repository.is_ready(model_name, selector)
    return json_response({"name": model_name, "ready": is_ready}, 200 if is_ready else NOT_READY)


@router.get("/models/{name}/ready", responses={404: ERRORS[404]}, summary="Model readiness")
async def model_ready(name: str, request: Request) -> Response:
    return await _ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", responses={404: ERRORS[404]},
            summary="Version readiness")
async def version_ready(name: str, version: str, request: Request) -> Response:
    return await _ready(request, name, version)


async def _infer(request: Request, ref: str) -> Response:
    outcome = await server_state(request).service.handle(request, ref, parse, "v2")
    return json_response(render(outcome), 200, outcome.request_id)


@router.post("/models/{name}/infer", response_model=InferResponse, responses=ERRORS,
             openapi_extra=json_body(InferRequest), summary="Inference")
async def infer(name: str, request: Request) -> Response:
    return await _infer(request, name)


@router.post("/models/{name}/versions/{version}/infer", response_model=InferResponse, responses=ERRORS,
             openapi_extra=json_body(InferRequest), summary="Inference with one version")
async def infer_version(name: str, version: str, request: Request) -> Response:
    return await _infer(request, _ref(name, version))
