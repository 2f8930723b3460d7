"""Loaded models and the machinery that runs them: life cycle, partial prediction, alias following."""

from modelyard.runtime.follower import AliasFollower, ModelLoader, Readiness
from modelyard.runtime.partial import PartialResult, RowError, RowResult
from modelyard.runtime.predictor import Model

__all__ = ["AliasFollower", "Model", "ModelLoader", "PartialResult", "Readiness", "RowError", "RowResult"]
