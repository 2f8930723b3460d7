"""Reproducible training: spec → data (hashed) → one scikit-learn Pipeline → evaluated → bundle.

``train`` and ``TrainResult`` are loaded on first use (``modelyard._lazy``): reading a spec does not import
scikit-learn.
"""

from __future__ import annotations

import typing

from modelyard import _lazy
from modelyard.pipeline.spec import TrainSpec, load_spec, parse_spec

if typing.TYPE_CHECKING:
    from modelyard.pipeline.training import TrainResult, train

__all__ = ["TrainResult", "TrainSpec", "load_spec", "parse_spec", "train"]

__getattr__, __dir__ = _lazy.lazy_names(__name__, {"train": "modelyard.pipeline.training",
                                             "TrainResult": "modelyard.pipeline.training"})
