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
from .pipeline import Fold, InputMap, fold_first_layer, unwrap_pipeline
from .svm import KernelSVM, OvOSVM, ovo_from_sklearn, ovr_svc_from_sklearn, svm_from_sklearn

__all__ = ["from_sklearn"]


_LINEAR_NAMES = {
    "LogisticRegression", "LogisticRegressionCV", "LinearSVC", "SGDClassifier",
    "RidgeClassifier", "RidgeClassifierCV", "Perceptron", "PassiveAggressiveClassifier",
}


def from_sklearn(est, *, dtype: DTypeLike = None) -> Model:
    """Convert a fitted scikit-learn classifier to a fastfool model.

    Supported: LogisticRegression (binary and multinomial), LinearSVC, SGDClassifier,
    RidgeClassifier, Perceptron (and other linear classifiers with ``coef_``/``intercept_``),
    MLPClassifier (single-label), and SVC / NuSVC with linear, rbf, poly or sigmoid kernels
    (binary: :class:`fastfool.KernelSVM`; multi-class, one-vs-one votes:
    :class:`fastfool.models.svm.OvOSVM`); and, around the linear models and MLPs:

    - a ``Pipeline`` (also nested) whose steps before the classifier are affine -
      StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler (``clip=False``), PCA (also
      ``whiten=True``), TruncatedSVD, ``FunctionTransformer(None)``, ``'passthrough'``, a
      ColumnTransformer of those over columns chosen by position: folded into the first layer
      (:mod:`fastfool.models.pipeline`), so the model takes the raw features the pipeline
      takes and every ``eps``, clip bound and ``x_adv`` is in those units; other steps are
      refused with the reason;
    - GridSearchCV / RandomizedSearchCV / HalvingGridSearchCV / HalvingRandomSearchCV (their
      ``best_estimator_``, refit=True);
    - OneVsRestClassifier of linear classifiers (one model whose scores are the binary
      estimators' decision functions; ``predict`` is their argmax, as scikit-learn's).

    The model keeps the estimator: :meth:`Model.predict` and every attack's ``success`` are
    the estimator's own decisions (computed in float64 from its parameters, and asked of
    ``est.predict`` for rows within rounding of a tie; see :mod:`fastfool.verdict`).
    ``decision_function`` matches the estimator's. ``predict_proba`` is the softmax of the
    scores: scikit-learn's own for LogisticRegression (binary or multinomial), binary
    ``SGDClassifier(loss="log_loss")`` and MLPClassifier; for any other estimator that has a
    ``predict_proba`` (Platt-scaled SVCs, one-vs-rest normalised sigmoids) it is a surrogate
    and a ``UserWarning`` says so. The gradient attacks optimise this softmax cross-entropy.
    """
    _check_fitted(est)
    core = _core(est)
    u_src = verdict.U32 if _fitted_on_float32(core) else verdict.U64
    m = _convert(est, dtype, u_src)
    m._source = est
    m._source_u = u_src  # fitted on float32 data: the estimator computes in float32
    for r in (m, m._ref64):
        if r is not None:
            r._source, r._source_u, r._fold = est, m._source_u, m._fold
    reason = _proba_differs(est if _is_ovr(est) else core)
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
    if name == "OneVsRestClassifier" and len(getattr(est, "classes_", ())) > 2:
        return "one-vs-rest probabilities normalised to sum to 1"
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


_SEARCH_CV = ("GridSearchCV", "RandomizedSearchCV", "HalvingGridSearchCV", "HalvingRandomSearchCV")


def _is_ovr(est) -> bool:
    return type(est).__name__ == "OneVsRestClassifier"


def _check_fitted(est):
    """A clear 'not fitted' for scikit-learn estimators before anything else looks at them."""
    try:
        from sklearn.base import BaseEstimator
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted
    except ImportError:  # pragma: no cover - a scikit-learn object without scikit-learn
        return
    if isinstance(est, BaseEstimator):
        try:
            check_is_fitted(est)
        except NotFittedError:
            raise ValueError(f"from_sklearn: this {type(est).__name__} is not fitted; call "
                             "fit first") from None
        except TypeError:
            pass  # not an estimator check_is_fitted knows (no fit): the dispatch below decides


def _core(est):
    """The classifier whose parameters a converted model holds (through pipelines and
    searches): its dtype and its predict_proba decide the notes of from_sklearn."""
    name = type(est).__name__
    if name == "Pipeline" and est.steps:
        return _core(est.steps[-1][1])
    if name in _SEARCH_CV and hasattr(est, "best_estimator_"):
        return _core(est.best_estimator_)
    if _is_ovr(est) and getattr(est, "estimators_", None):
        return _core(est.estimators_[0])
    return est


def _fitted_on_float32(est) -> bool:
    params = getattr(est, "coefs_", None) or [getattr(est, "coef_", None)]
    return any(isinstance(p, np.ndarray) and p.dtype == np.float32 for p in params)


_SUPPORTED = ("linear classifiers (coef_ / intercept_), MLPClassifier, SVC / NuSVC (binary and "
              "one-vs-one), Pipelines of affine steps before any of those, search CVs of them "
              "(best_estimator_), OneVsRestClassifier of linear classifiers or of SVCs")
_BLACK_BOX = ("for other models use the black-box attacks on the estimator itself: "
              "ff.score_attack(est, X, ...) (scores or probabilities) or ff.transfer")


def _convert(est, dtype, u_src=verdict.U64) -> Model:
    name = type(est).__name__
    if name == "Pipeline":
        return _convert_pipeline(est, dtype, u_src)
    if name in _SEARCH_CV:
        if not hasattr(est, "best_estimator_"):
            raise ValueError(f"from_sklearn: this {name} has no best_estimator_ (refit=False, or "
                             "not fitted): refit it with refit=True, or convert the estimator "
                             "you chose")
        return _convert(est.best_estimator_, dtype, u_src)
    if _is_ovr(est):
        return _convert_ovr(est, dtype)
    if name in ("CalibratedClassifierCV",):
        raise ValueError("from_sklearn: CalibratedClassifierCV is not supported: its decision is "
                         "the argmax of probabilities averaged over calibrated folds (sigmoid or "
                         "isotonic: not a function fastfool's kernels evaluate); convert the "
                         f"uncalibrated estimator, or {_BLACK_BOX}")
    if hasattr(est, "classes_") and len(getattr(est, "classes_", ())) > 2 and \
            name in ("SVC", "NuSVC") and hasattr(est, "support_vectors_"):
        if getattr(est, "break_ties", False) and getattr(est, "decision_function_shape", "ovr") == "ovr":
            raise ValueError(f"from_sklearn: a {name}(break_ties=True) decides by its one-vs-rest "
                             "scores, not votes: not supported; refit with break_ties=False")
        return ovo_from_sklearn(est, dtype)
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
        raise TypeError(f"from_sklearn: unsupported estimator {name!r}. Supported: {_SUPPORTED}; "
                        f"{_BLACK_BOX}")
    raise TypeError(f"from_sklearn: unsupported estimator {name!r}. Supported: {_SUPPORTED}")


def _dense_of(m):
    """(Ws (in, out) float64, bs, hidden activations) of a converted dense model, as fitted."""
    return [np.asarray(W, np.float64) for W in m._Ws], [np.asarray(b, np.float64) for b in m._bs], \
        list(m._acts[:-1])


def _convert_pipeline(est, dtype, u_src) -> Model:
    chain, final, final_name = unwrap_pipeline(est)
    inner = _convert(final, np.float64, u_src)
    if not chain:
        return inner if dtype is None or np.dtype(dtype) == np.float64 else _rebuild(inner, dtype)
    D = getattr(est, "n_features_in_", None) or chain[0].d_in
    if isinstance(inner, (KernelSVM, OvOSVM)) and inner._input_map() is None:
        # no first layer to fold into: the chain stays in front of the kernel
        m = _convert(final, dtype, u_src)
        f32 = np.dtype(m.dtype) == np.float32 or _has_float32(est)
        imap = InputMap(chain, int(D), verdict.U32 if f32 else verdict.U64)
        for r in (m, m._ref64, getattr(m, "_kern", None)):
            if r is not None:
                r._in = imap
        return m
    if not isinstance(inner, (LinearModel, MLP)) or inner._fold is not None:
        what = "a kernel SVM after another pipeline" if not isinstance(inner, (LinearModel, MLP)) \
            else "a classifier that is itself a folded pipeline"
        raise ValueError(f"from_sklearn: the Pipeline ends in {what} ({type(final).__name__}); "
                         f"flatten the nested pipelines into one; {_BLACK_BOX}")
    Ws, bs, acts = _dense_of(inner)
    # the steps compute in float32 on float32 inputs (a float32 model's x_adv) or with float32
    # parameters (fitted on float32 data)
    return dense_with_fold(chain, Ws, bs, acts, inner.classes_,
                           np.float64 if dtype is None else dtype, int(D), u_src,
                           verdict.U32 if _has_float32(est) else None)


def dense_with_fold(chain, Ws, bs, acts, classes, dtype, D, u_src=verdict.U64, u_pre=None):
    """A LinearModel (one layer) or an MLP of float64 layers ``Ws`` (in, out), ``bs``, hidden
    ``acts``, with the affine ``chain`` folded into its first layer (fastfool.models.pipeline)
    when there is one. ``u_pre``: the steps' unit roundoff (default: float32 for a float32
    model, else float64); ``u_src``: the classifier's."""
    Ws = [np.asarray(W, np.float64) for W in Ws]
    bs = [np.zeros(W.shape[1]) if b is None else np.asarray(b, np.float64) for W, b in zip(Ws, bs)]
    W1, b1 = Ws[0], bs[0]
    if chain:
        W1, b1, E1, Eb1 = fold_first_layer(chain, Ws[0], bs[0], int(D))
    if len(Ws) == 1:
        m = LinearModel(W1.T, b1, classes=classes, dtype=dtype)
    else:
        m = MLP([W1] + Ws[1:], [b1] + bs[1:], activation=acts, classes=classes, dtype=dtype)
    if chain:
        if u_pre is None:
            u_pre = verdict.U32 if np.dtype(m.dtype) == np.float32 else verdict.U64
        if np.dtype(m.dtype) == np.float32:
            u_pre = max(u_pre, verdict.U32)
        m._fold = Fold(chain, E1, Eb1, verdict.layer_constants(Ws, bs), list(acts) + ["identity"],
                       u_pre, max(u_src, verdict.U64), Ws[0], bs[0])
        if m._ref64 is not None:
            m._ref64._fold = m._fold
    return m


def _has_float32(est) -> bool:
    """Whether a pipeline's fitted steps hold float32 parameters (recursively)."""
    name = type(est).__name__
    if name == "Pipeline":
        return any(_has_float32(s) for _, s in est.steps)
    if name == "ColumnTransformer":
        return any(_has_float32(t) for _, t, _ in getattr(est, "transformers_", []))
    return any(isinstance(v, np.ndarray) and v.dtype == np.float32
               for k, v in vars(est).items() if k.endswith("_")) if hasattr(est, "__dict__") else False


def _rebuild(m, dtype):
    """The same dense model in another dtype."""
    if isinstance(m, LinearModel):
        return LinearModel(m.coef_, m.intercept_, classes=m.classes_, dtype=dtype)
    if isinstance(m, MLP):
        Ws, bs, acts = _dense_of(m)
        return MLP(Ws, bs, activation=acts, classes=m.classes_, dtype=dtype)
    raise ValueError(f"from_sklearn: cannot convert {type(m).__name__} to {dtype}")


def _convert_ovr(est, dtype) -> Model:
    """OneVsRestClassifier of binary linear classifiers: one linear model whose C scores are
    the estimators' decision functions (scikit-learn's predict takes their argmax)."""
    ests = list(getattr(est, "estimators_", []))
    if not ests:
        raise ValueError("from_sklearn: this OneVsRestClassifier is not fitted")
    if getattr(getattr(est, "label_binarizer_", None), "y_type_", "") == "multilabel-indicator":
        raise ValueError("from_sklearn: a multilabel OneVsRestClassifier is not supported "
                         "(fastfool's models decide one class per row)")
    if all(type(e).__name__ in ("SVC", "NuSVC") and hasattr(e, "support_vectors_") for e in ests):
        if len(ests) > 1:
            return ovr_svc_from_sklearn(est, dtype)
        # two classes: one binary SVC, s > 0 predicts the wrapper's classes_[1]
        return svm_from_sklearn(ests[0], dtype, classes=est.classes_)
    coefs, ints = [], []
    for i, e in enumerate(ests):
        if not hasattr(e, "coef_") or not hasattr(e, "decision_function"):
            raise ValueError(f"from_sklearn: OneVsRestClassifier of {type(e).__name__} is not "
                             "supported: only of linear classifiers (coef_, intercept_, "
                             f"decision_function); {_BLACK_BOX}")
        c = np.asarray(e.coef_, np.float64).reshape(-1)
        coefs.append(c)
        ints.append(float(np.asarray(getattr(e, "intercept_", 0.0), np.float64).reshape(-1)[0]))
    # one row per class; two classes: one binary estimator, s > 0 predicts classes_[1]
    return LinearModel(np.vstack(coefs), np.array(ints), classes=est.classes_, dtype=dtype)
