"""HTTP plumbing shared by both protocols: request ids, bounded bodies, JSON responses, and the ONE place
that turns an exception into an error response.

Every error answer carries the status of the ``ModelyardError`` class that was raised (a caller's mistake is
always a 4xx, never a 500) in the shape of the protocol the request used: ``/v1`` (and everything outside
``/v2``) answers ``{"error": {"code", "message", "field", "row"}}``; ``/v2`` answers the Open Inference
Protocol's ``{"error": "<message>"}`` with the field and row named inside the message, and a schema error
(422 elsewhere) as the protocol's 400. The gRPC server takes the same message from ``protocol_message``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from modelyard.errors import (
    BadRequestError,
    LogUnavailableError,
    ModelyardError,
    PayloadTooLargeError,
    SchemaError,
)

log = logging.getLogger("modelyard.serve")
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,100}$")
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
MAX_PROBLEMS = 100  # problems listed in one error answer; the count says how many there were
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")


def new_request_id() -> str:
    """A new request id: a UUIDv7 (RFC 9562) as 32 hex digits. Its first 48 bits are the time in
    milliseconds, so the log's unique index on request ids takes each new id at its right edge instead of at
    a random place (shipping a record into SQLite went from ~29 to ~11 CPU µs at 50k-150k rows, and its
    write-ahead log from ~4 KB of dirtied pages a record to a few bytes); its other 74 bits are random, so an
    id cannot be guessed from another (a request id is what ``explain`` and ``predictions show`` look a past
    request up by). No ``UUID`` object: half of ``uuid4``'s cost. The random bits come from the OS's
    generator in blocks (``_random_bits``)."""
    rand = _random_bits()
    return f"{time.time_ns() // 1_000_000 << 80 | _UUID7 | (rand >> 68) << 64 | rand & _RAND_B:032x}"


_UUID7 = 0x7 << 76 | 0b10 << 62  # the version (7) and variant (0b10) bits
_RAND_B = (1 << 62) - 1
_RANDOM: list[int] = []  # 80-bit numbers from os.urandom, each handed out once
_RANDOM_BLOCK = 256


def _random_bits() -> int:
    """80 random bits from ``os.urandom``, read 256 numbers at a time: ``os.urandom`` is a system call that
    lets go of the GIL, and on a request path that let the log's shipper thread take it from the event loop
    once per request. ``list.pop`` is atomic, so two threads never get the same number; a forked child
    starts with none of its parent's (``register_at_fork``)."""
    try:
        return _RANDOM.pop()
    except IndexError:
        block = os.urandom(10 * _RANDOM_BLOCK)
        _RANDOM.extend(int.from_bytes(block[i:i + 10]) for i in range(0, len(block), 10))
        return _RANDOM.pop()


os.register_at_fork(after_in_child=_RANDOM.clear)


class JSONAnswer(Response):
    """A JSON answer with its headers written once (``X-Request-ID``, ``content-length``, ``content-type``:
    what ``Response`` makes of the same arguments, without its general header assembly)."""

    media_type = "application/json"

    def __init__(self, content: bytes, status_code: int, request_id: str | None) -> None:
        self.status_code = status_code
        self.background = None
        self.body = content
        length = (b"content-length", str(len(content)).encode())
        self.raw_headers = ([(_REQUEST_ID_KEY, request_id.encode("latin-1")), length, _JSON_TYPE] if request_id
                            else [length, _JSON_TYPE])


_JSON_TYPE = (b"content-type", b"application/json")


def json_response(body: Any, status: int = 200, request_id: str | None = None) -> Response:
    content = orjson.dumps(body, option=JSON_OPTIONS, default=str)
    if status < 200 or status in (204, 304):  # no content-length: Response knows the rules
        return Response(content, status_code=status, media_type="application/json",
                        headers={REQUEST_ID_HEADER: request_id} if request_id else None)
    return JSONAnswer(content, status, request_id)


def byte_count(text: str | None) -> int | None:
    """A header's byte count: ASCII digits only (``'²'.isdigit()`` is true and ``int('²')`` raises), at most
    18 of them (``int()`` refuses 4,300); ``None`` for anything else."""
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > 18:
        return None
    return int(text)


def checked_request_id(given: str | None) -> str:
    """``given`` when it is a usable request id (letters, digits, ``.-_:``, at most 100), a new one when
    it is absent; ``BadRequestError`` otherwise. REST and gRPC both take their ids here."""
    if given is None:
        return new_request_id()
    if _REQUEST_ID.match(given):
        return given
    raise BadRequestError(
        f"{REQUEST_ID_HEADER} must be 1-100 characters of letters, digits, '.', '-', '_' or ':'",
        field=REQUEST_ID_HEADER,
    )


def request_id(request: Request) -> str:
    """The caller's ``X-Request-ID`` or a new one."""
    given = next((v.decode("latin-1") for k, v in request.scope["headers"] if k == _REQUEST_ID_KEY), None)
    try:
        rid = checked_request_id(given)
    except BadRequestError:
        request.state.request_id = new_request_id()
        raise
    request.state.request_id = rid
    return rid


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing bodies over ``limit`` bytes before reading them whole, and empty ones.
    Read from the ASGI messages themselves (what ``Request.stream`` does, without its generator and the
    headers object a ``Content-Length`` lookup builds), unless something read the body before."""
    length = next((v for k, v in request.scope["headers"] if k == b"content-length"), None)
    declared = byte_count(length.decode("latin-1")) if length is not None else None
    if declared is not None and declared > limit:
        raise PayloadTooLargeError(f"the request body is {declared} bytes; the limit is {limit}", field="body")
    chunks: list[bytes] = []
    size = 0

    def take(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the request body is over the limit of {limit} bytes", field="body")
        chunks.append(chunk)

    if hasattr(request, "_body") or request._stream_consumed:
        async for chunk in request.stream():
            take(chunk)
    else:
        more = True
        while more:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                request._is_disconnected = True
                raise ClientDisconnect()
            if message["type"] == "http.request":
                more = message.get("more_body", False)
                take(message.get("body", b""))
        request._stream_consumed = True
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not body:
        raise BadRequestError("the request body is empty; send a JSON object", field="body")
    return body


def parse_json(body: bytes, *, non_finite: bool = False) -> Any:
    """orjson's parse; with ``non_finite``, the ``NaN``/``Infinity`` tokens Python and tritonclient write for
    missing or infinite numbers are read too (by the standard library's parser, only when orjson refused
    a body that holds one: the common body stays on the fast path)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if non_finite and (b"NaN" in body or b"Infinity" in body):
            try:
                return json.loads(body)
            except (ValueError, RecursionError):  # RecursionError: nested deeper than the stack
                pass
        raise BadRequestError(f"the request body is not valid JSON: {exc}", field="body") from None


async def read_json(request: Request, limit: int) -> Any:
    """The parsed JSON body, refusing bodies over ``limit`` bytes before reading them whole."""
    return parse_json(await read_body(request, limit))


def error_body(exc: ModelyardError) -> dict[str, Any]:
    """The one error shape; a ``SchemaError`` also lists its problems (at most ``MAX_PROBLEMS`` of them)."""
    err = exc.to_dict()
    body = {"code": err.pop("code"), "message": err.pop("message"),
            "field": err.pop("field", None), "row": err.pop("row", None), **err}
    if isinstance(exc, SchemaError):  # where it went wrong, from the error's fields, never from its text
        body.update(field=exc.field, row=exc.row, problems=[p.to_dict() for p in exc.problems[:MAX_PROBLEMS]])
        if len(exc.problems) > MAX_PROBLEMS:
            body["problems_total"] = len(exc.problems)
    return {"error": body}


def protocol_message(exc: ModelyardError) -> str:
    """The one-string error of the Open Inference Protocol: the message, then the field and row it names."""
    where = [f"{key} {exc.context[key]}" for key in ("field", "row") if exc.context.get(key) is not None]
    return f"{exc.message} ({', '.join(where)})" if where else exc.message


def protocol_status(exc: ModelyardError) -> int:
    """The Open Inference Protocol's status: input that does not fit the model is a 400 (not a 422)."""
    return 400 if exc.status_code == 422 else exc.status_code


# gRPC status names for an error's HTTP status (serve/grpc/server.py turns them into grpc.StatusCode).
GRPC_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 409: "FAILED_PRECONDITION",
              413: "RESOURCE_EXHAUSTED", 422: "INVALID_ARGUMENT", 503: "UNAVAILABLE"}


def grpc_code(exc: ModelyardError) -> str:
    return GRPC_CODES.get(exc.status_code, "INTERNAL")


def is_v2(request: Request | None) -> bool:
    return request is not None and (request.url.path == "/v2" or request.url.path.startswith("/v2/"))


def error_response(exc: ModelyardError, request: Request | None = None) -> Response:
    rid = getattr(request.state, "request_id", None) if request is not None else None
    if is_v2(request):
        response = json_response({"error": protocol_message(exc)}, protocol_status(exc), rid)
    else:
        response = json_response(error_body(exc), exc.status_code, rid)
    if isinstance(exc, LogUnavailableError):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception to the one error shape, with the status the error class carries."""

    async def on_modelyard(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ModelyardError)
        if exc.status_code >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return error_response(exc, request)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        codes = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}
        err = ModelyardError(str(exc.detail))
        err.status_code = exc.status_code
        err.code = codes.get(exc.status_code, "http_error")
        response = error_response(err, request)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = (exc.errors() or [{}])[0]
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        err = ModelyardError(str(first.get("msg", "invalid request")), field=".".join(loc) or None)
        err.status_code, err.code = 422, "validation_error"
        return error_response(err, request)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed unexpectedly", request.method, request.url.path, exc_info=exc)
        err = ModelyardError(f"internal error ({type(exc).__name__}); the server log has the details")
        err.code = "internal_error"
        return error_response(err, request)

    app.add_exception_handler(ModelyardError, on_modelyard)
    app.add_exception_handler(Exception, on_unexpected)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
