"""The Open Inference Protocol over REST (KServe v2 / Triton HTTP): health, metadata and ``infer``.

Bodies are JSON, or JSON then binary tensor data (the protocol's binary tensor data extension: the
``Inference-Header-Content-Length`` header says where the JSON ends; an input with
``parameters.binary_data_size`` takes its values from the bytes after it, in input order). Outputs go back
as binary data when the request says ``parameters.binary_data_output`` or an output's
``parameters.binary_data`` (which wins); the answer then sets ``Inference-Header-Content-Length`` and
``Content-Type: application/octet-stream``. JSON bodies may hold ``NaN``/``Infinity`` (tritonclient writes
a missing FP64 so). Tensors, layouts and missing values: ``serve/tensors.py``. Errors are the protocol's
``{"error": "<message>"}`` (``serve/http.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from modelyard._version import __version__
from modelyard.errors import BadRequestError, SchemaError
from modelyard.registry import parse_ref
from modelyard.runtime import Model
from modelyard.serve.http import (
    JSON_OPTIONS,
    REQUEST_ID_HEADER,
    byte_count,
    json_response,
    parse_json,
    read_body,
)
from modelyard.serve.inference import Outcome, Parsed
from modelyard.serve.repository_v2 import NOTE as REPOSITORY_NOTE
from modelyard.serve.schemas import (
    V2_ERRORS,
    V2_INFER,
    V2_INFER_OK,
    InferResponse,
    Live,
    ModelMetadata,
    ModelReady,
    Ready,
    ServerMetadata,
    errors,
)
from modelyard.serve.state import server_state
from modelyard.serve.tensors import (
    Tensor,
    V2Parsed,
    assemble,
    check_count,
    check_datatype,
    check_shape,
    decode_raw,
    describe_model,
    encode_raw,
    output_tensors,
    requested_outputs,
    strings,
)

router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])
HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data", "model_repository"]
MAX_NESTING = 4  # levels of lists in an input's "data"
NOT_READY = 400  # the protocol's health answer for false: "a 4xx status code indicates false"
METADATA_ERRORS = errors(404, 503, v2=True)
READY_ERRORS = {**errors(404, 503, v2=True),
                NOT_READY: {"model": ModelReady, "description": "Not ready (the protocol's false)"}}


@dataclass(frozen=True)
class Body:
    """A request body: the JSON header and the binary tensor data after it (empty for a JSON body)."""

    header: Any
    binary: bytes = b""


async def read(request: Request, limit: int) -> Body:
    raw = await read_body(request, limit)
    declared = request.headers.get(HEADER_LENGTH)
    if declared is None:
        return Body(parse_json(raw, non_finite=True))
    n = byte_count(declared)
    if n is None or not 0 < n <= len(raw):
        raise BadRequestError(f"{HEADER_LENGTH} must be the size of the JSON part, 1 to {len(raw)} bytes",
                              field=HEADER_LENGTH)
    return Body(parse_json(raw[:n], non_finite=True), raw[n:])


def _flatten(name: str, data: list[Any], out: list[Any], depth: int = 1) -> list[Any]:
    """``data`` flat; lists nested ``MAX_NESTING`` deep are refused (a tensor here has at most 2 dimensions,
    and a thousand levels would exhaust the recursion limit: a 500)."""
    for item in data:
        if not isinstance(item, list):
            out.append(item)
        elif depth < MAX_NESTING:
            _flatten(name, item, out, depth + 1)
        else:
            raise SchemaError(f"input '{name}': 'data' nests lists {MAX_NESTING} or more deep; a tensor has at "
                              "most 2 dimensions", field=name)
    return out


def _binary_size(name: str, params: Any) -> int | None:
    if not isinstance(params, dict) or "binary_data_size" not in params:
        return None
    size = params["binary_data_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise SchemaError(f"input '{name}': parameters.binary_data_size must be a byte count", field=name)
    return size


def _tensor(raw: Any, i: int, binary: memoryview, at: int) -> tuple[Tensor, int]:
    """One input tensor and the offset in the binary data after its bytes."""
    if not isinstance(raw, dict):
        raise SchemaError(f"inputs[{i}] must be an object with name, shape, datatype, data", field="inputs")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaError(f"inputs[{i}] needs a 'name'", field="inputs")
    shape = check_shape(name, raw.get("shape"))
    datatype = check_datatype(name, raw.get("datatype"))
    size = _binary_size(name, raw.get("parameters"))
    if size is not None:
        if at + size > len(binary):
            raise SchemaError(f"input '{name}': binary_data_size {size} runs past the {len(binary)} bytes of "
                              f"binary data", field=name)
        return Tensor(name, shape, decode_raw(name, datatype, shape, binary[at:at + size])), at + size
    data = raw.get("data")
    if not isinstance(data, list):
        raise SchemaError(f"input '{name}': 'data' must be a list (or the input binary, with "
                          "parameters.binary_data_size)", field=name)
    flat = _flatten(name, data, [])
    check_count(name, shape, flat)
    return Tensor(name, shape, strings(flat) if datatype == "BYTES" else flat), at


def _binary_outputs(requested: list[dict[str, Any]], default: bool) -> frozenset[str]:
    chosen = {"predict", "predict_proba"} if default else set()
    for o in requested:
        flag = (o.get("parameters") or {}).get("binary_data") if isinstance(o.get("parameters"), dict) else None
        if flag is True:
            chosen.add(o["name"])
        elif flag is False:
            chosen.discard(o["name"])
    return frozenset(chosen)


def parse(body: Any) -> Parsed:
    header, binary = (body.header, body.binary) if isinstance(body, Body) else (body, b"")
    if not isinstance(header, dict):
        raise SchemaError("the body must be a JSON object with 'inputs'", field="inputs")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise SchemaError("'inputs' must be a non-empty list of tensors", field="inputs")
    view = memoryview(binary)
    tensors: list[Tensor] = []
    at = 0
    for i, raw in enumerate(raw_inputs):
        tensor, at = _tensor(raw, i, view, at)
        tensors.append(tensor)
    if at != len(view):
        raise SchemaError(f"the body has {len(view) - at} bytes of binary data no input's binary_data_size "
                          "accounts for", field="inputs")
    requested = header.get("outputs")
    if requested is not None and (not isinstance(requested, list)
                                  or not all(isinstance(o, dict) for o in requested)):
        raise SchemaError("'outputs' must be a list of {\"name\": ...}", field="outputs")
    names = requested_outputs(o.get("name") for o in requested or [])
    given = header.get("parameters")
    params: dict[str, Any] = given if isinstance(given, dict) else {}
    binary_outputs = _binary_outputs(requested or [], params.get("binary_data_output") is True)
    return assemble(tensors, names, params, header.get("id"), binary_outputs)


def render(outcome: Outcome) -> tuple[dict[str, Any], list[bytes]]:
    """The JSON part of the answer and the binary data after it (none for a JSON answer)."""
    model = outcome.routed.model
    binary_names = outcome.parsed.binary_outputs if isinstance(outcome.parsed, V2Parsed) else frozenset()
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for t in output_tensors(outcome):
        tensor: dict[str, Any] = {"name": t.name, "shape": t.shape, "datatype": t.datatype}
        params = dict(t.parameters)
        if t.name in binary_names:
            chunk = encode_raw(t.datatype, t.values)
            chunks.append(chunk)
            params["binary_data_size"] = len(chunk)
        else:
            tensor["data"] = t.values
        if params:
            tensor["parameters"] = params
        outputs.append(tensor)
    return ({"model_name": model.name, "model_version": str(model.version),
             "id": outcome.parsed.meta.get("id", outcome.request_id),
             "parameters": {"request_id": outcome.request_id}, "outputs": outputs}, chunks)


def _answer(outcome: Outcome) -> Response:
    header, chunks = render(outcome)
    if not chunks:
        return json_response(header, 200, outcome.request_id)
    head = orjson.dumps(header, option=JSON_OPTIONS, default=str)
    return Response(b"".join([head, *chunks]), media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(head)), REQUEST_ID_HEADER: outcome.request_id})


def _ref(name: str, version: str | None) -> str:
    return name if version is None else f"{parse_ref(name)[0]}@{version}"


@router.get("", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata() -> Response:
    return json_response({"name": "modelyard", "version": __version__, "extensions": EXTENSIONS,
                          "model_repository": REPOSITORY_NOTE})


@router.get("/health/live", response_model=Live, summary="Liveness")
async def live() -> Response:
    return json_response({"live": True})


@router.get("/health/ready", response_model=Ready,
            responses={NOT_READY: {"model": Ready, "description": "Not ready (the protocol's false)"}},
            summary="Readiness: every production model loaded and warm, not shutting down")
async def ready(request: Request) -> Response:
    """200 when ready, 400 when not: the protocol's health status codes (a 4xx means false)."""
    state = server_state(request)
    is_ready = state.repository.ready and not state.stopping
    return json_response({"ready": is_ready}, 200 if is_ready else NOT_READY)


async def _model(request: Request, name: str, version: str | None) -> Model:
    model_name, selector = parse_ref(_ref(name, version))
    return await server_state(request).repository.get(model_name, selector)


@router.get("/models/{name}", response_model=ModelMetadata, responses=METADATA_ERRORS, summary="Model metadata")
async def model_metadata(name: str, request: Request) -> Response:
    return json_response(describe_model(await _model(request, name, None)))


@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata, responses=METADATA_ERRORS,
            summary="Version metadata")
async def version_metadata(name: str, version: str, request: Request) -> Response:
    return json_response(describe_model(await _model(request, name, version)))


async def _ready(request: Request, name: str, version: str | None) -> Response:
    """200 when the version the server chooses (production) or the one named is loaded and warm, 400 when it
    is not (its bundle was refused); an unknown model or version is a 404."""
    model_name, selector = parse_ref(_ref(name, version))
    is_ready = await server_state(request).repository.is_ready(model_name, selector)
    return json_response({"name": model_name, "ready": is_ready}, 200 if is_ready else NOT_READY)


@router.get("/models/{name}/ready", response_model=ModelReady, responses=READY_ERRORS, summary="Model readiness")
async def model_ready(name: str, request: Request) -> Response:
    return await _ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", response_model=ModelReady, responses=READY_ERRORS,
            summary="Version readiness")
async def version_ready(name: str, version: str, request: Request) -> Response:
    return await _ready(request, name, version)


async def _infer(request: Request, ref: str) -> Response:
    outcome = await server_state(request).service.handle(request, ref, parse, "v2", read=read)
    return _answer(outcome)


@router.post("/models/{name}/infer", response_model=InferResponse, responses={**V2_INFER_OK, **V2_ERRORS},
             openapi_extra=V2_INFER, summary="Inference")
async def infer(name: str, request: Request) -> Response:
    return await _infer(request, name)


@router.post("/models/{name}/versions/{version}/infer", response_model=InferResponse,
             responses={**V2_INFER_OK, **V2_ERRORS}, openapi_extra=V2_INFER, summary="Inference with one version")
async def infer_version(name: str, version: str, request: Request) -> Response:
    return await _infer(request, _ref(name, version))
