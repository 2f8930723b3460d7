"""Inputs a fuzzer sends (odd path parameters, odd headers, deep bodies) get a 4xx naming the field, never a
500; and a request the prediction log refuses is counted with the status the caller got (503)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any
from unittest import mock

import numpy as np
import pytest
from prometheus_client import REGISTRY
from starlette.requests import ClientDisconnect, Request

from modelyard.errors import (
    BadRequestError,
    LogUnavailableError,
    PayloadTooLargeError,
    SchemaError,
    VersionNotFoundError,
)
from modelyard.registry import parse_ref
from modelyard.serve import v2
from modelyard.serve.http import byte_count, parse_json, read_body
from modelyard.serve.inference import InferenceService, Parsed
from modelyard.serve.routing import Routed


@pytest.mark.parametrize("selector", ["²", "v²", "१", "٣", "x²"])
def test_a_selector_of_non_ascii_digits_is_an_alias_name_not_a_crash(selector: str) -> None:
    # '²'.isdigit() is true and int('²') raises: GET /v2/models/m/versions/%C2%B2 was a 500
    assert parse_ref(f"m@{selector}") == ("m", selector)


def test_a_version_number_too_long_to_convert_names_no_version() -> None:
    # int() refuses more than 4,300 digits: /v2/models/m/versions/999...9 was a 500
    with pytest.raises(VersionNotFoundError) as info:
        parse_ref("m@" + "9" * 5000)
    assert info.value.status_code == 404
    assert parse_ref("m@v12") == ("m", 12) and parse_ref("m@V3") == ("m", 3) and parse_ref("m@v") == ("m", "v")


@pytest.mark.parametrize(("text", "count"), [("12", 12), ("0", 0), ("²", None), ("9" * 5000, None),
                                              ("-1", None), (" 1", None), ("", None), (None, None)])
def test_a_byte_count_header_is_ascii_digits_only(text: str | None, count: int | None) -> None:
    assert byte_count(text) == count


def _request(body: bytes, headers: dict[str, str]) -> Request:
    scope = {"type": "http", "method": "POST", "path": "/v2/models/m/infer", "query_string": b"",
             "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


@pytest.mark.parametrize("declared", ["²", "9" * 5000, "0", "99"])
def test_an_odd_inference_header_content_length_is_a_400_naming_the_header(declared: str) -> None:
    request = _request(b'{"inputs": []}', {v2.HEADER_LENGTH: declared})
    with pytest.raises(BadRequestError) as info:
        asyncio.run(v2.read(request, 1000))
    assert info.value.context["field"] == v2.HEADER_LENGTH


def test_data_nested_a_thousand_lists_deep_is_a_schema_error_not_a_recursion_error() -> None:
    deep: Any = 1.0
    for _ in range(1000):
        deep = [deep]
    with pytest.raises(SchemaError) as info:
        v2.parse({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": deep}]})
    assert info.value.field == "x" and "deep" in info.value.message
    assert v2.parse({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [[2.0]]}]}).rows


def test_a_deep_body_holding_nan_is_a_400_not_a_recursion_error() -> None:
    # orjson refuses 1,024 levels; the fallback for NaN bodies (the standard library's parser) recursed
    with pytest.raises(BadRequestError) as info:
        parse_json(b'{"a": [NaN, ' + b"[" * 100_000 + b"]" * 100_000 + b"]}", non_finite=True)
    assert info.value.context["field"] == "body"


class _RefusingWriter:
    async def commit(self, records: list[Any], *, alone: bool = False) -> None:
        raise LogUnavailableError("the prediction log cannot be written (disk full); retry shortly")


class _OneModelRouter:
    def __init__(self, model: Any) -> None:
        self.model = model

    async def select(self, ref: str, **_: Any) -> Routed:
        return Routed("primary", self.model, ref, "production")


def _requests(status: str) -> float:
    labels = {"model": "refused-model", "version": "7", "route": "primary", "status": status}
    return REGISTRY.get_sample_value("modelyard_requests_total", labels) or 0.0


def test_a_request_the_log_refuses_is_counted_as_a_503_not_a_200() -> None:
    model = SimpleNamespace(name="refused-model", version=7, task="regression", classes_=None,
                            validate_columns=lambda rows: SimpleNamespace(data={}),
                            predict_frame=lambda columns: np.array([1.0]))
    service = InferenceService(_OneModelRouter(model), _RefusingWriter(), max_body_bytes=1000)  # type: ignore[arg-type]
    before_ok, before_refused = _requests("200"), _requests("503")

    async def parse() -> Parsed:
        return Parsed([{"x": 1.0}])

    with pytest.raises(LogUnavailableError):
        asyncio.run(service.infer("refused-model", lambda: "rid-1", {}, parse, "v1"))
    assert _requests("503") == before_refused + 1
    assert _requests("200") == before_ok
    assert service.in_flight == 0  # a refused request leaves the count of requests in flight as it found it


class _RecordingWriter:
    def __init__(self) -> None:
        self.alone: list[bool] = []

    async def commit(self, records: list[Any], *, alone: bool = False) -> None:
        self.alone.append(alone)


def test_a_lone_request_commits_alone_and_requests_in_flight_together_do_not() -> None:
    model = SimpleNamespace(name="lone-model", version=1, task="regression", classes_=None, schema=None,
                            validate_columns=lambda rows: SimpleNamespace(data={}),
                            predict_frame=lambda columns: np.array([1.0]))
    writer = _RecordingWriter()
    service = InferenceService(_OneModelRouter(model), writer, max_body_bytes=1000)  # type: ignore[arg-type]

    async def parse() -> Parsed:
        return Parsed([{"x": 1.0}])

    async def main() -> None:
        await service.infer("lone-model", lambda: "rid-alone", {}, parse, "v1")
        assert writer.alone == [True]
        writer.alone.clear()
        await asyncio.gather(*(service.infer("lone-model", lambda i=i: f"rid-{i}", {}, parse, "v1")
                               for i in range(5)))

    with mock.patch("modelyard.serve.inference.observe_success"):
        asyncio.run(main())
    # the first to start yields, so the four that arrived with it start too and are not alone; it commits
    # last, once they are done, alone by then
    assert writer.alone == [False, False, False, False, True]
    assert service.in_flight == 0


def _streamed(messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers or []}, receive)


def test_a_streamed_body_is_read_whole_and_refused_once_past_the_limit() -> None:
    """No Content-Length (chunked): the chunks are joined, a body past the limit is a 413 as it arrives, a
    client gone mid-body is a disconnect, and a body something read before is read again from it."""
    def chunks(*parts: bytes) -> list[dict[str, Any]]:
        return [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]

    assert asyncio.run(read_body(_streamed(chunks(b'{"a"', b": 1", b"}")), 100)) == b'{"a": 1}'
    with pytest.raises(PayloadTooLargeError, match="over the limit of 10 bytes"):
        asyncio.run(read_body(_streamed(chunks(b"123456", b"789012", b"3")), 10))
    with pytest.raises(PayloadTooLargeError, match="is 11 bytes"):
        asyncio.run(read_body(_streamed(chunks(b"1"), [(b"content-length", b"11")]), 10))
    with pytest.raises(ClientDisconnect):
        asyncio.run(read_body(_streamed([*chunks(b"12", b"34")[:1], {"type": "http.disconnect"}]), 10))
    with pytest.raises(BadRequestError, match="empty"):
        asyncio.run(read_body(_streamed(chunks(b"")), 10))

    async def twice() -> tuple[bytes, bytes]:
        request = _streamed(chunks(b"ab", b"cd"))
        first = await request.body()
        return first, await read_body(request, 10)

    assert asyncio.run(twice()) == (b"abcd", b"abcd")
