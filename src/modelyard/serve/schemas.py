"""Request and response shapes, for the OpenAPI document only, and the document's finishing pass.

Bodies are parsed by hand with orjson (fast, and our own error messages); these models describe them in
``/openapi.json`` so clients and property-based tests know the contract: every status a route answers,
in the error shape of its protocol (v1 ``ErrorResponse``, V2 ``V2Error``), and every content type (V2's
binary tensor data extension as ``application/octet-stream``). What a model takes (its columns) is data,
not part of the document: ``GET /v1/models/{name}`` and ``GET /v2/models/{name}`` say it, and rows that do
not fit are a 422 (v1) or a 400 (V2).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from modelyard.durations import DURATION_PATTERN


class SchemaProblemDetail(BaseModel):
    """One problem of an input that does not fit the schema."""

    row: int | None = None
    field: str | None = None
    reason: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None
    row: int | None = None
    problems: list[SchemaProblemDetail] | None = Field(
        None, description="schema_error only: every problem found (at most 100), the first one's field and row "
                          "are `field` and `row`.")
    problems_total: int | None = Field(None, description="How many problems there were, when over 100.")


class ErrorResponse(BaseModel):
    """Every error outside ``/v2``."""

    error: ErrorDetail


class V2Error(BaseModel):
    """Every error under ``/v2``: the Open Inference Protocol's one string, the field and row named inside."""

    error: str


class PredictRequest(BaseModel):
    instances: list[dict[str, Any]] = Field(..., min_length=1,
                                            description="Rows: one object of column values per row.")
    probabilities: bool = Field(False, description="Classifiers: also return class probabilities.")


class ModelRef(BaseModel):
    name: str
    version: int


class PredictResponse(BaseModel):
    predictions: list[Any]
    probabilities: list[list[float]] | None = None
    classes: list[Any] | None = None
    model: ModelRef
    request_id: str


Datatype = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
                   "FP32", "FP64", "BYTES"]
Dimension = Annotated[int, Field(ge=0)]


class InferTensor(BaseModel):
    """An input tensor of a JSON body (in a binary body, ``parameters.binary_data_size`` replaces ``data``)."""

    name: str = Field(..., min_length=1)
    shape: list[Dimension] = Field(..., min_length=1, max_length=2, description="[rows] or [rows, columns]")
    datatype: Datatype
    data: list[Any] = Field(..., description="shape's product of values, flat or nested by row")
    parameters: dict[str, Any] | None = None


class OutputTensor(BaseModel):
    name: Literal["predict", "predict_proba"]
    shape: list[Dimension]
    datatype: Datatype
    data: list[Any] | None = Field(None, description="Absent when the tensor is sent as binary data")
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size when sent as binary data")


class RequestedOutput(BaseModel):
    name: Literal["predict", "predict_proba"]
    parameters: dict[str, Any] | None = Field(None, description='{"binary_data": true} to get it as bytes')


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(None, description='{"binary_data_output": true}: every output '
                                                                "as binary data")
    inputs: list[InferTensor] = Field(..., min_length=1)
    outputs: list[RequestedOutput] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str
    parameters: dict[str, Any] | None = None
    outputs: list[OutputTensor]


class TensorMetadata(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int] = Field(..., description="-1: any number of rows")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]
    model_repository: dict[str, str]


class ModelSummary(BaseModel):
    name: str
    aliases: dict[str, int]
    serving: dict[str, int] = Field(..., description="alias → version loaded in this worker")
    canary_weight: float


class ModelList(BaseModel):
    models: list[ModelSummary]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    models: int
    prediction_log_pending: int | None = None
    not_ready: dict[str, str] | None = Field(None, description="name@production → why it does not serve")
    prediction_log_error: str | None = None


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class OutcomeItem(BaseModel):
    request_id: str | None = Field(None, description="The request id a prediction answered with.")
    row: int = Field(0, ge=0, description="The row of that request (0 for a one-row request).")
    key: dict[str, Any] | None = Field(None, description="Instead of request_id: input columns and values "
                                       "naming the entity, e.g. {\"house_id\": 17}.")
    at: str | None = Field(None, description="With key: when the outcome was observed (ISO 8601; default now); "
                           "the latest prediction within `window` before it is joined.",
                           json_schema_extra={"format": "date-time"})
    actual: Any = Field(..., description="The true value: a number (regression) or one of the classes.")


class FeedbackRequest(BaseModel):
    outcomes: list[OutcomeItem] = Field(..., min_length=1)
    model: str | None = Field(None, description="Needed for outcomes by key.", min_length=1)
    window: str | None = Field(None, description="How far before `at` a key looks for its prediction (1h).",
                               json_schema_extra={"pattern": DURATION_PATTERN, "minLength": 1})


class FeedbackResponse(BaseModel):
    received: int
    matched: int
    duplicate: int
    unmatched: int
    late: int
    rows_stored: int
    unmatched_ids: list[str]


REQUEST_MODELS: tuple[type[BaseModel], ...] = (PredictRequest, InferRequest, FeedbackRequest)


def json_body(model: type[BaseModel], *parameters: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON request body of ``model`` (merged into components by the app) and
    the ``parameters`` (headers) the route reads by hand."""
    extra: dict[str, Any] = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}
    if parameters:
        extra["parameters"] = list(parameters)
    return extra


def add_request_schemas(openapi: dict[str, Any]) -> dict[str, Any]:
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for model in REQUEST_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas.setdefault(model.__name__, schema)
    return openapi


Responses = dict[int | str, dict[str, Any]]
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait (when the prediction log refused the request)",
                               "schema": {"type": "integer"}}}
STATUS_TEXT = {
    400: "Malformed JSON, an empty body, or a bad X-Request-ID",
    404: "Unknown model, alias or version",
    409: "The request conflicts with the registry's state",
    413: "Body over the size limit",
    422: "Input does not fit the model's schema",
    501: "Explanations need the optional shap package",
    503: "The prediction log cannot be written (with Retry-After), or the registry database is away",
}


def errors(*statuses: int, v2: bool = False, **text: str) -> Responses:
    """``responses=`` for these statuses in the protocol's error shape; ``text`` overrides a description
    (``s400="..."``)."""
    out: Responses = {}
    for status in statuses:
        out[status] = {"model": V2Error if v2 else ErrorResponse,
                       "description": text.get(f"s{status}") or STATUS_TEXT[status]}
        if status == 503:
            out[status]["headers"] = RETRY_AFTER
    return out


ERRORS = errors(400, 404, 413, 422, 503)  # v1 predict and explain
V2_ERRORS = errors(400, 404, 413, 503, v2=True, s400="Malformed JSON or binary data, a bad X-Request-ID or "
                   "Inference-Header-Content-Length, or tensors that do not fit the model")
REQUEST_ID_PARAMETER = {"name": "X-Request-ID", "in": "header", "required": False,
                        "description": "The caller's id for the request (new one when absent); answered back",
                        "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:\-]{1,100}$"}}
REQUEST_ID_HEADER = {"X-Request-ID": {"description": "The request's id", "required": True,
                                      "schema": {"type": "string"}}}
BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
HEADER_LENGTH_DOC = ("The binary tensor data extension: the JSON part's size in bytes; the body is that JSON, "
                     "then the bytes of every input with parameters.binary_data_size, in input order.")
V2_INFER: dict[str, Any] = {  # openapi_extra of POST .../infer: JSON or binary, and the headers it reads
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                     "description": HEADER_LENGTH_DOC}}},
    "parameters": [REQUEST_ID_PARAMETER, {
        "name": "Inference-Header-Content-Length", "in": "header", "required": False,
        "description": HEADER_LENGTH_DOC, "schema": {"type": "integer", "minimum": 1}}],
}
V2_INFER_OK: Responses = {200: {"content": BINARY, "headers": {
    **REQUEST_ID_HEADER, "Inference-Header-Content-Length": {
        "description": "Binary answers only: the JSON part's size; output tensors' bytes follow it",
        "schema": {"type": "integer"}}},
    "description": "JSON, or (outputs asked for as binary data) application/octet-stream: the JSON part "
                   "then each binary output's bytes"}}
def link(path: str, method: str, **parameters: str) -> dict[str, Any]:
    """An OpenAPI link to the operation at ``path``: how a client goes on from this answer."""
    return {"operationRef": "#/paths/" + path.replace("~", "~0").replace("/", "~1") + f"/{method}",
            "parameters": parameters}


FIRST_MODEL = "$response.body#/models/0/name"
V1_OK: Responses = {200: {"description": "The predictions", "headers": REQUEST_ID_HEADER, "links": {
    "explain": link("/v1/predictions/{request_id}/explain", "get", request_id="$response.body#/request_id")}}}
LISTED: Responses = {200: {"description": "Every model served", "links": {
    "predict": link("/v1/models/{name}/predict", "post", name=FIRST_MODEL),
    "show": link("/v1/models/{name}", "get", name=FIRST_MODEL),
    "explain": link("/v1/models/{name}/explain", "post", name=FIRST_MODEL),
    "metadata": link("/v2/models/{name}", "get", name=FIRST_MODEL),
    "infer": link("/v2/models/{name}/infer", "post", name=FIRST_MODEL)}}}
_VALIDATION = "#/components/schemas/HTTPValidationError"


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        return {node["$ref"]} if isinstance(node.get("$ref"), str) else set().union(*map(_refs, node.values()))
    if isinstance(node, list):
        return set().union(*map(_refs, node))
    return set()


def _validated(operation: dict[str, Any]) -> bool:
    """Whether FastAPI validates something of the request (a 422 can occur): a query or header parameter,
    a path parameter that is not a plain string, or a body of a pydantic model it parses."""
    for param in operation.get("parameters", []):
        by_hand = param["name"] in ("X-Request-ID", "Inference-Header-Content-Length")  # read by the route
        if not by_hand and (param["in"] != "path" or param.get("schema", {}).get("type") != "string"):
            return True
    ours = {f"#/components/schemas/{m.__name__}" for m in REQUEST_MODELS}
    body = operation.get("requestBody")
    return body is not None and not _refs(body) <= ours


def finish_openapi(openapi: dict[str, Any]) -> dict[str, Any]:
    """The document as the server answers: FastAPI's 422 ``HTTPValidationError`` is our ``ErrorResponse``
    (``serve/http.py`` answers it so) where FastAPI validates anything and is gone where nothing can fail
    it; under ``/v2`` every error is a ``V2Error``; any route with a path parameter can be a 404 (a value
    holding ``/`` matches no route)."""
    add_request_schemas(openapi)
    for path, operations in openapi.get("paths", {}).items():
        v2 = path == "/v2" or path.startswith("/v2/")
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            default = responses.get("422")
            if default is not None and _VALIDATION in _refs(default):
                if v2 or not _validated(operation):
                    del responses["422"]
                else:
                    responses["422"] = {"description": "A parameter or body field FastAPI validates is wrong",
                                        "content": {"application/json": {
                                            "schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
            if "{" in path and "404" not in responses:
                responses["404"] = {"description": "No such route (a path parameter holding '/')", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
            if v2:
                for response in responses.values():
                    for media in response.get("content", {}).values():
                        if media.get("schema") == {"$ref": "#/components/schemas/ErrorResponse"}:
                            media["schema"] = {"$ref": "#/components/schemas/V2Error"}
    schemas = openapi.get("components", {}).get("schemas", {})
    if _VALIDATION not in _refs(openapi.get("paths", {})):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    return openapi
