"""A compiled copy of a fitted scikit-learn tree classifier's ``predict``, for attacks that only
query labels (HopSkipJump): scikit-learn's forest ``predict`` costs ~8 ms a call whatever the
rows (joblib dispatch and one ``predict_proba`` array per tree), and a decision-based attack
makes a dozen dependent calls an iteration.

The copy makes the same decisions bit for bit: X cast to float32 as scikit-learn casts it, a
node goes left where ``float32 x[feature] <= threshold`` (compared in double), the leaves'
class fractions summed in tree order in float64 and divided by the number of trees, the first
largest class taken (``_core.Forest``, cpu/forest.cpp). Anything else - another estimator type
(a subclass included: it may override ``predict``), multi-output trees, rows with NaN or
infinity after the cast, the wrong width - goes to the estimator's own ``predict``. The
attacks' verdicts (``success``, ``pred``) still come from the estimator itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._checks import float_array
from ._runtime import resolve_threads

__all__ = ["CompiledTrees", "compiled_predict"]


def _tree_types() -> tuple[type, ...]:
    try:
        from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
        from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier
    except ImportError:  # pragma: no cover - scikit-learn is optional
        return (), ()
    return (RandomForestClassifier, ExtraTreesClassifier), (DecisionTreeClassifier,
                                                            ExtraTreeClassifier)


class CompiledTrees:
    """The packed trees of one fitted classifier and its ``classes_``; ``predict`` as the
    estimator's (see the module docstring)."""

    def __init__(self, est: Any, trees: list, divisor: float):
        self.est = est
        self.classes_ = np.asarray(est.classes_)
        C = len(self.classes_)
        D = int(est.n_features_in_)
        parts = [t.tree_ for t in trees]
        sizes = [p.node_count for p in parts]
        for p in parts:
            if p.value.shape[1] != 1 or p.value.shape[2] < C:
                raise ValueError("trees: expected single-output class fractions")
        self.forest = _core.Forest(
            np.concatenate([p.feature for p in parts]).astype(np.int64),
            np.concatenate([p.threshold for p in parts]).astype(np.float64),
            np.concatenate([p.children_left for p in parts]).astype(np.int64),
            np.concatenate([p.children_right for p in parts]).astype(np.int64),
            np.ascontiguousarray(np.concatenate([p.value[:, 0, :C] for p in parts]),
                                 dtype=np.float64),
            np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), D, float(divisor))
        self.n_features_in_ = D

    def predict_index(self, X: np.ndarray, threads: int | None = None) -> np.ndarray | None:
        """Class indices (into ``classes_``) per row, or None where the copy does not apply
        (the wrong shape, no rows, a value that is not finite as float32)."""
        with np.errstate(over="ignore"):  # past float32's range: inf, for the estimator to judge
            X32 = np.asarray(X, dtype=np.float32)
        X32 = float_array(X32, "X")  # itself, or an aligned copy the C++ loop can read
        if X32.ndim != 2 or X32.shape[1] != self.n_features_in_ or not X32.shape[0] or \
                not np.isfinite(X32).all():
            return None
        out = np.empty(X32.shape[0], np.int64)
        self.forest.predict(X32, out, None, resolve_threads(threads))
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The estimator's labels for X (its own ``predict`` where the copy does not apply)."""
        idx = self.predict_index(X)
        if idx is None:
            return np.asarray(self.est.predict(X))
        return self.classes_.take(idx)


def compiled_predict(clf: Any) -> CompiledTrees | None:
    """A :class:`CompiledTrees` for a fitted ``RandomForestClassifier``,
    ``ExtraTreesClassifier``, ``DecisionTreeClassifier`` or ``ExtraTreeClassifier`` (exactly
    those types, single output), else None."""
    forests, singles = _tree_types()
    kind = type(clf)
    try:
        if kind in forests:
            if int(getattr(clf, "n_outputs_", 0)) != 1 or not getattr(clf, "estimators_", None):
                return None
            trees = list(clf.estimators_)
            if any(type(t) not in singles for t in trees):
                return None
            return CompiledTrees(clf, trees, float(len(trees)))
        if kind in singles:
            if int(getattr(clf, "n_outputs_", 0)) != 1 or not hasattr(clf, "tree_"):
                return None
            return CompiledTrees(clf, [clf], 1.0)
    except (AttributeError, ValueError, TypeError):
        return None
    return None
