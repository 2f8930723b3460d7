"""Why a model answered what it did: one attribution per input column, adding up to the prediction.

Exact TreeSHAP through the fitted preprocessing for tree ensembles, shap's model-agnostic explainer over
the whole pipeline otherwise (``shap`` is the optional extra ``modelyard[explain]``); the global
importance of a version stored in its manifest at publish, and the comparison ``check`` gates on.
"""

from modelyard.explain.backends import SHAP_HINT, load_shap
from modelyard.explain.diff import ColumnChange, ExplanationDiff, diff
from modelyard.explain.explainer import ModelExplainer, explain_rows, explainer_for
from modelyard.explain.importance import Collapse, collapsed, global_importance, shares
from modelyard.explain.result import SPACES, OutputExplanation, RowExplanation

__all__ = [
    "SHAP_HINT",
    "SPACES",
    "Collapse",
    "ColumnChange",
    "ExplanationDiff",
    "ModelExplainer",
    "OutputExplanation",
    "RowExplanation",
    "collapsed",
    "diff",
    "explain_rows",
    "explainer_for",
    "global_importance",
    "load_shap",
    "shares",
]
