"""scikit-learn estimators in: :func:`from_sklearn` and what it needs to know about each one.

Its own module so that the model classes (:mod:`.dense`, :mod:`.svm`) do not import each other:
this module imports both.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import DTypeLike

from .. import verdict
from .base import Model
from .dense import MLP, LinearModel
from .svm import svm_from_sklearn

__all__ = ["from_sklearn"]


_LINEAR_NAMES = {
    "LogisticRegression", "LogisticRegressionCV", "LinearSVC", "SGDClassifier",
    "RidgeClassifier", "RidgeClassifierCV", "Perceptron", "PassiveAggressiveClassifier",
}


def from_sklearn(est, *, dtype: DTypeLike = None) -> Model:
    """Convert a fitted scikit-learn classifier to a fastfool model.

    Supported: LogisticRegression (binary and multinomial), LinearSVC, SGDClassifier,
    RidgeClassifier, Perceptron (and other linear classifiers with ``coef_``/``intercept_``),
    MLPClassifier (single-label), and binary SVC / NuSVC with linear, rbf, poly or sigmoid
    kernels (:class:`fastfool.KernelSVM`).

    The model keeps the estimator: :meth:`Model.predict` and every attack's ``success`` are
    the estimator's own decisions (computed in float64 from its parameters, and asked of
    ``est.predict`` for rows within rounding of a tie; see :mod:`fastfool.verdict`).
    ``decision_function`` matches the estimator's. ``predict_proba`` is the softmax of the
    scores: scikit-learn's own for LogisticRegression (binary or multinomial), binary
    ``SGDClassifier(loss="log_loss")`` and MLPClassifier; for any other estimator that has a
    ``predict_proba`` (Platt-scaled SVCs, one-vs-rest normalised sigmoids) it is a surrogate
    and a ``UserWarning`` says so. The gradient attacks optimise this softmax cross-entropy.
    """
    m = _convert(est, dtype)
    m._source = est
    params = getattr(est, "coefs_", None) or [getattr(est, "coef_", None)]
    if any(isinstance(p, np.ndarray) and p.dtype == np.float32 for p in params):
        m._source_u = verdict.U32  # fitted on float32 data: the estimator computes in float32
    for r in (m, m._ref64):
        if r is not None:
            r._source, r._source_u = est, m._source_u
    reason = _proba_differs(est)
    if reason:
        warnings.warn(f"from_sklearn: fastfool's predict_proba for this {type(est).__name__} is "
                      f"the softmax of its decision scores, not scikit-learn's ({reason}); "
                      "attacks optimise the softmax, success is the estimator's predict",
                      UserWarning, stacklevel=2)
    return m


def _proba_differs(est) -> str:
    """Why the estimator's own predict_proba is not the softmax of its scores ('' if it is)."""
    name = type(est).__name__
    try:
        has = hasattr(est, "predict_proba")  # SVC(probability=False) raises AttributeError
    except Exception:  # pragma: no cover
        has = False
    if not has:
        return ""
    n_classes = len(getattr(est, "classes_", ()))
    if name in ("SVC", "NuSVC"):
        return "Platt scaling fitted by libsvm"
    if name.startswith("LogisticRegression"):
        mc = getattr(est, "multi_class", "auto")
        if n_classes > 2 and mc == "ovr":
            return "one-vs-rest sigmoids normalised to sum to 1"
        return ""
    if name == "SGDClassifier":
        if getattr(est, "loss", "") == "log_loss" and n_classes == 2:
            return ""
        return "one-vs-rest sigmoids normalised to sum to 1" if getattr(est, "loss", "") == \
            "log_loss" else f"{est.loss!r} loss probabilities"
    if hasattr(est, "coefs_"):
        return ""
    return "its own probability model"


def _convert(est, dtype) -> Model:
    name = type(est).__name__
    if hasattr(est, "support_vectors_") and hasattr(est, "dual_coef_") and name in ("SVC", "NuSVC"):
        return svm_from_sklearn(est, dtype)
    if hasattr(est, "coefs_") and hasattr(est, "intercepts_"):
        out_act = getattr(est, "out_activation_", "softmax")
        if out_act not in ("softmax", "logistic"):
            raise ValueError(f"from_sklearn: unsupported output activation {out_act!r} (is {name} a classifier?)")
        if out_act == "logistic" and est.coefs_[-1].shape[1] > 1:
            raise ValueError("from_sklearn: multilabel MLPClassifier is not supported")
        return MLP(est.coefs_, est.intercepts_, activation=est.activation,
                   classes=est.classes_, dtype=dtype)
    if hasattr(est, "coef_") and hasattr(est, "classes_"):
        coef = np.asarray(est.coef_)
        if coef.ndim == 1:  # some binary estimators store (n_features,)
            coef = coef.reshape(1, -1)
        if coef.ndim != 2:
            raise ValueError(f"from_sklearn: {name}.coef_ has shape {coef.shape}, expected 2-D")
        if name not in _LINEAR_NAMES:
            warnings.warn(f"from_sklearn: treating {name} as a linear classifier (coef_, intercept_)",
                          stacklevel=3)
        intercept = np.broadcast_to(np.asarray(getattr(est, "intercept_", 0.0), dtype=np.float64),
                                    (coef.shape[0],))
        return LinearModel(coef, intercept, classes=est.classes_, dtype=dtype)
    if hasattr(est, "fit") and not (hasattr(est, "coef_") or hasattr(est, "coefs_")):
        raise ValueError(f"from_sklearn: {name} is not fitted, or is not a linear model / MLPClassifier")
    raise TypeError(f"from_sklearn: unsupported estimator {name!r}")
