"""Request and response shapes, for the OpenAPI document only.

Bodies are parsed by hand with orjson (fast, and our own error messages); these models describe them in
``/openapi.json`` so clients and property-based tests know the contract.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


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
    error: ErrorDetail


class PredictRequest(BaseModel):
    instances: list[dict[str, Any]] = Field(..., description="Rows: one object of column values per row.")
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


class InferTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str = Field(..., description="BOOL, INT8..INT64, UINT8..UINT64, FP16, FP32, FP64 or BYTES")
    data: list[Any]
    parameters: dict[str, Any] | None = None


class RequestedOutput(BaseModel):
    name: str = Field(..., description="predict or predict_proba")
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferTensor]
    outputs: list[RequestedOutput] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str
    parameters: dict[str, Any] | None = None
    outputs: list[InferTensor]


class OutcomeItem(BaseModel):
    request_id: str | None = Field(None, description="The request id a prediction answered with.")
    row: int = Field(0, ge=0, description="The row of that request (0 for a one-row request).")
    key: dict[str, Any] | None = Field(None, description="Instead of request_id: input columns and values "
                                       "naming the entity, e.g. {\"house_id\": 17}.")
    at: str | None = Field(None, description="With key: when the outcome was observed (ISO 8601; default now); "
                           "the latest prediction within `window` before it is joined.")
    actual: Any = Field(..., description="The true value: a number (regression) or one of the classes.")


class FeedbackRequest(BaseModel):
    outcomes: list[OutcomeItem]
    model: str | None = Field(None, description="Needed for outcomes by key.")
    window: str | None = Field(None, description="How far before `at` a key looks for its prediction (1h).")


class FeedbackResponse(BaseModel):
    received: int
    matched: int
    duplicate: int
    unmatched: int
    late: int
    rows_stored: int
    unmatched_ids: list[str]


REQUEST_MODELS: tuple[type[BaseModel], ...] = (PredictRequest, InferRequest, FeedbackRequest)


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON request body of ``model`` (merged into components by the app)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def add_request_schemas(openapi: dict[str, Any]) -> dict[str, Any]:
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for model in REQUEST_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas.setdefault(model.__name__, schema)
    return openapi


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in ((400, "Malformed JSON or request id"), (404, "Unknown model, alias or version"),
                         (413, "Body over the size limit"), (422, "Input does not fit the model's schema"))
}
