"""modelyard: from a reproducible scikit-learn pipeline to a healthy model in production."""

from __future__ import annotations

from modelyard._version import __version__
from modelyard.api import load, publish
from modelyard.config import Settings
from modelyard.errors import (
    IntegrityError,
    ModelyardError,
    NotFoundError,
    SchemaError,
    SchemaProblem,
    SpecError,
)
from modelyard.runtime import Model

__all__ = [
    "IntegrityError",
    "Model",
    "ModelyardError",
    "NotFoundError",
    "SchemaError",
    "SchemaProblem",
    "Settings",
    "SpecError",
    "__version__",
    "load",
    "publish",
]
