"""The Open Inference Protocol's tensors on their own: the binary layout, NaN in JSON, binary bodies, and
the gRPC request decoding, each refusing bad input with a SchemaError naming the input."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from modelyard.errors import BadRequestError, SchemaError
from modelyard.serve import v2
from modelyard.serve.grpc import inference_pb2 as pb
from modelyard.serve.grpc.server import parse as parse_grpc
from modelyard.serve.http import parse_json
from modelyard.serve.tensors import decode_raw, encode_raw


def _strings(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def test_bytes_tensors_are_length_prefixed_and_empty_is_missing() -> None:
    raw = _strings(b"Harbor", b"", "Søby".encode())
    assert decode_raw("town", "BYTES", [3], raw) == ["Harbor", None, "Søby"]
    assert encode_raw("BYTES", ["Harbor", None, "Søby"]) == raw
    with pytest.raises(SchemaError) as info:
        decode_raw("town", "BYTES", [3], raw[:-2])
    assert info.value.field == "town"
    with pytest.raises(SchemaError):
        decode_raw("town", "BYTES", [2], raw)  # three elements for a shape of two


@pytest.mark.parametrize(("datatype", "dtype"), [("FP64", "<f8"), ("FP32", "<f4"), ("INT64", "<i8"),
                                                 ("INT32", "<i4"), ("UINT8", "<u1"), ("BOOL", "?")])
def test_fixed_size_tensors_round_trip_little_endian(datatype: str, dtype: str) -> None:
    values = np.array([1, 0, 3], dtype=dtype)
    assert decode_raw("x", datatype, [3], values.tobytes()) == values.tolist()
    assert encode_raw(datatype, values.tolist()) == values.tobytes()
    with pytest.raises(SchemaError, match="bytes"):
        decode_raw("x", datatype, [4], values.tobytes())


def test_missing_numbers_are_nan_in_binary() -> None:
    assert encode_raw("FP64", [1.5, None]) == np.array([1.5, np.nan]).tobytes()
    decoded = decode_raw("x", "FP64", [2], np.array([1.5, np.nan]).tobytes())
    assert decoded[0] == 1.5 and decoded[1] != decoded[1]


def test_nan_and_infinity_tokens_are_read_only_where_asked() -> None:
    body = b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP64", "data": [1.0, NaN, -Infinity]}]}'
    data = parse_json(body, non_finite=True)["inputs"][0]["data"]
    assert data[0] == 1.0 and data[1] != data[1] and data[2] == float("-inf")
    with pytest.raises(BadRequestError):
        parse_json(body)  # /v1 keeps strict JSON
    with pytest.raises(BadRequestError):
        parse_json(b'{"NaN": [1, 2', non_finite=True)


def test_binary_body_takes_inputs_in_order_and_says_which_outputs_go_binary() -> None:
    header = {"inputs": [
        {"name": "area", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
        {"name": "town", "shape": [2], "datatype": "BYTES", "data": ["a", ""]},
        {"name": "kind", "shape": [2, 1], "datatype": "BYTES", "parameters": {"binary_data_size": 12}},
    ], "parameters": {"binary_data_output": True},
        "outputs": [{"name": "predict"}, {"name": "predict_proba", "parameters": {"binary_data": False}}]}
    binary = np.array([1.5, 2.0], dtype="<f4").tobytes() + _strings(b"flat", b"")
    parsed = v2.parse(v2.Body(header, binary))
    assert [dict(r) for r in parsed.rows] == [{"area": 1.5, "town": "a", "kind": "flat"},
                                              {"area": 2.0, "town": None, "kind": None}]
    assert isinstance(parsed, v2.V2Parsed) and parsed.binary_outputs == {"predict"}
    assert parsed.probabilities
    with pytest.raises(SchemaError) as info:
        v2.parse(v2.Body(header, binary + b"extra"))
    assert info.value.field == "inputs"
    with pytest.raises(SchemaError) as info:
        v2.parse(v2.Body(header, binary[:-3]))
    assert info.value.field == "kind"


def test_json_bodies_answer_json_unless_binary_is_asked() -> None:
    body = orjson.loads(b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}')
    parsed = v2.parse(body)
    assert isinstance(parsed, v2.V2Parsed) and parsed.binary_outputs == frozenset()
    body["outputs"] = [{"name": "predict", "parameters": {"binary_data": True}}]
    assert v2.parse(body).binary_outputs == {"predict"}  # type: ignore[attr-defined]


def test_grpc_requests_read_raw_or_typed_contents() -> None:
    request = pb.ModelInferRequest(model_name="m", id="call-1")
    request.inputs.add(name="area", datatype="FP64", shape=[2])
    request.inputs.add(name="town", datatype="BYTES", shape=[2])
    request.raw_input_contents.extend([np.array([1.0, np.nan]).tobytes(), _strings(b"a", b"")])
    parsed = parse_grpc(request)
    assert parsed.rows[0] == {"area": 1.0, "town": "a"}
    assert parsed.rows[1]["town"] is None and parsed.rows[1]["area"] != parsed.rows[1]["area"]
    assert parsed.meta == {"outputs": ["predict"], "id": "call-1"}
    typed = pb.ModelInferRequest(model_name="m")
    tensor = typed.inputs.add(name="area", datatype="FP64", shape=[2])
    tensor.contents.fp64_contents.extend([3.0, 4.0])
    typed.outputs.add(name="predict_proba")
    parsed = parse_grpc(typed)
    assert [r["area"] for r in parsed.rows] == [3.0, 4.0] and parsed.probabilities
    tensor.contents.fp64_contents.append(5.0)
    with pytest.raises(SchemaError) as info:
        parse_grpc(typed)
    assert info.value.field == "area"
    typed.outputs.add(name="explain")
    with pytest.raises(SchemaError) as info:
        parse_grpc(typed)
    assert info.value.field in ("outputs", "area")
