"""``manifest.json``: the typed, versioned description of a bundle, read and written here and nowhere else.

Format history (``format_version``):

- 1: the untyped manifest of modelyard before the typed model (a manifest without ``format_version``
  counts as 1). Its keys are the ones format 2 types, so it loads as it is.
- 2: the typed ``Manifest`` below; adds ``global_importance`` and ``training_cost`` (both optional).
  Later optional fields (``lineage.data.window``, ``training_cost.measured_in`` and the budget) keep
  format 2: a bundle without them loads as before, and an older reader keeps them as unknown keys.

A manifest whose ``format_version`` is newer than ``FORMAT_VERSION`` is refused with a ``BundleError``
(a newer modelyard wrote it; this one would misread it). Unknown keys are *kept*: every model here allows
extra keys, stores them as they were and writes them back unchanged, so a key a newer writer or a user's
own tool added survives a publish; nothing in modelyard interprets them. (The input and output schemas are
the exception: ``schema.py`` owns them and ignores keys it does not know.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelyard.bundle.checksums import sha256_bytes, sha256_file
from modelyard.bundle.profile import ColumnProfile, ReferenceProfile
from modelyard.errors import BundleError, IntegrityError
from modelyard.schema import InputSchema, OutputSchema

FORMAT_VERSION = 2
MANIFEST = "manifest.json"

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "ColumnProfile",
    "DataLineage",
    "DataWindow",
    "Environment",
    "FastPathDecision",
    "GitState",
    "Lineage",
    "Manifest",
    "Monitoring",
    "ReferenceProfile",
    "SplitLineage",
    "TrainingCost",
    "read_manifest",
    "write_manifest",
]


class _Section(BaseModel):
    """A manifest section: typed fields, and any other key kept as it was."""

    model_config = ConfigDict(extra="allow")


class Environment(_Section):
    """The interpreter and packages a model was fitted with (pinned again by ``modelyard deploy``)."""

    python: str | None = None
    implementation: str | None = None
    platform: str | None = None
    packages: dict[str, str] = Field(default_factory=dict)


class DataWindow(_Section):
    """The moving window a windowed query read: ``{window_start}`` and ``{window_end}`` (ISO, UTC) and the
    length asked for (``30d``). ``reproduce`` binds the same two values again."""

    start: str
    end: str
    length: str | None = None


class DataLineage(_Section):
    """The data a model was fitted on: where it was, its SHA-256, its shape (and its window, if any)."""

    sha256: str | None = None
    location: str | None = None
    description: str | None = None
    rows: int | None = None
    columns: list[str] = Field(default_factory=list)
    window: DataWindow | None = None


class SplitLineage(_Section):
    test_size: float | None = None
    train_rows: int | None = None
    test_rows: int | None = None


class GitState(_Section):
    commit: str
    dirty: bool = False


class Lineage(_Section):
    """What a model was made from. ``spec`` is set when it was trained from a spec (``reproduce`` needs it);
    ``source`` says where a model published from outside came from (``modelyard.publish``, ``mlflow:...``)."""

    source: str | None = None
    spec: dict[str, Any] | None = None
    spec_dir: str | None = None
    data: DataLineage | None = None
    seed: int | None = None
    split: SplitLineage | None = None
    git: GitState | None = None
    environment: Environment | None = None


class FastPathDecision(_Section):
    """Whether the ONNX copy serves (``enabled`` with ``kind == "onnx"``), and why or why not."""

    enabled: bool = False
    kind: Literal["onnx", "sklearn"] = "sklearn"
    reason: str | None = None
    detail: str | None = None
    tried: bool | None = None
    runtime: str | None = None
    rows_checked: int | None = None
    reference_rows: int | None = None
    label_mismatches: int | None = None
    max_abs_diff: float | None = None
    tolerance: float | None = None
    compile_seconds: float | None = None

    @property
    def serves_onnx(self) -> bool:
        return self.enabled and self.kind == "onnx"


class TrainingCost(_Section):
    """What fitting the model cost, as measured by the trainer (``pipeline/budget.py``).

    ``measured_in`` says how: ``"child"`` (a budgeted fit runs in a child process: ``peak_memory_mb`` is that
    process's own high-water mark, interpreter included) or ``"process"`` (in the trainer's process:
    ``peak_memory_mb`` is the process's high-water mark, ``memory_growth_mb`` how far the fit raised it, a
    lower bound of what the fit itself needed). Bundles before these fields load with them unset."""

    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    peak_memory_mb: float | None = None
    memory_growth_mb: float | None = None
    measured_in: Literal["process", "child"] | None = None
    max_seconds: float | None = None
    max_memory_mb: float | None = None


class Monitoring(_Section):
    """Alert-rule settings that ship with the bundle: ``{rule: {param: value}}``."""

    rules: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Manifest(_Section):
    """The manifest of one bundle. ``version``/``published_by`` are set by the registry on publish."""

    format_version: int = 1
    name: str
    version: int | None = None
    published_by: str | None = None
    created: str | None = None
    modelyard_version: str | None = None
    task: Literal["regression", "classification"]
    estimator: str | None = None
    input_schema: InputSchema
    output_schema: OutputSchema
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: Lineage = Field(default_factory=Lineage)
    reference: ReferenceProfile | None = None
    fast_path: FastPathDecision | None = None  # None: published before the fast path existed
    monitoring: Monitoring | None = None
    global_importance: dict[str, float] | None = None
    training_cost: TrainingCost | None = None
    files: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _task_from_output_schema(cls, data: Any) -> Any:
        """Format 1 wrote ``task`` twice (top level and in the output schema); either one is enough."""
        if isinstance(data, Mapping) and "task" not in data:
            output = data.get("output_schema")
            if isinstance(output, Mapping) and "task" in output:
                return {**data, "task": output["task"]}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "the manifest") -> Manifest:
        """Parse a manifest (``manifest.json`` or the registry's stored copy), refusing newer formats."""
        if not isinstance(data, Mapping):
            raise BundleError(f"{origin} is not a JSON object", file=MANIFEST)
        found = data.get("format_version", 1)
        if not isinstance(found, int) or isinstance(found, bool) or found < 1:
            raise BundleError(f"{origin} has format_version {found!r}; expected an integer from 1 to "
                              f"{FORMAT_VERSION}", file=MANIFEST)
        if found > FORMAT_VERSION:
            writer = data.get("modelyard_version") or "a newer modelyard"
            raise BundleError(
                f"{origin} is in bundle format {found}, written by {writer}; this modelyard reads formats "
                f"1 to {FORMAT_VERSION}: upgrade modelyard to load it", file=MANIFEST)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "(top level)"
            raise BundleError(f"{origin} is not a valid format-{found} manifest: {where}: {first['msg']} "
                              f"({exc.error_count()} problem(s))", file=MANIFEST) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (what ``manifest.json`` and the registry's copy hold)."""
        data: dict[str, Any] = json.loads(self.to_json())
        return data

    def to_json(self) -> str:
        # json.dumps rather than pydantic's JSON: a NaN statistic must survive as NaN, not become null
        return json.dumps(self.model_dump(mode="python"), indent=2, sort_keys=True, default=str)

    @property
    def serves_onnx(self) -> bool:
        return self.fast_path is not None and self.fast_path.serves_onnx


def read_manifest(directory: Path, expected_sha256: str | None = None) -> Manifest:
    """The manifest of the bundle in ``directory``, checked against the registry's SHA-256 when given."""
    path = directory / MANIFEST
    if not path.exists():
        raise BundleError(f"{directory} is not a bundle: {MANIFEST} is missing", file=MANIFEST)
    data = path.read_bytes()
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise IntegrityError(
            f"{MANIFEST} of {directory} does not match the registry's checksum: refusing to load it",
            file=MANIFEST,
        )
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"{MANIFEST} of {directory} is not valid JSON: {exc}", file=MANIFEST) from None
    return Manifest.from_dict(raw, origin=f"{MANIFEST} of {directory}")


def write_manifest(directory: Path, manifest: Manifest) -> Manifest:
    """(Re)compute the checksum of every file next to the manifest and write it in the current format."""
    files = {
        p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST
    }
    final = manifest.model_copy(update={"format_version": FORMAT_VERSION, "files": files})
    (directory / MANIFEST).write_text(final.to_json())
    return final
