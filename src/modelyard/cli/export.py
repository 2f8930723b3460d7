"""`modelyard export`: the fast-path model for other runtimes (mobile, edge, other languages)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from modelyard.bundle import ONNX_FILE, Bundle, FastPathDecision, Manifest, sha256_bytes
from modelyard.cli._common import console, friendly, settings
from modelyard.errors import BadRequestError, BundleError
from modelyard.registry import Registry, parse_ref
from modelyard.schema import ColumnSchema

FORMATS = ("onnx",)


@friendly
def export_cmd(
    ref: str = typer.Argument(..., metavar="NAME[@ALIAS|@VERSION]", help="The model version to export."),
    fmt: str = typer.Option("onnx", "--format", help="Export format (onnx)."),
    out: Path = typer.Option(..., "--out", help="Where to write the model; its schema goes next to it."),
) -> None:
    """Write the ONNX fast-path model and its input schema (FILE and FILE's stem + .schema.json)."""
    if fmt not in FORMATS:
        raise BadRequestError(f"--format {fmt}: not supported (supported: {', '.join(FORMATS)})")
    registry = Registry(settings())
    record = registry.resolve(ref)
    name, _ = parse_ref(ref)
    folder = registry.bundle_dir(record)  # every checksum verified before anything is read
    info = record.manifest.fast_path
    if info is not None and info.enabled and (folder / ONNX_FILE).exists():
        onnx_bytes = (folder / ONNX_FILE).read_bytes()  # verified; no pickle needs loading
    elif info is not None and info.tried is not False:  # tried at publish and refused: the reason holds
        raise BundleError(f"{name} v{record.version} has no ONNX form: {info.reason}", file=ONNX_FILE)
    else:  # published before the fast path existed, or without it: compile now, with the same check
        onnx_bytes, info = compile_now(registry.load_bundle(record))
    schema_path = export_onnx(record.manifest, onnx_bytes, info, out)
    console.print(f"exported {name} v{record.version} to {out} ({len(onnx_bytes):,} bytes) and "
                  f"{schema_path}; parity with scikit-learn: max |diff| {info.max_abs_diff or 0.0:.3g}")


def compile_now(bundle: Bundle) -> tuple[bytes, FastPathDecision]:
    """Compile a bundle published without a fast path, with the publish-time parity check."""
    from modelyard.runtime.fastpath import compile_fast_path
    schema = bundle.input_schema
    compiled = compile_fast_path(bundle.pipeline_, schema, schema.validate_rows(bundle.reference_inputs()),
                                 task=bundle.output_schema.task, label_dtype=bundle.output_schema.dtype)
    if compiled.onnx_bytes is None:
        raise BundleError(f"{bundle.name} v{bundle.version} has no ONNX form: {compiled.info['reason']}",
                          file=ONNX_FILE)
    return compiled.onnx_bytes, FastPathDecision.model_validate(compiled.info)


def export_onnx(manifest: Manifest, onnx_bytes: bytes, info: FastPathDecision, out: Path) -> Path:
    """Write ``out`` and ``<out stem>.schema.json``; return the schema's path."""
    import onnx

    from modelyard.runtime.onnxconv import MISSING_STRING

    model = onnx.load_from_string(onnx_bytes)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(onnx_bytes)
    schema_path = out.with_name(out.stem + ".schema.json")
    inputs = {i.name for i in model.graph.input}
    output = manifest.output_schema
    columns = manifest.input_schema.columns
    doc = {
        "model": manifest.name,
        "version": manifest.version,
        "format": "onnx",
        "file": out.name,
        "sha256": sha256_bytes(onnx_bytes),
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "task": output.task,
        "target": output.target,
        "classes": output.classes,
        "inputs": [_input(c) for c in columns if c.name in inputs],
        "outputs": [{"name": o.name, "type": onnx.helper.printable_type(o.type)} for o in model.graph.output],
        "parity": {"max_abs_diff": info.max_abs_diff, "tolerance": info.tolerance,
                   "rows_checked": info.rows_checked, "detail": info.detail},
        "usage": "Feed every input as a [N, 1] tensor, one row per entry. A missing number is NaN; a missing "
                 f"category is {MISSING_STRING!r} (the empty string). The first output is the prediction"
                 + ("; the second holds one probability per class, in the order of 'classes'."
                    if output.task == "classification" else "."),
    }
    schema_path.write_text(json.dumps(doc, indent=2))
    return schema_path


def _input(column: ColumnSchema) -> dict[str, Any]:
    from modelyard.runtime.onnxconv import MISSING_STRING
    numeric = column.kind == "numeric"
    return {
        "name": column.name,
        "type": "tensor(double)" if numeric else "tensor(string)",
        "shape": [None, 1],
        "kind": column.kind,
        "nullable": column.nullable,
        "missing": "NaN" if numeric else MISSING_STRING,
        **({"min": column.min, "max": column.max} if numeric else {"categories": column.categories}),
    }
