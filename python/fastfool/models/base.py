"""The model protocol every attack uses, and what all fastfool models share.

:class:`Model` is the base of every model: classes and labels, dtype and device, input checks,
scikit-learn style predictions (decided by :mod:`fastfool.verdict`), and the protocol the
attacks call - the trusted internal entry points, which take checked inputs (``X`` of the
model's dtype on its device, class indices already mapped and range-checked, or a
:class:`fastfool._checks.Trusted` wrapper of them):

``scores(X, epilogue=None, threads=None)``
    logits of the softmax view (a binary model's score ``s`` as the two columns ``[0, s]``),
    or their softmax / log-softmax with ``epilogue``;
``loss_grad(X, labels, threads=None, return_prob=False, out=None)``
    ``(grad, loss[, prob])`` of the softmax cross-entropy at ``labels``;
``fused_step(X, labels, x0, threads, out, *, step, eps, norm, clip, quantum, steps=1, ...)``
    the gradient and the attack update in one pass (:func:`fastfool.kernels.ce_step_linear`);
``vjp(X, V, threads=None, return_logits=False)``
    the input gradient of ``sum(V * logits)`` (softmax view);
``layers()``
    ``(weights, biases, activations)`` of the softmax view, for models that are stacks of
    affine layers (:class:`fastfool.models.dense.DenseModel`); others raise.

Subclasses: :class:`~fastfool.models.dense.DenseModel` (``LinearModel``, ``MLP``) and
:class:`~fastfool.models.svm.KernelSVM`.

Dtype rule: a model computes in one dtype (float32 or float64, from its weights unless
``dtype=`` says otherwise). Float inputs of the other precision are cast to it (a copy; the
caller's array is never modified); integer, bool, float16 and object inputs are refused.
NaN policy: methods raise ``ValueError`` when X holds NaN or infinity, unless
``check_finite=False`` (then NaN propagates to the outputs of the affected rows).
"""

from __future__ import annotations

import copy
import functools
from abc import ABC, abstractmethod

import numpy as np

from .. import cuda, kernels, verdict
from .._backend import CPU, Backend
from .._dask import is_dask, labels_like, map_rows, rows_of
from .._checks import check_finite as _check_finite
from .._checks import float_dtype, labels_to_index, matrix
from .._runtime import check_fits, resolve_threads
from .._typing import ArrayLike

__all__ = ["Model", "DEFAULT_MARGIN"]

#: Default clamping margin of inverse tanh / logistic in back-projection: codes are clamped into
#: [-1 + margin, 1 - margin] (tanh) or [margin, 1 - margin] (logistic) before atanh / logit.
DEFAULT_MARGIN = 1e-6

def _weight(a, name: str, dtype) -> np.ndarray:
    arr = np.array(a, copy=True)  # the model owns its weights: later edits by the caller do not leak in
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected numeric weights, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinity")
    return arr


def _freeze(*arrays) -> None:
    """Make a model's arrays read-only: a model is immutable after construction (editing
    ``coef_`` in place would change some methods and not others, and the float64 reference
    behind every verdict)."""
    for a in arrays:
        if isinstance(a, np.ndarray):
            a.flags.writeable = False


def _model_dtype(dtype, first_weight) -> np.dtype:
    if dtype is not None:
        return float_dtype(dtype)
    dt = np.asarray(first_weight).dtype
    return dt if dt in (np.dtype(np.float32), np.dtype(np.float64)) else np.dtype(np.float64)


class Model(ABC):
    """The base of every fastfool model (see the module docstring for the protocol): use
    :class:`~fastfool.LinearModel`, :class:`~fastfool.MLP`, :class:`~fastfool.KernelSVM` or
    :func:`fastfool.from_sklearn`."""

    #: "cpu" (NumPy weights, CPU kernels) or "cuda" (CuPy weights, CUDA kernels); see :meth:`to`.
    device = "cpu"
    #: The float64 model behind every verdict when this one computes in float32 (built from the
    #: weights as given, before rounding); None for float64 models (they are their own).
    _ref64 = None
    #: The scikit-learn estimator this model was converted from: it decides the rows whose
    #: float64 margin is within rounding of a tie (see :mod:`fastfool.verdict`).
    _source = None
    #: Unit roundoff of the source's own arithmetic (float32 for an MLPClassifier fitted on
    #: float32 data): the rounding bounds of the verdict use the coarser of it and float64's.
    _source_u = verdict.U64
    #: A pipeline folded into this model's first layer (fastfool.models.pipeline.Fold): the
    #: rounding it adds to every verdict bound; None for models that are what they hold.
    _fold = None
    #: Evaluation error of the source's tanh / logistic, in units of _source_u (NumPy's: 2;
    #: torch's float32 functions: 8).
    _source_act_err = 2

    def __init__(self, classes, n_outputs: int, dtype: np.dtype):
        self.dtype = dtype
        self.binary = n_outputs == 1
        n_classes = 2 if self.binary else n_outputs
        if classes is None:
            classes = np.arange(n_classes)
        classes = np.asarray(classes)
        if classes.ndim != 1 or len(classes) != n_classes:
            raise ValueError(f"classes: expected {n_classes} labels, got shape {classes.shape}")
        if len(np.unique(classes)) != n_classes:
            raise ValueError("classes: labels must be distinct")
        self.classes_ = classes
        self._pinv_cache: dict = {}

    #: The array attributes :meth:`to` moves to a GPU (a list: each entry); empty: CPU only.
    _device_arrays: tuple = ()

    @property
    def _moves_to_gpu(self) -> bool:
        return bool(self._device_arrays)

    @property
    @abstractmethod
    def n_features_in_(self) -> int:
        """Features of an input row."""

    @property
    def n_weights(self) -> int:
        """Weight elements a forward pass reads (all layers; a kernel SVM's support vectors):
        the attacks size their row chunks so that a wide model's weights are streamed and
        packed once per chunk of at least as many elements."""
        return 0

    # -- the protocol the attacks use (see the module docstring); implemented by subclasses --
    @abstractmethod
    def _forward(self, X, threads):
        """Raw logits (a binary model's one score column): :meth:`logits`' kernel."""

    @abstractmethod
    def scores(self, X, epilogue=None, threads=None):
        """Softmax-view logits (or their softmax / log-softmax) of checked inputs."""

    @abstractmethod
    def loss_grad(self, X, yi, threads=None, return_prob=False, out=None):
        """(grad, loss[, prob]) of the softmax cross-entropy at class indices yi."""

    @abstractmethod
    def fused_step(self, X, yi, x0, threads, out, **step):
        """Gradient and attack update in one pass; returns out."""

    @abstractmethod
    def vjp(self, X, V, threads=None, return_logits=False):
        """Input gradient of sum(V * logits) (softmax view)."""

    def layers(self):
        raise ValueError(f"{type(self).__name__} is not a stack of affine layers")

    def affine_map(self):
        """(A (C, D), c (C,)) with logits = X @ A.T + c for models that are one affine map
        (softmax view, float64); raises ValueError for the others."""
        raise ValueError(f"this model is not affine (a {type(self).__name__})")

    def _affine_error(self):
        """Bound on |computed - exact| of :meth:`affine_map`'s A (None: exact)."""
        return None

    @abstractmethod
    def _reference_logits(self, X64, threads, xinf=None):
        """(float64 logits of the reference in the softmax view, rounding bound per row)."""

    @property
    def n_classes(self) -> int:
        return len(self.classes_)

    # -- devices -----------------------------------------------------------------------------
    def to(self, device: str) -> "Model":
        """This model on ``"cuda"`` (or ``"cuda:N"``) or ``"cpu"``: a copy whose weights are
        CuPy (resp. NumPy) arrays; the original is unchanged (``to`` of the current device
        returns the model itself). A GPU model takes CuPy inputs and returns CuPy arrays from
        its methods and the attacks written for both devices
        (``fastfool.attacks._common.GPU_ATTACKS``: every attack but minimal and template);
        those, inversion and certification need ``to("cpu")``. Raises a
        clear error when no GPU can be used (see :func:`fastfool.cuda.require`)."""
        device = str(device)
        if device == "cpu":
            return self if self.device == "cpu" else self._cpu
        if device != "cuda" and not device.startswith("cuda:"):
            raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        if not self._moves_to_gpu:
            raise NotImplementedError(f"{type(self).__name__} runs on the CPU only; "
                                      "LinearModel and MLP move to the GPU")
        cp = cuda.require()
        try:
            dev = int(device.split(":", 1)[1]) if ":" in device else cp.cuda.Device().id
        except ValueError:
            raise ValueError(f"device: expected 'cuda:N' with an integer N, got {device!r}") from None
        if not 0 <= dev < cuda.device_count():
            raise ValueError(f"device: GPU {dev} does not exist ({cuda.device_count()} visible)")
        if self.device == "cuda" and self._gpu_id == dev:
            return self
        src = self if self.device == "cpu" else self._cpu
        m = copy.copy(src)
        with cp.cuda.Device(dev):  # the weights the kernels read; labels, references stay
            for k in src._device_arrays:
                v = getattr(src, k)
                setattr(m, k, [None if e is None else cp.asarray(e) for e in v]
                        if isinstance(v, list) else cp.asarray(v))
        m._pinv_cache = {}
        m.device, m._gpu_id, m._cpu = "cuda", dev, src
        return m

    @property
    def _be(self) -> Backend:
        """The backend the model's weights live on (fastfool._backend)."""
        return CPU if self.device == "cpu" else cuda.CudaBackend(self._gpu_id)

    # -- the reference behind verdicts -----------------------------------------------------------
    def _reference(self) -> "Model":
        """The float64 CPU model whose decisions are the verdicts (see :mod:`fastfool.verdict`)."""
        if self.device != "cpu":
            return self._cpu._reference()
        return self if self._ref64 is None else self._ref64

    def _screen_logits(self, X, threads, xinf=None):
        """A float32 model's own logits (as float64), a bound on their distance to the exact
        logits of the float64 reference and the rows' max |x| (``xinf`` when the caller has
        it), or None (float64 models, GPU models): the cheap first pass of
        fastfool.verdict.judge."""
        if self.dtype != np.float32 or self.device != "cpu":
            return None
        S = self.scores(X, None, threads).astype(np.float64)
        xinf = self._row_max_abs(X) if xinf is None else xinf
        # float32 arithmetic on float32 copies of the weights; the AVX2 float32 tanh is within
        # 3e-7 relative (tests/test_numerics.py), logistic likewise: 8 u of evaluation error
        err = verdict.layer_error_bound(xinf, self._layer_constants(), self._acts, verdict.U32,
                                        act_err=8, rounded_weights=True) + self._extra_error(xinf, X)
        return S, err, xinf

    def _extra_error(self, xinf, X=None):
        """Per row, what a folded pipeline adds to the rounding bound of the logits (its fold
        and scikit-learn's own evaluation of the steps; per feature when the rows X are
        given); 0 for other models."""
        return 0.0 if self._fold is None else self._fold.error(xinf, X)

    def _candidate_logits(self, X, S32, e32, xinf, threads):
        """Hook of fastfool.verdict.judge for rows the float32 screen left unclear: None (the
        whole float64 reference is evaluated), or (logits for the clear test, float64 error
        bound, logits for the confidence) computed more cheaply (LinearModel)."""
        return None

    @staticmethod
    def _row_max_abs(X):
        """max |x| per row (float64), one threaded pass."""
        return kernels.max_abs_rows(X).astype(np.float64)

    def _duplicates(self):
        """verdict.duplicate_groups of the output layer (softmax view), cached."""
        ref = self._reference()
        if "duplicates" not in ref._pinv_cache:
            Ws, bs, _ = ref.layers()
            ref._pinv_cache["duplicates"] = verdict.duplicate_groups(Ws[-1], bs[-1])
        return ref._pinv_cache["duplicates"]

    def _checked_out(self, out, threads, what="scores"):
        """Refuse outputs that overflowed from finite inputs (NaN probabilities otherwise)."""
        a = out if out.ndim == 2 else out.reshape(-1, 1)
        if a.size and not kernels.all_finite(a, threads=threads):
            bad = int(np.flatnonzero(~np.isfinite(self._be.to_host(a)).all(axis=1))[0])
            raise ValueError(f"X: the model's {what} overflow on row {bad} (finite inputs, "
                             "non-finite scores): the inputs are too large for this model")
        return out

    # -- input handling ----------------------------------------------------------------------
    def _X(self, X, threads, check_finite=True, name="X", cols=None, cols_what=None,
           out_cols=0):
        """Inputs checked once for either device: an array of the model's backend (CuPy for a
        GPU model), float (cast to the model's dtype), ``cols`` features, finite unless asked.

        Every call writes at least one score per class and row: an output that cannot fit in
        memory (a broadcast view of 2**31 rows) is refused before the finite check reads X;
        ``out_cols``: the caller writes that many values per row (an attack: its ``x_adv``)."""
        be, threads = self._be, resolve_threads(threads)
        if be is not CPU and not be.owns(X):
            raise TypeError(f"{name}: the model is on the GPU, so inputs must be CuPy arrays "
                            f"(cupy.asarray({name})), got {type(X).__name__}; or use "
                            "model.to('cpu')")
        X = matrix(X, name, self.dtype, cast=True,
                   cols=self.n_features_in_ if cols is None else cols,
                   cols_what=" (the model's number of features)" if cols_what is None else cols_what,
                   be=be)
        if be is CPU:
            check_fits((X.shape[0], max(len(self.classes_), out_cols, 1)), X.itemsize, name,
                       "the output" if out_cols else "the scores")
        if check_finite and X.size:
            _check_finite(X, name, threads, be)
        return X

    def class_index(self, y: ArrayLike) -> np.ndarray:
        """Map labels (values of ``classes_``) to class indices 0..n_classes-1.

        Raises ``ValueError`` naming the first label that is not one of the model's classes.
        """
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y: expected a 1-D array of labels, got shape {y.shape}")
        classes = self.classes_
        if y.size == 0:
            return np.zeros(0, dtype=np.int64)
        if y.dtype.kind in "iu" and classes.dtype.kind in "iu" and \
                np.array_equal(classes, np.arange(len(classes))):
            # classes 0..C-1 and integer labels: a label is its index (two reductions instead
            # of a sort and a search: 20k labels 0.35 -> 0.01 ms); others fall through to the
            # search, which names the first bad one
            if y.min() >= 0 and y.max() < len(classes):
                return y.astype(np.int64)
        sorter = np.argsort(classes, kind="stable")
        try:
            pos = np.searchsorted(classes, y, sorter=sorter)
            pos = np.minimum(pos, len(classes) - 1)
            idx = sorter[pos]
            ok = classes[idx] == y
        except (TypeError, ValueError, np.exceptions.DTypePromotionError) as exc:
            raise ValueError(
                f"y: labels of dtype {y.dtype} cannot be compared with classes_ ({classes.dtype})"
            ) from exc
        ok = np.asarray(ok, dtype=bool)
        if ok.shape != y.shape or not ok.all():
            bad = y[~ok][0] if ok.shape == y.shape else y[0]
            bad = bad.item() if isinstance(bad, np.generic) else bad
            raise ValueError(f"y: label {bad!r} is not one of the model's classes {classes.tolist()}")
        return idx.astype(np.int64)

    def _y(self, y, n) -> np.ndarray:
        y = y.get() if cuda.is_device_array(y) else np.asarray(y)
        if y.ndim == 0:
            y = np.full(n, y[()], dtype=y.dtype)
        if y.ndim != 1 or y.shape[0] != n:
            raise ValueError(f"y: expected {n} labels (one per row of X), got shape {y.shape}")
        return labels_to_index(self.class_index(y), n, self.n_classes)

    # -- scikit-learn style predictions ---------------------------------------------------------
    def logits(self, X: ArrayLike, *, threads: int | None = None,
               check_finite: bool = True) -> np.ndarray:
        """The (N, C) scores whose softmax gives :meth:`predict_proba` ([0, s] when binary)."""
        if is_dask(X):
            return map_rows(functools.partial(_dask_call, self, "logits", threads, check_finite),
                            X, self.n_classes if not self.binary else 2, self.dtype)
        threads = resolve_threads(threads)
        X = self._X(X, threads, check_finite)
        out = self.scores(X, None, threads)
        return self._checked_out(out, threads) if check_finite else out

    def decision_function(self, X: ArrayLike, *, threads: int | None = None,
                          check_finite: bool = True) -> np.ndarray:
        """Scores as scikit-learn's ``decision_function``: (N,) for binary models, else (N, C)."""
        threads = resolve_threads(threads)
        X = self._X(X, threads, check_finite)
        S = self._forward(X, threads)
        if check_finite:
            self._checked_out(S, threads)
        return S[:, 0] if self.binary else S

    def predict_proba(self, X: ArrayLike, *, threads: int | None = None,
                      check_finite: bool = True) -> np.ndarray:
        """Class probabilities (N, C): the softmax of the logits (stable fused epilogue).

        This is scikit-learn's ``predict_proba`` for LogisticRegression and MLPClassifier; for
        other estimators it is fastfool's surrogate (``from_sklearn`` says so when converting),
        which the gradient attacks optimise while their success is :meth:`predict`'s. A Dask
        array X (chunked by rows) gives a lazy Dask array, block by block."""
        if is_dask(X):
            return map_rows(functools.partial(_dask_call, self, "predict_proba", threads,
                                              check_finite), X, self.n_classes, self.dtype)
        threads = resolve_threads(threads)
        X = self._X(X, threads, check_finite)
        out = self.scores(X, "softmax", threads)
        return self._checked_out(out, threads, "probabilities") if check_finite else out

    def predict_log_proba(self, X: ArrayLike, *, threads: int | None = None,
                          check_finite: bool = True) -> np.ndarray:
        """Log-probabilities (N, C), computed as a fused log-softmax (no log(0))."""
        threads = resolve_threads(threads)
        X = self._X(X, threads, check_finite)
        out = self.scores(X, "log_softmax", threads)
        return self._checked_out(out, threads, "probabilities") if check_finite else out

    def predict(self, X: ArrayLike, *, threads: int | None = None,
                check_finite: bool = True) -> np.ndarray:
        """Predicted labels (values of ``classes_``): the decision of the user's model.

        Computed in float64 on the weights as given (a float32 model keeps them), ties resolved
        as scikit-learn does; rows within rounding of a tie are decided by the source estimator
        of a ``from_sklearn`` model (:mod:`fastfool.verdict`). Every attack's ``success`` and
        ``pred`` follow the same rule, so they always agree with this method. A Dask array X
        gives a lazy Dask array."""
        if is_dask(X):
            return map_rows(functools.partial(_dask_call, self, "predict", threads, check_finite),
                            X, None, self.classes_.dtype)
        threads = resolve_threads(threads)
        X = self._X(X, threads, check_finite)
        if self.device == "cuda":  # decided on the host, by the float64 reference
            cp = cuda.require()
            idx = verdict.decide(self, cp.asnumpy(X), threads)
            if self.classes_.dtype.kind in "biuf":  # labels of numeric classes stay on the GPU
                return cp.asarray(self.classes_)[cp.asarray(idx)]
            return self.classes_[idx]
        return self.classes_[verdict.decide(self, X, threads)]

    def loss_gradient(self, X: ArrayLike, y: ArrayLike, *, return_loss: bool = False,
                      threads: int | None = None, check_finite: bool = True):
        """Gradient of the softmax cross-entropy ``-log P(y | x)`` with respect to X.

        Parameters
        ----------
        X : (N, D) inputs. y : (N,) labels from ``classes_`` (or one label for all rows).
        return_loss : also return the per-row loss (N,).

        Returns
        -------
        (N, D) gradient in the model's dtype (and the loss when asked). With a Dask array X
        (and y as NumPy or Dask), lazy Dask arrays.
        """
        if is_dask(X):
            Xd = rows_of(X)
            yd = labels_like(y, Xd)
            G = map_rows(functools.partial(_dask_grad, self, threads, check_finite, 0), Xd,
                         Xd.shape[1], self.dtype, yd)
            if not return_loss:
                return G
            L = map_rows(functools.partial(_dask_grad, self, threads, check_finite, 1), Xd,
                         None, self.dtype, yd)
            return G, L
        threads = resolve_threads(threads)
        X = self._X(X, threads, check_finite)
        yi = self._y(y, X.shape[0])
        G, loss = self.loss_grad(X, yi, threads)
        return (G, loss) if return_loss else G


def _dask_call(model, method, threads, check_finite, block):
    """One row block of a model method for a Dask array (one fastfool thread by default)."""
    return getattr(model, method)(block, threads=1 if threads is None else threads,
                                  check_finite=check_finite)


def _dask_grad(model, threads, check_finite, which, block, yb):
    G, loss = model.loss_gradient(block, yb, return_loss=True, check_finite=check_finite,
                                  threads=1 if threads is None else threads)
    return G if which == 0 else loss
