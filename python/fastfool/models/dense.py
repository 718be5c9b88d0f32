"""Stacks of affine layers ``h = act(h @ W + b)`` ending in logits: a linear softmax model and
a dense MLP, with scikit-learn semantics.

Binary models (one output column, as scikit-learn's ``coef_`` of shape (1, D) or an MLP with a
logistic output) behave as a 2-class softmax over scores ``[0, s]``, which is exactly
scikit-learn's ``[1 - sigmoid(s), sigmoid(s)]``. These are the models with hidden layers
(``hidden``, ``backproject``, ``pinv``), an exact affine map when every activation is the
identity, the rounding-error bounds of the verdict rule, and a GPU copy (``to("cuda")``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import cuda, kernels, verdict
from .._runtime import resolve_threads
from .._typing import ArrayLike
from .base import DEFAULT_MARGIN, Model, _freeze, _model_dtype, _weight

__all__ = ["DenseModel", "LinearModel", "MLP"]


class DenseModel(Model):
    """A stack of affine layers ending in logits (the base of :class:`LinearModel` and
    :class:`MLP`)."""

    # Filled by subclasses: affine layers in (in, out) layout; the last gives the logits (the
    # binary model's single score column). _soft_* is the same stack with a binary output
    # expanded to the 2-class softmax [0, s].
    _Ws: list
    _bs: list
    _acts: list
    _soft_W: np.ndarray
    _soft_b: np.ndarray
    _device_arrays = ("_Ws", "_bs", "_soft_W", "_soft_b")

    # -- sizes ------------------------------------------------------------------------------
    @property
    def n_features_in_(self) -> int:
        return self._Ws[0].shape[0]

    @property
    def n_weights(self) -> int:
        return int(sum(W.size for W in self._Ws))

    @property
    def n_layers(self) -> int:
        """Number of affine layers, the logits layer included."""
        return len(self._Ws)

    def _reference_logits(self, X64, threads, xinf=None):
        """(float64 logits of the reference in the softmax view, rounding bound per row);
        ``xinf``: the rows' max |x| when the caller has it."""
        ref = self._reference()
        S = ref.scores(X64, None, threads)
        return S, self._reference_bound(X64, xinf)

    def _reference_bound(self, X64, xinf=None):
        """verdict.layer_error_bound of the float64 reference for rows X64 (or their max |x|)."""
        xinf = self._row_max_abs(X64) if xinf is None else xinf
        return verdict.layer_error_bound(xinf, self._layer_constants(), self._reference()._acts,
                                         self._source_u, act_err=self._source_act_err) + \
            self._extra_error(xinf, X64)

    def _layer_constants(self):
        ref = self._reference()
        if "verdict" not in ref._pinv_cache:
            Ws, bs, _ = ref.layers()
            ref._pinv_cache["verdict"] = verdict.layer_constants(Ws, bs)
        return ref._pinv_cache["verdict"]

    # -- layers and back-projection -----------------------------------------------------------
    def layer_index(self, layer) -> int:
        """Index into _Ws of the layer whose output carries the codes."""
        L = self.n_layers
        if isinstance(layer, str):
            if layer == "logits":
                return L - 1
            raise ValueError(f"layer: expected an int or 'logits', got {layer!r}")
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise TypeError(f"layer: expected an int or 'logits', got {layer!r}")
        n_hidden = L - 1
        if n_hidden == 0:
            raise ValueError("layer: this model has no hidden layers (use layer='logits')")
        if not -n_hidden <= layer < n_hidden:
            raise ValueError(f"layer: {layer} is out of range for {n_hidden} hidden layers")
        return int(layer) % n_hidden

    def layer_width(self, layer) -> int:
        """Units of ``layer`` (as :meth:`layer_index` reads it; the logits layer of a binary
        model has one)."""
        return self._Ws[self.layer_index(layer)].shape[1]

    def pinv(self, i: int) -> np.ndarray:
        """Moore-Penrose pseudo-inverse (out, in) of layer i's (in, out) weights, cached."""
        key = ("layer", i)
        if self.device == "cuda" and key not in self._pinv_cache:  # LAPACK once, on the host
            self._pinv_cache[key] = cuda.require().asarray(self._cpu.pinv(i))
        if key not in self._pinv_cache:
            self._pinv_cache[key] = np.ascontiguousarray(
                np.linalg.pinv(self._Ws[i].astype(np.float64)), dtype=self.dtype)
        return self._pinv_cache[key]

    def _composite(self, top: int):
        """Affine map x -> z_top = x @ A + c of layers 0..top (all below top must be identity)."""
        key = ("composite", top)
        if self.device == "cuda" and key not in self._pinv_cache:
            self._pinv_cache[key] = cuda.require().asarray(self._cpu._composite(top))
        if key not in self._pinv_cache:
            A = self._Ws[0].astype(np.float64)
            for W in self._Ws[1:top + 1]:
                A = A @ W.astype(np.float64)
            self._pinv_cache[key] = np.ascontiguousarray(np.linalg.pinv(A), dtype=self.dtype)
        return self._pinv_cache[key]

    def backproject(self, H: ArrayLike, layer: int | str = -1, x0: ArrayLike | None = None, *,
                    margin: float = DEFAULT_MARGIN, threads: int | None = None,
                    return_clamped: bool = False):
        """Inputs whose codes at ``layer`` are H, through the Moore-Penrose pseudo-inverse.

        Layer by layer, ``x_prev = (act^-1(h) - b) @ pinv(W)`` with pinv computed once per layer
        and cached. ``layer`` indexes hidden layers like a list (0 the first, -1 the last), or is
        ``"logits"`` to start from the output scores (for a binary model the scores s, shape (N,)
        or (N, 1)). tanh and logistic codes are clamped into the open range by ``margin``
        (see :data:`DEFAULT_MARGIN`); relu layers are not invertible and raise ``ValueError``.

        With ``x0`` (N, D) the result is the input nearest to ``x0`` (L2) whose code at ``layer``
        is H: ``x = x0 + (act^-1(H) - z(x0)) @ pinv(A)``, where z = x @ A + c is the affine map
        to that layer's pre-activation; every layer below must have identity activation.

        Where the layer map is not surjective (a code outside its range), the result is the
        least-squares solution and ``hidden(result)`` will differ from H; check it if it matters.

        Returns (N, D) inputs, and with ``return_clamped`` the number of clamped code values.
        """
        threads = resolve_threads(threads)
        top = self.layer_index(layer)
        width = self._Ws[top].shape[1]
        if not isinstance(H, np.ndarray) and not cuda.is_device_array(H):
            H = np.asarray(H)
        if self.binary and top == self.n_layers - 1 and getattr(H, "ndim", 0) == 1:
            H = H.reshape(-1, 1)
        H = self._X(H, threads, True, "H", cols=width, cols_what=f" (the width of layer {layer!r})")
        first_act = "identity" if top == self.n_layers - 1 else self._acts[top]
        if x0 is None:
            steps = range(top, -1, -1)
            acts = [first_act] + [self._acts[j] for j in range(top - 1, -1, -1)]
            for j, a in zip(steps, acts):
                if a == "relu":
                    raise ValueError(
                        f"backproject: layer {j} has relu activation, which is not invertible "
                        "(all negative pre-activations map to 0)")
            return kernels.backproject(
                H, [self.pinv(j) for j in steps], [self._bs[j] for j in steps], acts,
                margin=margin, threads=threads, return_clamped=return_clamped)
        below = [self._acts[j] for j in range(top)]
        if any(a != "identity" for a in below):
            raise ValueError(
                "backproject(x0=...): the minimum-change solution needs an affine path to the "
                f"layer, but the layers below have activations {below}")
        if first_act == "relu":
            raise ValueError("backproject: relu codes are not invertible")
        x0 = self._X(x0, threads, True, name="x0")
        if x0.shape[0] != H.shape[0]:
            raise ValueError(f"x0: expected {H.shape[0]} rows (one per code), got {x0.shape[0]}")
        P = self._composite(top)
        # z(x0): pre-activation of layer `top` at x0 (all layers up to it affine).
        z0 = kernels.mlp_forward(x0, self._Ws[:top + 1], self._bs[:top + 1], "identity",
                                 threads=threads)
        x1, n = kernels.backproject(H, [P], [None], [first_act], margin=margin, base=x0,
                                    threads=threads, return_clamped=True)
        z0 *= -1
        x = kernels.backproject(z0, [P], [None], ["identity"], base=x1, threads=threads)
        return (x, n) if return_clamped else x

    # -- implementation hooks -------------------------------------------------------------------
    def _forward(self, X, threads):
        return kernels.mlp_forward(X, self._Ws, self._bs, self._acts, threads=threads)

    def layers(self):
        """(weights, biases, activations) of the softmax view: the affine layers ``h =
        act(h @ W + b)`` in (in, out) layout, the last giving the logits (a binary model's
        score column expanded to the two columns [0, s]). Arrays on the model's device."""
        return self._Ws[:-1] + [self._soft_W], self._bs[:-1] + [self._soft_b], list(self._acts)

    def scores(self, X, epilogue=None, threads=None):
        Ws, bs, _ = self.layers()
        return kernels.mlp_forward(X, Ws, bs, self._acts, epilogue=epilogue, threads=threads)

    def loss_grad(self, X, yi, threads=None, return_prob=False, out=None):
        """(grad, loss[, prob]) of softmax cross-entropy at class indices yi; no checks."""
        Ws, bs, _ = self.layers()
        return kernels.ce_grad_mlp(X, Ws, bs, self._acts, yi, threads=threads,
                                   return_prob=return_prob, out=out)

    def fused_step(self, X, yi, x0, threads, out, **step):
        """Fused gradient + attack step (kernels.ce_step_*), softmax view; returns out (and,
        with return_final_prob=True, the probabilities _forward_soft would give for it)."""
        Ws, bs, _ = self.layers()
        return kernels.ce_step_mlp(X, Ws, bs, self._acts, yi, x0, out=out, threads=threads, **step)

    def vjp(self, X, V, threads=None, return_logits=False):
        """Input gradient of sum(V * logits) (softmax view); no checks."""
        Ws, bs, _ = self.layers()
        return kernels.mlp_vjp(X, Ws, bs, self._acts, V, return_logits=return_logits,
                               threads=threads)

    def affine_map(self) -> tuple[np.ndarray, np.ndarray]:
        """(A (C, D), c (C,)) with logits = X @ A.T + c, for models that are one affine map
        (linear models, identity-activation MLPs), in the softmax view (binary: [0, s]), in
        float64 from the weights as given (a float32 model's float64 originals).
        Raises ValueError for other models. Cached."""
        if "affine" not in self._pinv_cache:
            if any(a != "identity" for a in self._acts):
                raise ValueError(f"this model is not affine (activations {self._acts[:-1]})")
            ref = self._reference()
            Ws, bs, _ = ref.layers()
            A = np.asarray(Ws[0], np.float64)
            c = np.asarray(bs[0], np.float64)
            for W, b in zip(Ws[1:], bs[1:]):
                A = A @ np.asarray(W, np.float64)
                c = c @ np.asarray(W, np.float64) + b
            self._pinv_cache["affine"] = (np.ascontiguousarray(A.T), c)
        return self._pinv_cache["affine"]

    def _affine_error(self):
        """Bound (C, D) on |computed - exact| of :meth:`affine_map`'s A (None when A is one
        layer's weights, exactly): ``err_k = err_{k-1} |W_k| + gamma_n |A_{k-1}| |W_k|``."""
        if "affine_err" not in self._pinv_cache:
            Ws, _, _ = self._reference().layers()
            E = None
            if len(Ws) > 1:
                A = np.abs(np.asarray(Ws[0], np.float64))
                E = np.zeros_like(A)
                for W in Ws[1:]:
                    aW = np.abs(np.asarray(W, np.float64))
                    E = (E @ aW + verdict.gamma(W.shape[0]) * (A @ aW)) * (1 + 1e-6)
                    A = A @ aW
                E = np.ascontiguousarray(E.T)
            if self._fold is not None:  # the fold's rounding of the first layer, carried on
                F = self._fold.affine_error(Ws)
                E = F if E is None else E + F
            self._pinv_cache["affine_err"] = E
        return self._pinv_cache["affine_err"]

    def _set_output(self, W_out, b_out):
        """Store the softmax view of the output layer ([0, s] for a binary model)."""
        if self.binary:
            self._soft_W = np.ascontiguousarray(np.hstack([np.zeros_like(W_out), W_out]))
            self._soft_b = np.concatenate([np.zeros(1, self.dtype), b_out])
        else:
            self._soft_W, self._soft_b = W_out, b_out


class LinearModel(DenseModel):
    """A linear classifier ``scores = X @ W.T + b`` with softmax probabilities.

    Parameters
    ----------
    W : (C, D) weights like scikit-learn's ``coef_``; (1, D) or (D,) is a binary model with
        probabilities ``[1 - sigmoid(s), sigmoid(s)]``.
    b : (C,) biases (a scalar for a binary model); default 0.
    classes : labels of the C classes (2 for a binary model); default ``arange``.
    dtype : float32 or float64; default the dtype of W (float64 for non-float W).

    Examples
    --------
    >>> m = LinearModel(np.eye(3, 4), np.zeros(3))
    >>> m.predict(np.array([[0., 2., 1., 0.]]))
    array([1])
    """

    _device_arrays = DenseModel._device_arrays + ("coef_", "intercept_", "_soft_coef")

    def __init__(self, W, b=None, *, classes=None, dtype=None):
        W_given, b_given = W, b
        dt = _model_dtype(dtype, W)
        W = _weight(W, "W", dt)
        if W.ndim == 1:
            W = W.reshape(1, -1)
        if W.ndim != 2:
            raise ValueError(f"W: expected shape (n_classes, n_features), got {W.shape}")
        C, D = W.shape
        if C == 0:
            raise ValueError("W: the model has zero classes")
        if D == 0:
            raise ValueError("W: the model has zero features")
        if b is not None and np.ndim(b) == 0:
            b = np.broadcast_to(np.asarray(b), (C,))
        b = np.zeros(C, dt) if b is None else _weight(b, "b", dt)
        if b.shape != (C,):
            raise ValueError(f"b: expected shape ({C},), got {b.shape}")
        super().__init__(classes, C, dt)
        self.coef_, self.intercept_ = W, b
        self._Ws, self._bs, self._acts = [W.T], [b], ["identity"]
        self._set_output(W.T, b)
        self._soft_coef = np.ascontiguousarray(self._soft_W.T)  # (C, D) for the linear kernels
        _freeze(W, b, self._soft_W, self._soft_b, self._soft_coef)
        if dt != np.float64:
            self._ref64 = LinearModel(W_given, b_given, classes=self.classes_, dtype=np.float64)

    def __repr__(self):
        kind = "binary" if self.binary else f"{self.n_classes} classes"
        return f"LinearModel({kind}, {self.n_features_in_} features, {self.dtype})"

    def _forward(self, X, threads):
        return kernels.scores(X, self.coef_, self.intercept_, threads=threads)

    def scores(self, X, epilogue=None, threads=None):
        return kernels.scores(X, self._soft_coef, self._soft_b, epilogue=epilogue, threads=threads)

    def loss_grad(self, X, yi, threads=None, return_prob=False, out=None):
        return kernels.ce_grad_linear(X, self._soft_coef, self._soft_b, yi, threads=threads,
                                      return_prob=return_prob, out=out)

    def fused_step(self, X, yi, x0, threads, out, **step):
        return kernels.ce_step_linear(X, self._soft_coef, self._soft_b, yi, x0, out=out,
                                      threads=threads, **step)

    def hidden(self, X, layer=-1, **kw):
        raise ValueError("hidden: a LinearModel has no hidden layers (use decision_function)")

    def _candidate_logits(self, X, S32, e32, xinf, threads):
        """Float64 logits of just the classes that can still be the exact argmax given the
        float32 logits and their bound (on a wide model a handful of the C): a class c is left
        out when ``S32_c + e32 + delta < max(S32 - e32)``, delta the float64 clear-margin
        threshold plus twice the float64 bound, and enters the clear test at its upper bound
        ``S32_c + e32``, so the test stays sound against any float64 evaluation."""
        C = self.n_classes
        if C <= 4:
            return None
        ref = self._reference()
        X64 = np.asarray(X, np.float64)
        err = self._reference_bound(None, xinf)
        floor = (S32 - e32[:, None]).max(axis=1)
        delta = verdict.threshold(S32, err, self._source_u) + 2 * err
        cand = S32 + (e32 + delta)[:, None] >= floor[:, None]
        if cand.sum() > 0.25 * cand.size:
            return None
        S_test = S32 + e32[:, None]
        S_conf = S32.copy()
        r, c = np.nonzero(cand)
        W, b = ref._soft_coef, ref._soft_b
        step = max(1, (1 << 20) // max(X.shape[1], 1))
        for i in range(0, r.size, step):  # bounded memory: gathered rows by blocks
            rr, cc = r[i:i + step], c[i:i + step]
            v = np.einsum("ij,ij->i", X64[rr], W[cc]) + b[cc]
            S_test[rr, cc] = v
            S_conf[rr, cc] = v
        return S_test, err, S_conf

    def vjp(self, X, V, threads=None, return_logits=False):
        G = kernels.scores(V, self._soft_coef.T, threads=threads)  # V @ W
        if return_logits:
            return G, self.scores(X, None, threads)
        return G


class MLP(DenseModel):
    """A dense network with scikit-learn ``MLPClassifier`` semantics.

    Parameters
    ----------
    weights : list of (in, out) arrays like ``coefs_``; the last one gives the output scores.
    biases : list of (out,) arrays like ``intercepts_`` (None entries mean zero).
    activation : hidden activation name ("identity", "relu", "tanh", "logistic"), or one name per
        hidden layer.
    classes : labels; default ``arange``. One output unit means a binary model with a logistic
        output (probabilities ``[1 - sigmoid(s), sigmoid(s)]``); more mean softmax.
    dtype : float32 or float64; default the dtype of ``weights[0]``.
    """

    def __init__(self, weights: Sequence, biases: Sequence | None = None, activation="relu", *,
                 classes=None, dtype=None):
        weights = list(weights)
        if not weights:
            raise ValueError("weights: need at least one layer")
        dt = _model_dtype(dtype, weights[0])
        Ws = []
        for i, w in enumerate(weights):
            w = _weight(w, f"weights[{i}]", dt)
            if w.ndim != 2:
                raise ValueError(f"weights[{i}]: expected a 2-D (in, out) array, got shape {w.shape}")
            if 0 in w.shape:
                raise ValueError(f"weights[{i}]: a layer of width 0 (shape {w.shape})")
            if Ws and w.shape[0] != Ws[-1].shape[1]:
                raise ValueError(
                    f"weights[{i}]: expects {w.shape[0]} inputs but layer {i - 1} has "
                    f"{Ws[-1].shape[1]} outputs")
            Ws.append(w)
        if biases is None:
            biases = [None] * len(Ws)
        biases = list(biases)
        if len(biases) != len(Ws):
            raise ValueError(f"biases: expected {len(Ws)} arrays, got {len(biases)}")
        bs = []
        for i, (w, b) in enumerate(zip(Ws, biases)):
            b = np.zeros(w.shape[1], dt) if b is None else _weight(b, f"biases[{i}]", dt)
            if b.shape != (w.shape[1],):
                raise ValueError(f"biases[{i}]: expected shape ({w.shape[1]},), got {b.shape}")
            bs.append(b)
        n_hidden = len(Ws) - 1
        acts = [activation] * n_hidden if isinstance(activation, str) else list(activation)
        if len(acts) != n_hidden:
            raise ValueError(f"activation: expected {n_hidden} names (one per hidden layer), got {len(acts)}")
        for i, a in enumerate(acts):
            if a not in kernels.ACTIVATIONS:
                raise ValueError(f"activation: unknown {a!r} for hidden layer {i}; "
                                 f"expected one of {sorted(kernels.ACTIVATIONS)}")
        super().__init__(classes, Ws[-1].shape[1], dt)
        self._Ws, self._bs, self._acts = Ws, bs, acts + ["identity"]
        self._set_output(Ws[-1], bs[-1])
        _freeze(*Ws, *bs, self._soft_W, self._soft_b)
        if dt != np.float64:
            self._ref64 = MLP(weights, biases, acts, classes=self.classes_, dtype=np.float64)

    @property
    def coefs_(self):
        return list(self._Ws)

    @property
    def intercepts_(self):
        return list(self._bs)

    @property
    def activations(self):
        """Hidden-layer activation names."""
        return self._acts[:-1]

    def __repr__(self):
        sizes = [self.n_features_in_] + [w.shape[1] for w in self._Ws]
        return (f"MLP({'-'.join(map(str, sizes))}, activation={self.activations}, "
                f"{'binary' if self.binary else 'softmax'}, {self.dtype})")

    def hidden(self, X: ArrayLike, layer: int = -1, *, threads: int | None = None,
               check_finite: bool = True) -> np.ndarray:
        """Activations (N, width) of hidden layer ``layer`` (0 the first, -1 the last)."""
        threads = resolve_threads(threads)
        X = self._X(X, threads, check_finite)
        top = self.layer_index(layer)
        if top == self.n_layers - 1:
            raise ValueError("hidden: 'logits' is not a hidden layer (use decision_function)")
        return kernels.mlp_forward(X, self._Ws[:top + 1], self._bs[:top + 1], self._acts[:top + 1],
                                   threads=threads)
