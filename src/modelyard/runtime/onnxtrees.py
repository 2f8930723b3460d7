"""scikit-learn's tree ensembles as one ai.onnx.ml 5 ``TreeEnsemble`` that compares and sums in double.

skl2onnx (1.20) writes forests and boosted trees as the old ``TreeEnsembleRegressor``/``Classifier``: with
double inputs it declares double outputs that ONNX Runtime (1.2x) refuses to run, and with float inputs it
compares a float32 copy of each threshold, which sends some rows down the other branch. So every forest
and boosted-tree model fell back to scikit-learn. Here each one is written the way scikit-learn computes:

- ``RandomForest*``/``ExtraTrees*``/``GradientBoosting*`` trees compare a float32 copy of the features
  with float64 thresholds (scikit-learn casts X to float32): the graph casts to float and back to double,
  then compares in double. ``HistGradientBoosting*`` compares the float64 features themselves;
- leaf values are the ones scikit-learn adds (``learning_rate * value`` for gradient boosting, computed
  here with the same float64 product), the constant start (baseline, ``init_``) is the first tree, and
  the trees are summed in scikit-learn's order, so sums agree to the last bit; forests divide by the
  number of trees afterwards, as scikit-learn does;
- classifiers take labels from the raw scores with scikit-learn's own rule (``>= 0`` for
  GradientBoosting, ``> 0`` for HistGradientBoosting, ``argmax`` otherwise); probabilities come from
  ``Sigmoid``/``Softmax``, within ``fastpath.PROBABILITY_TOL`` of scipy's.

A leaf holds one target in ``TreeEnsemble``: a tree whose leaves hold one value per class is written once
per class.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class _Ensemble:
    """The attributes of one ``TreeEnsemble`` node, built tree by tree."""

    def __init__(self) -> None:
        self.ints: dict[str, list[Any]] = {k: [] for k in (
            "nodes_featureids", "nodes_missing_value_tracks_true", "nodes_truenodeids", "nodes_trueleafs",
            "nodes_falsenodeids", "nodes_falseleafs", "tree_roots", "leaf_targetids")}
        self.splits: list[Any] = []
        self.leaves: list[Any] = []
        self.n_branches = 0
        self.n_leaves = 0

    def constant(self, value: float, target: int) -> None:
        """A tree that always answers ``value``: one split whose both sides reach the same leaf."""
        leaf = self.n_leaves
        self.leaves.append([value])
        self.ints["leaf_targetids"].append([target])
        self.ints["tree_roots"].append([self.n_branches])
        self.splits.append([0.0])
        self.n_branches += 1
        self.n_leaves += 1
        for key, item in (("nodes_featureids", 0), ("nodes_missing_value_tracks_true", 0),
                          ("nodes_truenodeids", leaf), ("nodes_trueleafs", 1), ("nodes_falsenodeids", leaf),
                          ("nodes_falseleafs", 1)):
            self.ints[key].append([item])

    def tree(self, *, feature: np.ndarray, threshold: np.ndarray, left: np.ndarray, right: np.ndarray,
             missing_left: np.ndarray, is_leaf: np.ndarray, value: np.ndarray, target: int) -> None:
        """One binary tree in scikit-learn's node arrays (``x <= threshold`` goes left)."""
        is_leaf = np.asarray(is_leaf, dtype=bool)
        if is_leaf[0]:
            self.constant(float(value[0]), target)
            return
        leaf_id = np.cumsum(is_leaf) - 1 + self.n_leaves
        branch_id = np.cumsum(~is_leaf) - 1 + self.n_branches
        branches = np.flatnonzero(~is_leaf)
        self.n_leaves += int(is_leaf.sum())
        self.n_branches += len(branches)
        self.leaves.append(np.asarray(value, dtype=np.float64)[is_leaf])
        self.ints["leaf_targetids"].append(np.full(int(is_leaf.sum()), target))
        self.ints["tree_roots"].append([int(branch_id[0])])
        self.splits.append(np.asarray(threshold, dtype=np.float64)[branches])
        self.ints["nodes_featureids"].append(np.asarray(feature)[branches])
        self.ints["nodes_missing_value_tracks_true"].append(np.asarray(missing_left)[branches].astype(int))
        for side, children in (("true", np.asarray(left)[branches]), ("false", np.asarray(right)[branches])):
            leafs = is_leaf[children]
            self.ints[f"nodes_{side}nodeids"].append(np.where(leafs, leaf_id[children], branch_id[children]))
            self.ints[f"nodes_{side}leafs"].append(leafs.astype(int))

    def add_to(self, container: Any, scope: Any, features: str, out: str, n_targets: int) -> None:
        from onnx import numpy_helper

        ints = {k: np.concatenate([np.asarray(p, dtype=np.int64) for p in v]).tolist()
                for k, v in self.ints.items()}
        splits = np.concatenate([np.asarray(s, dtype=np.float64) for s in self.splits])
        leaves = np.concatenate([np.asarray(v, dtype=np.float64) for v in self.leaves])
        container.add_node(
            "TreeEnsemble", [features], [out], op_domain="ai.onnx.ml", op_version=3,
            name=scope.get_unique_operator_name("TreeEnsemble"), n_targets=n_targets, aggregate_function=1,
            post_transform=0,
            nodes_modes=numpy_helper.from_array(np.zeros(len(splits), dtype=np.uint8)),  # BRANCH_LEQ
            nodes_splits=numpy_helper.from_array(splits), leaf_weights=numpy_helper.from_array(leaves), **ints)


def _sklearn_tree(ensemble: _Ensemble, tree: Any, *, column: int, target: int, scale: float | None) -> None:
    """A fitted ``sklearn.tree`` tree; ``scale`` multiplies the leaves (gradient boosting's learning rate)."""
    t = tree.tree_
    value = t.value[:, 0, column]
    if scale is not None:
        value = scale * value
    ensemble.tree(feature=t.feature, threshold=t.threshold, left=t.children_left, right=t.children_right,
                  missing_left=getattr(t, "missing_go_to_left", np.zeros(t.node_count, dtype=np.uint8)),
                  is_leaf=t.children_left == -1, value=value, target=target)


def _hist_tree(ensemble: _Ensemble, predictor: Any, target: int) -> None:
    nodes = predictor.nodes
    if nodes["is_categorical"].any():
        raise NotImplementedError("a HistGradientBoosting split on a native categorical feature")
    ensemble.tree(feature=nodes["feature_idx"], threshold=nodes["num_threshold"], left=nodes["left"],
                  right=nodes["right"], missing_left=nodes["missing_go_to_left"], is_leaf=nodes["is_leaf"] == 1,
                  value=nodes["value"], target=target)


def _build(op: Any) -> tuple[_Ensemble, int, str]:
    """The ensemble of ``op``, its number of raw outputs, and what follows: "sum", "mean", "raw"."""
    from sklearn.ensemble import BaseEnsemble, HistGradientBoostingClassifier, HistGradientBoostingRegressor

    ensemble = _Ensemble()
    if isinstance(op, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
        if getattr(op, "_preprocessor", None) is not None:
            raise NotImplementedError("HistGradientBoosting with native categorical features")
        k = op.n_trees_per_iteration_
        baseline = np.ravel(op._baseline_prediction)
        for j in range(k):  # scikit-learn starts every row at the baseline and adds the trees in order
            ensemble.constant(float(baseline[j]), j)
        for iteration in op._predictors:
            for j, predictor in enumerate(iteration):
                _hist_tree(ensemble, predictor, j)
        return ensemble, k, "raw"
    if hasattr(op, "learning_rate") and hasattr(op, "init_"):  # GradientBoosting*
        k = op.estimators_.shape[1]
        if isinstance(op.init_, str):
            start = np.zeros(k)
        elif type(op.init_).__name__ in ("DummyRegressor", "DummyClassifier"):
            start = np.ravel(op._raw_predict_init(np.zeros((1, op.n_features_in_), dtype=np.float32)))
        else:
            raise NotImplementedError(f"GradientBoosting with init={type(op.init_).__name__}")
        for j in range(k):
            ensemble.constant(float(start[j]), j)
        for stage in op.estimators_:
            for j, tree in enumerate(stage):
                _sklearn_tree(ensemble, tree, column=0, target=j, scale=float(op.learning_rate))
        return ensemble, k, "raw"
    if isinstance(op, BaseEnsemble):  # RandomForest*, ExtraTrees*: the mean of the trees
        if getattr(op, "n_outputs_", 1) != 1:
            raise NotImplementedError(f"{type(op).__name__} with several outputs")
        k = len(op.classes_) if hasattr(op, "classes_") else 1
        for tree in op.estimators_:
            for j in range(k):
                _sklearn_tree(ensemble, tree, column=j, target=j, scale=None)
        return ensemble, k, "mean"
    raise NotImplementedError(f"no double-precision tree converter for {type(op).__name__}")


def convert_tree_ensemble(scope: Any, operator: Any, container: Any) -> None:
    """The skl2onnx converter for every scikit-learn tree ensemble, regressor or classifier."""
    from onnx import TensorProto
    from sklearn.base import is_classifier
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    op = operator.raw_operator
    ensemble, k, mode = _build(op)
    if is_classifier(op):  # skl2onnx declares float probabilities for RandomForestClassifier whatever X is
        from skl2onnx.common.data_types import DoubleTensorType

        proba_var = operator.outputs[1]
        proba_var.type = DoubleTensorType(shape=proba_var.type.shape)
    features = operator.inputs[0].full_name
    if not isinstance(op, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
        as_float = scope.get_unique_variable_name("x_float32")  # scikit-learn's trees read float32 X
        container.add_node("Cast", [features], [as_float], to=TensorProto.FLOAT)
        features = scope.get_unique_variable_name("x_as_double")
        container.add_node("Cast", [as_float], [features], to=TensorProto.DOUBLE)
    scores = scope.get_unique_variable_name("tree_scores")
    ensemble.add_to(container, scope, features, scores, k)
    if mode == "mean":
        count = scope.get_unique_variable_name("n_trees")
        container.add_initializer(count, TensorProto.DOUBLE, [], [float(len(op.estimators_))])
        mean = operator.outputs[1 if is_classifier(op) else 0].full_name
        container.add_node("Div", [scores, count], [mean])
        if is_classifier(op):
            _labels(scope, container, operator, mean, op.classes_, rule="argmax")
        return
    if not is_classifier(op):
        link = type(getattr(getattr(op, "_loss", None), "link", None)).__name__
        if link not in ("LogLink", "IdentityLink", "NoneType"):
            raise NotImplementedError(f"{type(op).__name__} with a {link}")
        container.add_node("Exp" if link == "LogLink" else "Identity", [scores], [operator.outputs[0].full_name])
        return
    proba = operator.outputs[1].full_name
    if k == 1:
        positive = scope.get_unique_variable_name("positive")
        negative = scope.get_unique_variable_name("negative")
        one = scope.get_unique_variable_name("one")
        container.add_initializer(one, TensorProto.DOUBLE, [], [1.0])
        container.add_node("Sigmoid", [scores], [positive])
        container.add_node("Sub", [one, positive], [negative])
        container.add_node("Concat", [negative, positive], [proba], axis=1)
        rule = "gt0" if isinstance(op, HistGradientBoostingClassifier) else "ge0"
    else:
        container.add_node("Softmax", [scores], [proba], axis=1)
        rule = "argmax"
    _labels(scope, container, operator, scores, op.classes_, rule=rule)


def _labels(scope: Any, container: Any, operator: Any, scores: str, classes: np.ndarray, *, rule: str) -> None:
    """The label output: the class index by scikit-learn's rule, then the class itself."""
    from onnx import TensorProto

    index = scope.get_unique_variable_name("class_index")
    if rule == "argmax":
        container.add_node("ArgMax", [scores], [index], axis=1, keepdims=0)
    else:
        zero = scope.get_unique_variable_name("zero")
        container.add_initializer(zero, TensorProto.DOUBLE, [], [0.0])
        passed = scope.get_unique_variable_name("passed")
        container.add_node("GreaterOrEqual" if rule == "ge0" else "Greater", [scores, zero], [passed])
        flat = scope.get_unique_variable_name("passed_int")
        container.add_node("Cast", [passed], [flat], to=TensorProto.INT64)
        shape = scope.get_unique_variable_name("flat_shape")
        container.add_initializer(shape, TensorProto.INT64, [1], [-1])
        container.add_node("Reshape", [flat, shape], [index])
    names = scope.get_unique_variable_name("classes")
    if np.issubdtype(np.asarray(classes).dtype, np.integer):
        container.add_initializer(names, TensorProto.INT64, [len(classes)], [int(c) for c in classes])
    elif all(isinstance(c, str) for c in classes):
        container.add_initializer(names, TensorProto.STRING, [len(classes)], [c.encode() for c in classes])
    else:
        raise NotImplementedError(f"class labels of type {np.asarray(classes).dtype}")
    container.add_node("Gather", [names, index], [operator.outputs[0].full_name], axis=0)


def tree_converters() -> dict[type, Any]:
    """scikit-learn estimator class → our converter, for ``convert_sklearn(custom_conversion_functions=)``."""
    from sklearn import ensemble

    classes = [ensemble.RandomForestRegressor, ensemble.RandomForestClassifier, ensemble.ExtraTreesRegressor,
               ensemble.ExtraTreesClassifier, ensemble.GradientBoostingRegressor,
               ensemble.GradientBoostingClassifier, ensemble.HistGradientBoostingRegressor,
               ensemble.HistGradientBoostingClassifier]
    return dict.fromkeys(classes, convert_tree_ensemble)
