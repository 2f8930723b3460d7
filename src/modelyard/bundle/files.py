"""One artifact per model version: the fitted pipeline, its manifest and its reference data.

A bundle is a folder; the registry stores it as one content-addressed tar archive. ``manifest.json`` lists
the SHA-256 of every other file, and the registry records the SHA-256 of the archive and of the manifest, so
nothing is unpickled unless every byte matches what was published. Pickle runs code when it is loaded: a
checksum mismatch is an ``IntegrityError`` that names the file, never a warning.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from modelyard.bundle.checksums import sha256_file
from modelyard.bundle.manifest import Manifest, read_manifest, write_manifest
from modelyard.errors import BundleError, IntegrityError
from modelyard.schema import InputSchema, OutputSchema

MODEL_FILE = "model.joblib"
ONNX_FILE = "model.onnx"
REFERENCE_FILE = "reference.parquet"
PREDICTION_COLUMN = "__prediction__"
TARGET_COLUMN = "__target__"


@dataclass
class Bundle:
    """A verified, loaded bundle. Loaded state ends in ``_``."""

    path: Path
    manifest: Manifest
    pipeline_: Any = field(repr=False)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int | None:
        return self.manifest.version

    @property
    def input_schema(self) -> InputSchema:
        return self.manifest.input_schema

    @property
    def output_schema(self) -> OutputSchema:
        return self.manifest.output_schema

    def reference(self) -> pd.DataFrame:
        """The held-out reference set, with the target and the model's own predictions when known."""
        return pd.read_parquet(self.path / REFERENCE_FILE)

    def reference_inputs(self) -> pd.DataFrame:
        ref = self.reference()
        return ref[[c for c in ref.columns if c not in (PREDICTION_COLUMN, TARGET_COLUMN)]]


def write_bundle(
    directory: Path,
    *,
    pipeline: Any,
    manifest: Manifest,
    reference: pd.DataFrame,
    extra_files: dict[str, bytes] | None = None,
    model_bytes: bytes | None = None,
) -> Manifest:
    """Write the files of a bundle and its manifest (with every file's checksum); return the manifest.

    ``model_bytes``: what ``joblib.dump(pipeline)`` gave where the pipeline was fitted, written as it is (an
    online learner's version is written in another process, from an unpickled copy whose dump could differ
    in its bytes: object sharing changes in a round trip)."""
    import joblib  # on use: reading a manifest or verifying files needs no unpickler

    directory.mkdir(parents=True, exist_ok=True)
    if model_bytes is None:
        joblib.dump(pipeline, directory / MODEL_FILE)
    else:
        (directory / MODEL_FILE).write_bytes(model_bytes)
    reference.reset_index(drop=True).to_parquet(directory / REFERENCE_FILE, index=False)
    for name, data in (extra_files or {}).items():
        (directory / name).write_bytes(data)
    return write_manifest(directory, manifest)


def verify_bundle(directory: Path, expected_manifest_sha256: str | None = None) -> Manifest:
    """Check every file against the manifest; raise ``IntegrityError`` naming the first that differs."""
    manifest = read_manifest(directory, expected_manifest_sha256)
    for name, expected in manifest.files.items():
        path = directory / name
        if not path.exists():
            raise IntegrityError(f"bundle file {name} is missing from {directory}", file=name)
        actual = sha256_file(path)
        if actual != expected:
            raise IntegrityError(
                f"bundle file {name} in {directory} has SHA-256 {actual[:12]}..., the manifest says "
                f"{expected[:12]}...: the artifact is corrupt or was changed, refusing to load it",
                file=name,
            )
    return manifest


def load_bundle(directory: Path, expected_manifest_sha256: str | None = None) -> Bundle:
    """Verify, then unpickle. Nothing is unpickled before every checksum matched."""
    import joblib

    manifest = verify_bundle(directory, expected_manifest_sha256)
    try:
        pipeline = joblib.load(directory / MODEL_FILE)
    except Exception as exc:  # a verified file that still fails to load: version skew, most often
        raise BundleError(f"cannot load {MODEL_FILE} from {directory}: {exc}", file=MODEL_FILE) from exc
    return Bundle(path=directory, manifest=manifest, pipeline_=pipeline)


def pack(directory: Path) -> bytes:
    """A deterministic tar of the bundle folder (sorted names, zeroed times), so equal bundles hash equal."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(directory.iterdir()):
            if not path.is_file():
                continue
            info = tarfile.TarInfo(path.name)
            info.size = path.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


def unpack(archive: Path, destination: Path) -> None:
    """Unpack into ``destination`` atomically (a temporary sibling, then a rename)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=destination.parent))
    try:
        with tarfile.open(archive, mode="r") as tar:
            for member in tar.getmembers():
                if not member.isfile() or "/" in member.name or member.name.startswith("."):
                    raise IntegrityError(f"unexpected entry {member.name!r} in {archive}", file=archive.name)
            tar.extractall(tmp, filter="data")
        try:
            os.rename(tmp, destination)
        except OSError:  # another process unpacked it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
