"""scikit-learn → ONNX in double precision, with the converters skl2onnx lacks for exact parity.

Three gaps in skl2onnx (1.20) would make the compiled model differ from scikit-learn, or not run:
- its ``SimpleImputer`` converter refuses string columns whose missing value is NaN (what our pipelines
  use), and stores numeric fill values as float32: ours fills in the input's own precision. A missing
  category is fed to the graph as ``MISSING_STRING`` (the empty string);
- it joins columns with ``FeatureVectorizer``, whose output is always float32: we rewrite it to ``Concat``;
- it writes ``HistGradientBoostingRegressor`` as the old ``TreeEnsembleRegressor`` with float32 thresholds
  and a float32 output: ours is one ai.onnx.ml 5 ``TreeEnsemble`` that compares and sums in double, with
  scikit-learn's own float64 thresholds. (Its classifier converter also passes booleans onnx now refuses.)
Every input is one graph input per schema column: ``double [N, 1]`` or ``string [N, 1]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelyard.schema import InputSchema

MISSING_STRING = ""
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}  # skl2onnx refuses ml 5; _needs_ml5 declares it when used


def convert(pipeline: Any, schema: InputSchema, *, task: str) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
    from sklearn.impute import SimpleImputer

    inputs = [
        (c.name, DoubleTensorType([None, 1]) if c.kind == "numeric" else StringTensorType([None, 1]))
        for c in schema.columns
    ]
    options = {"zipmap": False} if task == "classification" else None
    model = convert_sklearn(
        pipeline,
        initial_types=inputs,
        target_opset=TARGET_OPSET,
        options=options,
        custom_conversion_functions={SimpleImputer: _convert_simple_imputer, **_hist_gradient_boosting()},
    )
    data: bytes = _needs_ml5(_exact_concat(model)).SerializeToString()
    return data


def _exact_concat(model: Any) -> Any:
    """Replace ``FeatureVectorizer`` (always float32 out) by ``Concat``, which keeps double as double.

    skl2onnx joins the columns of a step with ``FeatureVectorizer`` and casts the result back to double:
    every value would pass through float32 on its way. Its inputs are already of one type, shaped [N, d].
    """
    from onnx import helper

    for i, node in enumerate(model.graph.node):
        if node.op_type == "FeatureVectorizer" and node.domain == "ai.onnx.ml":
            model.graph.node[i].CopyFrom(
                helper.make_node("Concat", list(node.input), list(node.output), name=node.name, axis=1))
    return model


def _needs_ml5(model: Any) -> Any:
    """Declare ai.onnx.ml 5 when our ``TreeEnsemble`` is in the graph (skl2onnx only lets us say 3)."""
    if any(n.op_type == "TreeEnsemble" and n.domain == "ai.onnx.ml" for n in model.graph.node):
        for opset in model.opset_import:
            if opset.domain == "ai.onnx.ml":
                opset.version = 5
    return model


def _convert_hgb_regressor(scope: Any, operator: Any, container: Any) -> None:
    """HistGradientBoostingRegressor as one ai.onnx.ml 5 ``TreeEnsemble`` in double precision.

    skl2onnx writes the old ``TreeEnsembleRegressor`` with float32 thresholds and a float32 output, which
    can send a row down the other branch of a split that scikit-learn compares in float64.
    """
    from onnx import numpy_helper
    from skl2onnx.common.data_types import DoubleTensorType

    op = operator.raw_operator
    if not isinstance(operator.inputs[0].type, DoubleTensorType):
        raise NotImplementedError("HistGradientBoostingRegressor is converted for double inputs only")
    if getattr(op, "_preprocessor", None) is not None or op.n_trees_per_iteration_ != 1:
        raise NotImplementedError("HistGradientBoostingRegressor with native categorical features")
    link = type(op._loss.link).__name__
    if link not in ("IdentityLink", "LogLink"):
        raise NotImplementedError(f"HistGradientBoostingRegressor with a {link}")
    attrs: dict[str, list[Any]] = {k: [] for k in (
        "nodes_featureids", "nodes_modes", "nodes_splits", "nodes_missing_value_tracks_true",
        "nodes_truenodeids", "nodes_trueleafs", "nodes_falsenodeids", "nodes_falseleafs", "tree_roots",
        "leaf_weights")}
    # scikit-learn starts every row at the baseline and adds the trees in order; the baseline as the first
    # tree makes ONNX Runtime add the same numbers in the same order, so the sums match to the last bit
    _single_leaf_tree(attrs, float(np.ravel(op._baseline_prediction)[0]))
    for (predictor,) in op._predictors:
        nodes = predictor.nodes
        if nodes["is_categorical"].any():
            raise NotImplementedError("a HistGradientBoosting split on a native categorical feature")
        if nodes["is_leaf"][0]:
            _single_leaf_tree(attrs, float(nodes["value"][0]))
            continue
        leaf = np.cumsum(nodes["is_leaf"]) - 1 + len(attrs["leaf_weights"])
        branch = np.cumsum(1 - nodes["is_leaf"]) - 1 + len(attrs["nodes_modes"])
        attrs["leaf_weights"].extend(nodes["value"][nodes["is_leaf"] == 1].tolist())
        attrs["tree_roots"].append(int(branch[0]))
        for node in nodes[nodes["is_leaf"] == 0]:
            attrs["nodes_featureids"].append(int(node["feature_idx"]))
            attrs["nodes_modes"].append(0)  # BRANCH_LEQ: x <= threshold goes left, as in scikit-learn
            attrs["nodes_splits"].append(float(node["num_threshold"]))
            attrs["nodes_missing_value_tracks_true"].append(int(node["missing_go_to_left"]))
            for side, child in (("true", int(node["left"])), ("false", int(node["right"]))):
                is_leaf = int(nodes["is_leaf"][child])
                attrs[f"nodes_{side}nodeids"].append(int(leaf[child] if is_leaf else branch[child]))
                attrs[f"nodes_{side}leafs"].append(is_leaf)
    leaves = np.asarray(attrs.pop("leaf_weights"), dtype=np.float64)
    out = operator.outputs[0].full_name
    raw = scope.get_unique_variable_name("raw") if link == "LogLink" else out
    container.add_node(
        "TreeEnsemble", operator.inputs[0].full_name, raw, op_domain="ai.onnx.ml", op_version=3,
        name=scope.get_unique_operator_name("TreeEnsemble"), n_targets=1, aggregate_function=1,
        post_transform=0, tree_roots=attrs.pop("tree_roots"),
        nodes_modes=numpy_helper.from_array(np.asarray(attrs.pop("nodes_modes"), dtype=np.uint8)),
        nodes_splits=numpy_helper.from_array(np.asarray(attrs.pop("nodes_splits"), dtype=np.float64)),
        leaf_weights=numpy_helper.from_array(leaves), leaf_targetids=[0] * len(leaves), **attrs,
    )
    if link == "LogLink":
        container.add_node("Exp", [raw], [out])


def _single_leaf_tree(attrs: dict[str, list[Any]], value: float) -> None:
    """A tree that always answers ``value``: one split whose both sides reach the same leaf."""
    leaf = len(attrs["leaf_weights"])
    attrs["leaf_weights"].append(value)
    attrs["tree_roots"].append(len(attrs["nodes_modes"]))
    for key, item in (("nodes_featureids", 0), ("nodes_modes", 0), ("nodes_splits", 0.0),
                      ("nodes_missing_value_tracks_true", 0), ("nodes_truenodeids", leaf),
                      ("nodes_trueleafs", 1), ("nodes_falsenodeids", leaf), ("nodes_falseleafs", 1)):
        attrs[key].append(item)


def _hist_gradient_boosting() -> dict[type, Any]:
    """skl2onnx's HistGradientBoosting converters, with the boolean missing-value flags onnx now refuses.

    skl2onnx 1.20 passes ``nodes_missing_value_tracks_true`` as booleans; onnx >= 1.17 wants integers.
    """
    from skl2onnx.common._registration import get_converter
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    out: dict[type, Any] = {HistGradientBoostingRegressor: _convert_hgb_regressor}
    for cls in (HistGradientBoostingClassifier,):
        original = get_converter(f"Sklearn{cls.__name__}")

        def conv(scope: Any, operator: Any, container: Any, _original: Any = original) -> None:
            _original(scope, operator, _IntFlags(container))

        out[cls] = conv
    return out


class _IntFlags:
    """A converter container that turns lists of booleans in node attributes into lists of integers."""

    def __init__(self, container: Any) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, *args: Any, **attrs: Any) -> Any:
        for key, value in attrs.items():
            if isinstance(value, (list, tuple)) and any(isinstance(v, (bool, np.bool_)) for v in value):
                attrs[key] = [int(v) for v in value]
        return self._container.add_node(*args, **attrs)


def _convert_simple_imputer(scope: Any, operator: Any, container: Any) -> None:
    """SimpleImputer in the input's own precision: ``Where(missing, fill, X)``, column by column."""
    from onnx import TensorProto
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType
    from skl2onnx.operator_converters.common import concatenate_variables
    from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer

    op = operator.raw_operator
    if getattr(op, "add_indicator", False):
        raise NotImplementedError("SimpleImputer(add_indicator=True) has no exact ONNX conversion here")
    missing_is_nan = isinstance(op.missing_values, float) and np.isnan(op.missing_values)
    kind = type(operator.inputs[0].type)
    if not missing_is_nan or kind not in (DoubleTensorType, FloatTensorType, StringTensorType):
        convert_sklearn_imputer(scope, operator, container)  # skl2onnx's own converter knows these cases
        return
    stats = np.asarray(op.statistics_)
    features = concatenate_variables(scope, operator.inputs, container)
    out = operator.outputs[0].full_name
    fill = scope.get_unique_variable_name("fill")
    mask = scope.get_unique_variable_name("missing")
    if kind is StringTensorType:
        values = [str(v) for v in stats.ravel()]
        container.add_initializer(fill, TensorProto.STRING, [1, len(values)], [v.encode() for v in values])
        as_int = scope.get_unique_variable_name("missing_int")
        container.add_node("LabelEncoder", [features], [as_int], op_domain="ai.onnx.ml", op_version=2,
                           keys_strings=[MISSING_STRING], values_int64s=[1], default_int64=0)
        container.add_node("Cast", [as_int], [mask], to=TensorProto.BOOL)
    else:
        numeric = stats.astype("float64")
        if np.isnan(numeric).any():  # scikit-learn drops all-missing columns: the shape would differ
            raise NotImplementedError("SimpleImputer dropped a column it never saw a value in")
        proto = TensorProto.DOUBLE if kind is DoubleTensorType else TensorProto.FLOAT
        dtype = np.float64 if kind is DoubleTensorType else np.float32
        container.add_initializer(fill, proto, [1, len(numeric)], numeric.astype(dtype).tolist())
        container.add_node("IsNaN", [features], [mask])
    container.add_node("Where", [mask, fill, features], [out])
