"""Reproducible training: spec → data (hashed) → one scikit-learn Pipeline → evaluated → bundle."""

from modelyard.pipeline.spec import TrainSpec, load_spec, parse_spec
from modelyard.pipeline.train import TrainResult, train

__all__ = ["TrainResult", "TrainSpec", "load_spec", "parse_spec", "train"]
