"""Tensors of the Open Inference Protocol, whatever the transport (REST JSON, REST binary, gRPC).

A transport decodes its input tensors into ``Tensor`` (name, shape, flat Python values); ``assemble`` turns
them into protocol-neutral rows; ``output_tensors`` turns an answered request back into tensors, which the
transport writes as JSON data, binary data or gRPC raw contents.

Two input layouts are understood: one tensor per column (named like the column, shape ``[n]`` or ``[n, 1]``,
as MLServer's pandas codec and tritonclient users send), or a single 2-D tensor ``[n, k]`` whose columns
follow the model's schema order (as KServe's sklearn server takes it). Outputs are ``predict`` and, for
classifiers when asked for, ``predict_proba`` (``[n, classes]``).

Missing values: ``null`` in JSON, NaN in binary and gRPC numeric tensors, and an empty element in a ``BYTES``
tensor (the protocol has no null string; tritonclient writes ``None`` as the text "None" otherwise).

Binary layout (the protocol's binary tensor data extension and gRPC ``raw_*_contents``): fixed-size types
little-endian, ``BOOL`` one byte per element, ``BYTES`` each element as a 4-byte little-endian length then
its bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelyard.errors import SchemaError
from modelyard.runtime import Model
from modelyard.serve.inference import Outcome, Parsed

NUMPY_TYPES: dict[str, str] = {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1",
    "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}
DATATYPES = frozenset({*NUMPY_TYPES, "BYTES"})
OUTPUTS = ("predict", "predict_proba")
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Tensor:
    """One decoded input tensor: values flat, in row-major order."""

    name: str
    shape: list[int]
    values: list[Any]


@dataclass
class V2Parsed(Parsed):
    """A V2 request: which outputs go back as binary data (REST binary extension)."""

    binary_outputs: frozenset[str] = frozenset()


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str
    shape: list[int]
    values: list[Any]
    parameters: dict[str, Any] = field(default_factory=dict)


def check_shape(name: str, shape: Any) -> list[int]:
    if (not isinstance(shape, (list, tuple)) or not shape or len(shape) > 2
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise SchemaError(f"input '{name}': 'shape' must be [rows] or [rows, columns], non-negative",
                          field=name)
    return list(shape)


def check_datatype(name: str, datatype: Any) -> str:
    if datatype not in DATATYPES:
        known = ", ".join(sorted(DATATYPES))
        raise SchemaError(f"input '{name}': datatype {datatype!r} is not one of {known}", field=name)
    return str(datatype)


def check_count(name: str, shape: list[int], values: Sequence[Any]) -> None:
    if math.prod(shape) != len(values):
        raise SchemaError(f"input '{name}': shape {shape} holds {math.prod(shape)} values, "
                          f"data has {len(values)}", field=name)


def decode_raw(name: str, datatype: str, shape: list[int], raw: bytes | memoryview) -> list[Any]:
    """The values of one tensor in the binary layout (REST binary data, gRPC raw contents)."""
    count = math.prod(shape)
    if datatype == "BYTES":
        values = _decode_strings(name, raw, count)
    else:
        dtype = np.dtype(NUMPY_TYPES[datatype])
        if len(raw) != count * dtype.itemsize:
            raise SchemaError(f"input '{name}': shape {shape} of {datatype} takes {count * dtype.itemsize} "
                              f"bytes, {len(raw)} were sent", field=name)
        values = np.frombuffer(raw, dtype=dtype).tolist()
    check_count(name, shape, values)
    return values


def _decode_strings(name: str, raw: bytes | memoryview, count: int) -> list[Any]:
    data = bytes(raw)
    end = len(data)
    unpack = _LENGTH.unpack_from
    chunks: list[bytes] = []
    at = 0
    while at < end:
        if at + 4 > end:
            raise SchemaError(f"input '{name}': BYTES data ends inside an element's 4-byte length", field=name)
        size = unpack(data, at)[0]
        at += 4
        if at + size > end:
            raise SchemaError(f"input '{name}': BYTES element {len(chunks)} is {size} bytes, only "
                              f"{end - at} were sent", field=name)
        chunks.append(data[at:at + size])
        at += size
    try:
        return [chunk.decode("utf-8") if chunk else None for chunk in chunks]
    except UnicodeDecodeError:
        return [text(name, chunk, row) for row, chunk in enumerate(chunks)]  # raises, naming the row


def text(name: str, value: bytes, row: int) -> str | None:
    """A ``BYTES`` element as text; empty is a missing value."""
    if not value:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise SchemaError(f"input '{name}': element {row} is not UTF-8 text", field=name, row=row) from None


def strings(values: Iterable[Any]) -> list[Any]:
    """JSON ``BYTES`` values: an empty string is a missing value, like in the binary layout."""
    return [None if v == "" else v for v in values]


def encode_raw(datatype: str, values: Sequence[Any]) -> bytes:
    if datatype == "BYTES":
        parts: list[bytes] = []
        for v in values:
            data = b"" if v is None else (v if isinstance(v, bytes) else str(v).encode("utf-8"))
            parts += (_LENGTH.pack(len(data)), data)
        return b"".join(parts)
    if datatype.startswith("FP"):
        values = [math.nan if v is None else v for v in values]
    return np.asarray(values, dtype=NUMPY_TYPES[datatype]).tobytes()


def requested_outputs(names: Iterable[Any]) -> set[str]:
    chosen = set(names)
    unknown = chosen - set(OUTPUTS)
    if unknown:
        first = sorted(map(str, unknown))[0]
        raise SchemaError(f"unknown output {first!r} (predict, predict_proba)", field="outputs")
    return {str(name) for name in chosen}


def assemble(tensors: Sequence[Tensor], outputs: set[str], parameters: Mapping[str, Any], request_id: Any,
             binary_outputs: frozenset[str] = frozenset()) -> V2Parsed:
    """Rows (or, for one matrix tensor, rows once the model's column order is known) from input tensors."""
    if not tensors:
        raise SchemaError("'inputs' must be a non-empty list of tensors", field="inputs")
    probabilities = "predict_proba" in outputs or parameters.get("probabilities") is True
    meta: dict[str, Any] = {"outputs": sorted(outputs) or ["predict"]}
    if isinstance(request_id, str) and request_id:
        meta["id"] = request_id
    if len(tensors) == 1 and len(tensors[0].shape) == 2 and tensors[0].shape[1] != 1:
        matrix = tensors[0]
        return V2Parsed([], probabilities, meta, complete=lambda model: _matrix_rows(model, matrix),
                        binary_outputs=binary_outputs)
    n_rows = {t.shape[0] for t in tensors}
    if len(n_rows) != 1:
        raise SchemaError("all inputs must have the same number of rows (shape[0])", field="inputs")
    for t in tensors:
        if len(t.shape) == 2 and t.shape[1] != 1:
            raise SchemaError(f"input '{t.name}': a column tensor must have shape [n] or [n, 1]", field=t.name)
    columns = [(t.name, t.values) for t in tensors]
    rows = [{name: values[i] for name, values in columns} for i in range(n_rows.pop())]
    return V2Parsed(rows, probabilities, meta, binary_outputs=binary_outputs)


def _matrix_rows(model: Model, matrix: Tensor) -> list[dict[str, Any]]:
    columns = model.schema.names
    n, k = matrix.shape
    if k != len(columns):
        raise SchemaError(f"input '{matrix.name}' has {k} columns; {model.name} takes {len(columns)}: "
                          f"{', '.join(columns)}", field=matrix.name)
    flat = matrix.values
    return [dict(zip(columns, flat[i * k:(i + 1) * k], strict=True)) for i in range(n)]


def datatype_of(values: Sequence[Any]) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, (int, float)) or v is None for v in values):
        return "FP64"
    return "BYTES"


def output_tensors(outcome: Outcome) -> list[OutputTensor]:
    model = outcome.routed.model
    n = len(outcome.predictions)
    out: list[OutputTensor] = []
    if "predict" in outcome.parsed.meta["outputs"]:
        out.append(OutputTensor("predict", datatype_of(outcome.predictions), [n], outcome.predictions))
    if outcome.probabilities is not None:
        k = len(model.classes_ or [])
        out.append(OutputTensor("predict_proba", "FP64", [n, k], [p for row in outcome.probabilities for p in row],
                                {"classes": model.classes_}))
    return out


def describe_model(model: Model) -> dict[str, Any]:
    inputs = [{"name": c.name, "datatype": "FP64" if c.kind == "numeric" else "BYTES", "shape": [-1]}
              for c in model.schema.columns]
    classes = model.classes_
    outputs = [{"name": "predict", "datatype": "FP64" if classes is None else datatype_of(list(classes)),
                "shape": [-1]}]
    if model.task == "classification":
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(classes or [])]})
    return {"name": model.name, "versions": [str(model.version)], "platform": "sklearn",
            "inputs": inputs, "outputs": outputs}
