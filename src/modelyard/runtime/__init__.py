"""Loaded models and the machinery that runs them."""

from modelyard.runtime.predictor import Model

__all__ = ["Model"]
