"""The bundle: one artifact per model version (files and checksums), its typed ``Manifest`` and the
reference profile drift is measured against.

- ``files``: write, verify, load, pack and unpack a bundle folder;
- ``manifest``: the typed, versioned ``manifest.json``, read and written in one place;
- ``profile``: the reference statistics (``ReferenceProfile``) kept in the manifest.
"""

from __future__ import annotations

from modelyard.bundle.checksums import sha256_bytes, sha256_file
from modelyard.bundle.files import (
    MODEL_FILE,
    ONNX_FILE,
    PREDICTION_COLUMN,
    REFERENCE_FILE,
    TARGET_COLUMN,
    Bundle,
    load_bundle,
    pack,
    unpack,
    verify_bundle,
    write_bundle,
)
from modelyard.bundle.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    DataLineage,
    DataWindow,
    Environment,
    FastPathDecision,
    GitState,
    Lineage,
    Manifest,
    Monitoring,
    SplitLineage,
    TrainingCost,
    read_manifest,
    write_manifest,
)
from modelyard.bundle.profile import (
    CategoricalProfile,
    ColumnProfile,
    NumericProfile,
    ReferenceProfile,
    profile_frame,
    profile_series,
)

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "MODEL_FILE",
    "ONNX_FILE",
    "PREDICTION_COLUMN",
    "REFERENCE_FILE",
    "TARGET_COLUMN",
    "Bundle",
    "CategoricalProfile",
    "ColumnProfile",
    "DataLineage",
    "DataWindow",
    "Environment",
    "FastPathDecision",
    "GitState",
    "Lineage",
    "Manifest",
    "Monitoring",
    "NumericProfile",
    "ReferenceProfile",
    "SplitLineage",
    "TrainingCost",
    "load_bundle",
    "pack",
    "profile_frame",
    "profile_series",
    "read_manifest",
    "sha256_bytes",
    "sha256_file",
    "unpack",
    "verify_bundle",
    "write_bundle",
    "write_manifest",
]
