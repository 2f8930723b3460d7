"""modelyard: from a reproducible scikit-learn pipeline to a healthy model in production.

The public names are loaded on first use (``modelyard._lazy``), so that ``import modelyard`` and every CLI
command that trains or predicts nothing do not pay for scikit-learn.
"""

from __future__ import annotations

import typing

from modelyard import _lazy
from modelyard._version import __version__

if typing.TYPE_CHECKING:
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

__getattr__, __dir__ = _lazy.lazy_names(__name__, {
    "load": "modelyard.api", "publish": "modelyard.api", "Settings": "modelyard.config",
    "IntegrityError": "modelyard.errors", "ModelyardError": "modelyard.errors",
    "NotFoundError": "modelyard.errors", "SchemaError": "modelyard.errors",
    "SchemaProblem": "modelyard.errors", "SpecError": "modelyard.errors", "Model": "modelyard.runtime",
})
