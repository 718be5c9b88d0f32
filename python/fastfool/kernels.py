"""The raw kernels, for benchmarks and power users.

Every function takes float32 or float64 arrays of one dtype (strided and negative-stride views
are read in place, never copied or modified), checks shapes, and runs the C++ kernel with the
GIL released on ``threads`` threads (default: :func:`fastfool.get_threads`). Outputs are new
C-contiguous arrays unless ``out=`` is given. No NaN check happens here (the models do that).

CuPy arrays (the first array argument decides: :func:`backend_of`) run the same operation on
the GPU (:class:`fastfool.cuda.CudaBackend`) and return CuPy arrays: the arguments are checked
once, here, by the same code for both devices (the same mistake raises the same exception);
mixing NumPy and CuPy inputs raises ``TypeError``.

Activation names: ``"identity"``, ``"relu"``, ``"tanh"``, ``"logistic"``.

Ctrl-C: a CPU kernel called from the main thread checks for a pending signal every 20 ms
(between row blocks, tasks and fused steps) and raises ``KeyboardInterrupt`` within about that
time (measured: bench/interrupt_latency.py). An ``out=`` array (or ``X`` updated in place) then
holds the rows finished before the stop and its old values elsewhere; arrays the kernel
allocates are dropped. Calls from other threads, and GPU calls, run to the end.

Sizes: every dimension must be below 2**40 (a broadcast view may claim more), and a kernel
workspace larger than the machine's memory (RAM and swap) raises ``MemoryError`` before
anything is allocated.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence, Union

import numpy as np
from numpy.typing import DTypeLike

from . import _core, cuda
from ._backend import CPU, Backend
from ._checks import (ACTIVATIONS, act_codes, empty_aligned, clip_bounds, epilogue_code, float_array,
                      labels_to_index, matrix, norm_is_l2, norm_name, out_array, step_scalars, vector,
                      with_biases)
from ._runtime import check_fits, resolve_threads
from ._typing import Clip, Norm

#: a NumPy array, or a CuPy array (then every array of the call is one, on one GPU)
Array = Any
#: one activation name for every layer, or one per layer
Activations = Union[str, Sequence[str]]
#: the row epilogue of a forward pass
Epilogue = Literal[None, "none", "softmax", "log_softmax"]

__all__ = [
    "ACTIVATIONS",
    "scores",
    "ce_grad_linear",
    "mlp_forward",
    "ce_grad_mlp",
    "mlp_vjp",
    "backproject",
    "fused_update",
    "ce_step_linear",
    "ce_step_mlp",
    "diff_norms",
    "project_plane",
    "fab_step",
    "square_linf_mlp",
    "max_abs_rows",
    "argmax_rows",
    "top2_rows",
    "softmax_at",
    "all_finite",
    "backend_of",
]


def backend_of(a: object) -> Backend:
    """The backend an array lives on: the CPU for anything but a CuPy array, whose GPU's
    :class:`fastfool.cuda.CudaBackend` otherwise (CUDA module, CuPy and a device required)."""
    if cuda.is_device_array(a):
        cuda.require()
        return cuda.CudaBackend(a.device.id)
    return CPU

def scores(X: Array, W: Array, b: Array | None = None, *, epilogue: Epilogue = None,
           out: Array | None = None, threads: int | None = None) -> Array:
    """Batched scoring ``S = X @ W.T + b`` with an optional fused row epilogue.

    Parameters
    ----------
    X : (N, D) float array.
    W : (C, D) array of X's dtype (scikit-learn ``coef_`` layout).
    b : (C,) array or None.
    epilogue : None, ``"softmax"`` or ``"log_softmax"`` (numerically stable: max subtracted).
    out : optional (N, C) array of X's dtype with contiguous columns.

    Returns
    -------
    (N, C) array.

    Cost: ``2*N*C*D`` FLOPs through the packed AVX2/FMA micro-kernel.
    """
    be = backend_of(X)
    X = matrix(X, "X", be=be)
    W = matrix(W, "W", X.dtype, cols=X.shape[1], cols_what=" (X has that many features)", be=be)
    bb = None if b is None else vector(b, "b", W.shape[0], X.dtype, be=be)
    ep = epilogue_code(epilogue)
    S = out_array(out, "out", (X.shape[0], W.shape[0]), X.dtype, [(X, "X"), (W, "W"), (bb, "b")], be)
    be.scores(X, W, bb, ep, S, resolve_threads(threads))
    return S


def empty(shape: int | Sequence[int], dtype: DTypeLike = np.float32) -> np.ndarray:
    """An uninitialised array with its data aligned to a 64-byte cache line, for ``out=``.

    The kernels write a large gradient (32 MiB or more, rows a multiple of 64 bytes) with
    streaming stores when ``out`` is aligned like this, which saves reading every line of it
    first (~10% on a 200k x 784 float32 CE gradient). Outputs the kernels allocate themselves
    are aligned already; ``np.empty``'s large arrays are only 16-byte aligned.
    """
    return empty_aligned(shape, dtype)


def _ce_outputs(X, C, out, return_prob, inputs, be):
    G = out_array(out, "out", X.shape, X.dtype, inputs, be)
    loss = be.empty(X.shape[0], X.dtype)
    prob = be.empty((X.shape[0], C), X.dtype) if return_prob else None
    return G, loss, prob


def ce_grad_linear(X: Array, W: Array, b: Array | None, y: Array, *, out: Array | None = None,
                   return_prob: bool = False, threads: int | None = None) -> tuple:
    """Fused softmax cross-entropy input gradient of a linear model.

    Per row: ``P = softmax(x W^T + b)``, ``loss = -log P[y]``, ``grad = (P - onehot(y)) W``,
    computed block by block (no N x C temporary beyond a block of rows).

    Parameters
    ----------
    X : (N, D); W : (C, D); b : (C,) or None; y : (N,) int class indices in ``[0, C)``.
    return_prob : also return the (N, C) probabilities.

    Returns
    -------
    grad (N, D), loss (N,) and, if requested, prob (N, C).
    """
    be = backend_of(X)
    X = matrix(X, "X", be=be)
    W = matrix(W, "W", X.dtype, cols=X.shape[1], cols_what=" (X has that many features)", be=be)
    bb = None if b is None else vector(b, "b", W.shape[0], X.dtype, be=be)
    yy = labels_to_index(y, X.shape[0], W.shape[0], be=be)
    G, loss, prob = _ce_outputs(X, W.shape[0], out, return_prob, [(X, "X"), (W, "W"), (bb, "b")], be)
    be.ce_grad_linear(X, W, bb, yy, G, loss, prob, resolve_threads(threads))
    return (G, loss, prob) if return_prob else (G, loss)


def _layers(X, weights, biases, activations, be, logits=False):
    weights, biases = with_biases(weights, biases, "weights")
    Ws, bs = [], []
    width = X.shape[1]
    for i, (w, bi) in enumerate(zip(weights, biases)):
        w = matrix(w, f"weights[{i}]", X.dtype, be=be)
        if w.shape[0] != width:
            raise ValueError(f"weights[{i}]: expected {width} input rows, got shape {w.shape}")
        Ws.append(w)
        bs.append(None if bi is None else vector(bi, f"biases[{i}]", w.shape[1], X.dtype, be=be))
        width = w.shape[1]
    acts = act_codes(activations, len(Ws))
    if logits and acts[-1] != ACTIVATIONS["identity"]:
        raise ValueError("activations: the last layer must be 'identity' (it produces the logits)")
    return Ws, bs, acts


def mlp_forward(X: Array, weights: Sequence[Array], biases: Sequence[Array | None] | None,
                activations: Activations, *, epilogue: Epilogue = None, out: Array | None = None,
                threads: int | None = None) -> Array:
    """Forward pass of a dense stack: ``h = act_i(h @ weights[i] + biases[i])``.

    ``weights[i]`` has shape (in, out) as scikit-learn's ``coefs_``; ``activations`` is one name
    per layer (or one name for all). ``epilogue`` ("softmax"/"log_softmax") applies to the last
    layer's output. Returns (N, out_last).
    """
    be = backend_of(X)
    X = matrix(X, "X", be=be)
    Ws, bs, acts = _layers(X, weights, biases, activations, be)
    ep = epilogue_code(epilogue)
    inputs = [(X, "X")] + [(w, "weights") for w in Ws]
    O = out_array(out, "out", (X.shape[0], Ws[-1].shape[1]), X.dtype, inputs, be)
    be.mlp_forward(X, Ws, bs, acts, ep, O, resolve_threads(threads))
    return O


def ce_grad_mlp(X: Array, weights: Sequence[Array], biases: Sequence[Array | None] | None,
                activations: Activations, y: Array, *, out: Array | None = None,
                return_prob: bool = False, threads: int | None = None) -> tuple:
    """Softmax cross-entropy input gradient of a dense stack by back-propagation.

    The last layer's activation must be ``"identity"``: its outputs are the logits. Returns
    grad (N, D), loss (N,) and, with ``return_prob``, prob (N, C).
    """
    be = backend_of(X)
    X = matrix(X, "X", be=be)
    Ws, bs, acts = _layers(X, weights, biases, activations, be, logits=True)
    yy = labels_to_index(y, X.shape[0], Ws[-1].shape[1], be=be)
    inputs = [(X, "X")] + [(w, "weights") for w in Ws]
    G, loss, prob = _ce_outputs(X, Ws[-1].shape[1], out, return_prob, inputs, be)
    be.ce_grad_mlp(X, Ws, bs, acts, yy, G, loss, prob, resolve_threads(threads))
    return (G, loss, prob) if return_prob else (G, loss)


def mlp_vjp(X: Array, weights: Sequence[Array], biases: Sequence[Array | None] | None,
            activations: Activations, V: Array, *, return_logits: bool = False,
            out: Array | None = None, threads: int | None = None):
    """Input gradient of ``sum_c V[i, c] * logits_c(x_i)`` for a dense stack (last layer
    ``"identity"``): one forward and one backward pass. With ``V = e_j - e_k`` this is
    ``grad(s_j - s_k)``, as DeepFool needs. Returns grad (N, D) and, if asked, the logits."""
    be = backend_of(X)
    X = matrix(X, "X", be=be)
    Ws, bs, acts = _layers(X, weights, biases, activations, be, logits=True)
    V = matrix(V, "V", X.dtype, be=be)
    if V.shape != (X.shape[0], Ws[-1].shape[1]):
        raise ValueError(f"V: expected shape {(X.shape[0], Ws[-1].shape[1])}, got {V.shape}")
    inputs = [(X, "X"), (V, "V")] + [(w, "weights") for w in Ws]
    G = out_array(out, "out", X.shape, X.dtype, inputs, be)
    logits = be.empty(V.shape, X.dtype) if return_logits else None
    be.mlp_vjp(X, Ws, bs, acts, V, G, logits, resolve_threads(threads))
    return (G, logits) if return_logits else G


def backproject(H: Array, pinvs: Sequence[Array], biases: Sequence[Array | None] | None,
                activations: Activations, *, margin: float = 1e-6, base: Array | None = None,
                out: Array | None = None, threads: int | None = None,
                return_clamped: bool = False):
    """Pseudo-inverse back-projection, top layer first.

    For each step i: ``H = (act_i^{-1}(H) - biases[i]) @ pinvs[i]`` where ``pinvs[i]`` is the
    (out, in) pseudo-inverse of that layer's (in, out) weights. ``activations[i]`` names the
    activation being undone: identity, tanh (atanh) or logistic (logit); relu is refused.
    Arguments of tanh/logistic inverses are clamped into ``[-1 + margin, 1 - margin]`` resp.
    ``[margin, 1 - margin]``. With ``base`` (N, D_out) the result is added to it.

    Returns the (N, D_out) array, and with ``return_clamped`` the number of clamped values.
    """
    be = backend_of(H)
    H = matrix(H, "H", be=be)
    pinvs, biases = with_biases(pinvs, biases, "pinvs")
    Ps, bs, k = [], [], H.shape[1]
    for i, (p, bi) in enumerate(zip(pinvs, biases)):
        p = matrix(p, f"pinvs[{i}]", H.dtype, be=be)
        if p.shape[0] != k:
            raise ValueError(f"pinvs[{i}]: expected {k} rows, got shape {p.shape}")
        Ps.append(p)
        bs.append(None if bi is None else vector(bi, f"biases[{i}]", k, H.dtype, be=be))
        k = p.shape[1]
    acts = act_codes(activations, len(Ps))
    for i, a in enumerate(acts):
        if a == ACTIVATIONS["relu"]:
            raise ValueError(f"activations[{i}]: relu is not invertible (it maps all negatives to 0)")
    margin = float(margin)
    if not 0.0 < margin < 0.5:
        raise ValueError(f"margin: must be in (0, 0.5), got {margin}")
    if base is not None:
        base = matrix(base, "base", H.dtype, be=be)
        if base.shape != (H.shape[0], k):
            raise ValueError(f"base: expected shape {(H.shape[0], k)}, got {base.shape}")
    O = out_array(out, "out", (H.shape[0], k), H.dtype,
                  [(H, "H"), (base, "base")] + [(p, "pinvs") for p in Ps], be)
    n = be.backproject(H, Ps, bs, acts, margin, base, O, resolve_threads(threads))
    return (O, n) if return_clamped else O


def _step_args(x, x0, step, eps, norm, clip, quantum, be):
    """Checked arguments of the fused step: (x0, l2, step, eps, lo, hi, quantum)."""
    x0 = matrix(x0, "x0", x.dtype, be=be)
    if x0.shape != x.shape:
        raise ValueError(f"x0: expected shape {x.shape}, got {x0.shape}")
    l2 = norm_is_l2(norm)
    step, eps, quantum = step_scalars(step, eps, quantum)
    lo, hi = clip_bounds(clip, x.shape[1], x.dtype, be)
    return x0, l2, step, eps, lo, hi, quantum


def _step_out(out, x, others, be):
    """The step's output: new, or the caller's (``out=x`` updates in place: the only overlap)."""
    if out is x:
        return out_array(out, "out", x.shape, x.dtype, others, be)
    return out_array(out, "out", x.shape, x.dtype, [(x, "x")] + others, be)


def fused_update(x: Array, grad: Array, x0: Array, *, step: float, eps: float = np.inf,
                 norm: Norm = "inf", clip: Clip = None, quantum: float = 0.0,
                 out: Array | None = None, threads: int | None = None) -> Array:
    """One fused attack step, per row, in a single pass.

    ``norm="inf"``: ``x + step*sign(grad)``, projected onto the L-inf ball of radius ``eps``
    around ``x0``; ``norm=2``: ``x + step*grad/||grad||_2`` (rows with zero gradient stay),
    projected onto the L2 ball. Then clipped to ``clip=(lo, hi)`` (scalars or per-feature
    arrays of length D; either may be None). ``sign(0) = 0``.

    ``quantum > 0`` rounds the perturbation ``out - x0`` to multiples of ``quantum`` before
    clipping, without leaving the ball (L-inf: elements rounded past ``eps`` move one quantum
    back toward x0; L2: rows whose rounded norm exceeds ``eps`` are truncated toward x0), so
    the result stays on x0's grid (e.g. 1/255 for 8-bit images) when the clip bounds are on it.

    ``out=x`` updates in place (the only allowed overlap). Returns the updated array.
    """
    be = backend_of(x)
    x = matrix(x, "x", be=be)
    grad = matrix(grad, "grad", x.dtype, be=be)
    if grad.shape != x.shape:
        raise ValueError(f"grad: expected shape {x.shape}, got {grad.shape}")
    x0, l2, step, eps, lo, hi, quantum = _step_args(x, x0, step, eps, norm, clip, quantum, be)
    O = _step_out(out, x, [(grad, "grad"), (x0, "x0")], be)
    be.fused_update(x, grad, x0, l2, step, eps, lo, hi, quantum, O, resolve_threads(threads))
    return O


def ce_step_linear(X: Array, W: Array, b: Array | None, y: Array, x0: Array, *, step: float,
                   eps: float = np.inf, norm: Norm = "inf", clip: Clip = None,
                   quantum: float = 0.0, out: Array | None = None, return_loss: bool = False,
                   return_prob: bool = False, threads: int | None = None, steps: int = 1):
    """:func:`ce_grad_linear` with :func:`fused_update` applied to each row block while its
    gradient is in cache: one pass, no (N, D) gradient written. ``step`` is signed (negative
    descends, for targeted attacks). Returns the updated inputs (``out=X`` updates in place),
    then, when asked, the per-row loss at X and the probabilities at X.

    ``steps`` > 1 takes that many steps in one call (PGD without early stopping): each row
    block runs all of them while it is in cache, with results bit-identical to ``steps``
    separate calls (each from the previous output); loss and probabilities are then those of
    the last step's starting point."""
    steps = _step_count(steps)
    be = backend_of(X)
    X = matrix(X, "X", be=be)
    W = matrix(W, "W", X.dtype, cols=X.shape[1], cols_what=" (X has that many features)", be=be)
    bb = None if b is None else vector(b, "b", W.shape[0], X.dtype, be=be)
    yy = labels_to_index(y, X.shape[0], W.shape[0], be=be)
    x0, l2, step, eps, lo, hi, quantum = _step_args(X, x0, step, eps, norm, clip, quantum, be)
    O = _step_out(out, X, [(x0, "x0"), (W, "W")], be)
    loss = be.empty(X.shape[0], X.dtype) if return_loss else None
    prob = be.empty((X.shape[0], W.shape[0]), X.dtype) if return_prob else None
    be.ce_step_linear(X, W, bb, yy, x0, l2, step, eps, lo, hi, quantum, O, loss, prob,
                      resolve_threads(threads), steps)
    return _step_result(O, loss, prob)


def ce_step_mlp(X: Array, weights: Sequence[Array], biases: Sequence[Array | None] | None,
                activations: Activations, y: Array, x0: Array, *, step: float,
                eps: float = np.inf, norm: Norm = "inf", clip: Clip = None, quantum: float = 0.0,
                out: Array | None = None, return_loss: bool = False, return_prob: bool = False,
                threads: int | None = None, steps: int = 1, return_final_prob: bool = False):
    """:func:`ce_grad_mlp` with the fused update applied per row block (see
    :func:`ce_step_linear`, also for ``steps``).

    ``return_final_prob=True`` also returns (last) the softmax probabilities of the returned
    iterate, computed while each row block is in cache: the same values as
    ``mlp_forward(out, ..., epilogue="softmax")`` (an attack's final predictions without a
    second pass over the data)."""
    steps = _step_count(steps)
    be = backend_of(X)
    X = matrix(X, "X", be=be)
    Ws, bs, acts = _layers(X, weights, biases, activations, be, logits=True)
    yy = labels_to_index(y, X.shape[0], Ws[-1].shape[1], be=be)
    x0, l2, step, eps, lo, hi, quantum = _step_args(X, x0, step, eps, norm, clip, quantum, be)
    O = _step_out(out, X, [(x0, "x0")] + [(w, "weights") for w in Ws], be)
    C = Ws[-1].shape[1]
    loss = be.empty(X.shape[0], X.dtype) if return_loss else None
    prob = be.empty((X.shape[0], C), X.dtype) if return_prob else None
    final = be.empty((X.shape[0], C), X.dtype) if return_final_prob else None
    be.ce_step_mlp(X, Ws, bs, acts, yy, x0, l2, step, eps, lo, hi, quantum, O, loss, prob,
                   resolve_threads(threads), steps, final)
    return _step_result(O, loss, prob, final)


def _step_count(steps):
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)) or \
            not 1 <= steps <= 2**31 - 1:
        raise ValueError(f"steps: must be an integer in [1, 2**31 - 1], got {steps!r}")
    return int(steps)


def _step_result(O, loss, prob, final=None):
    extra = tuple(a for a in (loss, prob, final) if a is not None)
    return (O,) + extra if extra else O


def diff_norms(A: Array, B: Array, *, threads: int | None = None,
               return_max_abs: bool = False) -> tuple:
    """Per-row L2 (overflow-safe) and L-inf norms of ``A - B``; returns ``(l2, linf)``, and
    with ``return_max_abs`` also :func:`max_abs_rows` of A, computed in the same pass."""
    be = backend_of(A)
    A = matrix(A, "A", be=be)
    B = matrix(B, "B", A.dtype, be=be)
    if B.shape != A.shape:
        raise ValueError(f"B: expected shape {A.shape}, got {B.shape}")
    l2 = be.empty(A.shape[0], A.dtype)
    linf = be.empty(A.shape[0], A.dtype)
    amax = be.empty(A.shape[0], A.dtype) if return_max_abs else None
    be.diff_norms(A, B, l2, linf, resolve_threads(threads), amax)
    return (l2, linf, amax) if return_max_abs else (l2, linf)


def argmax_rows(P: Array, *, threads: int | None = None) -> tuple[Array, Array]:
    """Per row of P: the column of its largest value and that value; returns ``(idx, val)``
    (int64, P's dtype). As ``numpy.argmax(P, axis=1)``: the first of equal maxima, the first NaN
    of a row that has one (NumPy's NaN-propagating order). Multithreaded, one pass."""
    be = backend_of(P)
    P = matrix(P, "P", be=be)
    if P.shape[1] < 1:
        raise ValueError(f"P: needs at least one column, got shape {P.shape}")
    idx = be.empty(P.shape[0], np.int64)
    val = be.empty(P.shape[0], P.dtype)
    be.argmax_rows(P, idx, val, resolve_threads(threads))
    return idx, val


def max_abs_rows(X: Array, *, threads: int | None = None) -> Array:
    """Per row of X: ``max |x|`` (X's dtype; 0 for rows of no columns, NaN where the row holds a
    NaN). One pass; the verdict's bound on a row's rounding error starts from it."""
    be = backend_of(X)
    X = matrix(X, "X", be=be)
    out = be.empty(X.shape[0], X.dtype)
    be.max_abs_rows(X, out, resolve_threads(threads))
    return out


def _index_array(a, n, name, be):
    a = be.xp.asarray(a)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},), got {a.shape}")
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer indices, got dtype {a.dtype}")
    return be.xp.ascontiguousarray(a.astype(np.int64, copy=False))


def top2_rows(S: Array, dup: Array | None = None, *, threads: int | None = None
              ) -> tuple[Array, Array, Array]:
    """The verdict's reduction, per row of S (at least one column): ``(idx, top, second)``, the
    first argmax (:func:`argmax_rows`' rule), its value, and the largest value among the rival
    classes, in float64. Rivals: every other class; with ``dup`` (per class, the first class
    with the same weights: :func:`fastfool.verdict.duplicate_groups`) the classes outside the
    winner's group. ``second`` is NaN when a rival is NaN, ``-inf`` when there is none. One
    pass, no copy of S (NumPy: ``argmax``, a masked copy and ``max``)."""
    be = backend_of(S)
    S = matrix(S, "S", be=be)
    N, C = S.shape
    if C < 1:
        raise ValueError(f"S: needs at least one column, got shape {S.shape}")
    if dup is not None:
        dup = _index_array(dup, C, "dup", be)
        if C and (int(dup.min()) < 0 or int(dup.max()) >= C):
            raise ValueError(f"dup: values must be class indices in [0, {C})")
    idx = be.empty(N, np.int64)
    top = be.empty(N, np.float64)
    second = be.empty(N, np.float64)
    be.top2_rows(S, dup, idx, top, second, resolve_threads(threads))
    return idx, top, second


def softmax_at(S: Array, idx: Array, *, threads: int | None = None) -> Array:
    """Per row of S: ``softmax(S)[r, idx[r]]`` in float64 (``exp(s_k - m) / sum_j exp(s_j - m)``,
    m the row max), without the (N, C) probabilities: an attack's confidence. NaN for rows whose
    max is not finite (an infinite or NaN score: the caller decides what those mean)."""
    be = backend_of(S)
    S = matrix(S, "S", be=be)
    N, C = S.shape
    if C < 1:
        raise ValueError(f"S: needs at least one column, got shape {S.shape}")
    idx = _index_array(idx, N, "idx", be)
    if N and (int(idx.min()) < 0 or int(idx.max()) >= C):
        raise ValueError(f"idx: values must be column indices in [0, {C})")
    out = be.empty(N, np.float64)
    be.softmax_at(S, idx, out, resolve_threads(threads))
    return out


def dlr_rows(S: Array, y: Array, t: Array | None = None, *, threads: int | None = None
             ) -> tuple[Array, Array]:
    """The Difference-of-Logits-Ratio loss of APGD (Croce & Hein 2020) per row of the logits S
    and its gradient with respect to S: ``(loss (N,) float64, V (N, C) of S's dtype)``.

    Untargeted (``t`` None): ``-(z_y - z_u) / (z_p1 - z_p3 + 1e-12)``, u the best class other
    than y; targeted: ``-(z_y - z_t) / (z_p1 - (z_p3 + z_p4) / 2 + 1e-12)``; ``z_p1 >= z_p2 >=
    ...`` the logits in a stable descending order (ties: the lower class first; NaN last). Needs
    3 classes (4 targeted). Computed in float64 in one pass per row (NumPy: a sort of every
    row and five scattered updates)."""
    be = backend_of(S)
    S = matrix(S, "S", be=be)
    N, C = S.shape
    need = 3 if t is None else 4
    if N and C < need:
        raise ValueError(f"S: the DLR loss needs at least {need} classes, got {C}")
    if be is CPU:
        check_fits((N, C + 1), 8, "S", "the loss and gradient")
    yy = labels_to_index(y, N, C, "y", be=be)
    tt = None if t is None else labels_to_index(t, N, C, "t", be=be)
    loss = be.empty(N, np.float64)
    V = be.empty((N, C), S.dtype)
    be.dlr_rows(S, yy, tt, loss, V, resolve_threads(threads))
    return loss, V


def _bound_vector(v, D, name):
    """None, a scalar or D values, as a contiguous float64 (D,) array (None stays None)."""
    if v is None:
        return None
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 0:
        a = np.full(D, float(a))
    if a.shape != (D,):
        raise ValueError(f"{name}: expected a scalar or shape ({D},), got {a.shape}")
    if np.isnan(a).any():
        raise ValueError(f"{name}: contains NaN")
    return np.ascontiguousarray(a)


def _plane_args(X, W, b, lo, hi, norm):
    """The checked float64 arguments of the FAB kernels: X, W (same shape), b (one per row),
    the bounds as (D,) vectors or None, and the norm's code (0 L-inf, 1 L1, 2 L2)."""
    X = matrix(X, "X", np.float64, cast=True)
    N, D = X.shape
    W = matrix(W, "W", np.float64, cast=True)
    if W.shape != X.shape:
        raise ValueError(f"W: expected the shape of X {X.shape}, got {W.shape}")
    b = np.ascontiguousarray(vector(b, "b", N, np.float64, cast=True))
    code = {"inf": 0, "2": 2, "1": 1}[norm_name(norm, l1=True)]
    lo = _bound_vector(lo, D, "lo")
    hi = _bound_vector(hi, D, "hi")
    if lo is not None and hi is not None and np.any(lo > hi):
        raise ValueError("lo, hi: need lo <= hi")
    return X, W, b, lo, hi, code


def project_plane(X: Array, W: Array, b: Array, lo=None, hi=None, *, norm: Norm = 2,
                  threads: int | None = None) -> np.ndarray:
    """Per row i, the move ``d`` of least ``||d||_p`` (``norm``: "inf", 2 or 1) with
    ``W[i] . (X[i] + d) = b[i]`` and ``lo <= X[i] + d <= hi`` (``lo`` / ``hi``: None, a scalar
    or one bound per column): the projection of FAB (Croce & Hein 2020) onto a linearised
    decision boundary inside the box. Where the hyperplane misses the box, the move to the box
    corner furthest toward it; rows with NaN or infinite values do not move (d = 0). X is
    expected inside the box (room outside it counts as 0). Float64 (inputs are cast); returns
    ``d`` (N, D).

    Solved exactly per row from the optimality conditions (each coordinate moves toward the
    plane by ``min(s, room)`` in L-inf, ``min(s |w_j|, room)`` in L2; the largest ``|w_j|``
    first in L1), by sorting the breakpoints: O(D log D) per row, multithreaded."""
    X, W, b, lo, hi, code = _plane_args(X, W, b, lo, hi, norm)
    N, D = X.shape
    check_fits((N, D), 8, "X", "the projections")
    out = np.empty((N, D), np.float64)
    _core.project_plane(X, W, b, lo, hi, code, out, resolve_threads(threads))
    return out


def fab_step(X: Array, X0: Array, W: Array, b: Array, lo=None, hi=None, *, norm: Norm = "inf",
             eta: float = 1.05, alpha_max: float = 0.1, reach=None,
             threads: int | None = None) -> np.ndarray:
    """One step of FAB (Croce & Hein 2020) per row, fused: the iterate ``X[i]`` and the
    original point ``X0[i]`` projected (:func:`project_plane`) onto the row's hyperplane
    ``W[i] . z = b[i]`` inside the box, giving ``d1``, ``d2``; with ``a = min(||d1|| / (||d1|| +
    ||d2||), alpha_max)`` (norms floored at 1e-8) the next iterate is ``clip((1 - a)(X + eta d1)
    + a (X0 + eta d2), lo, hi)``, or ``X[i]`` itself where that point leaves
    ``|z - X0[i]|_inf <= reach[i]`` (default: unbounded) or is not finite. Float64; returns
    the new iterates (N, D)."""
    X, W, b, lo, hi, code = _plane_args(X, W, b, lo, hi, norm)
    N, D = X.shape
    X0 = matrix(X0, "X0", np.float64, cast=True)
    if X0.shape != X.shape:
        raise ValueError(f"X0: expected the shape of X {X.shape}, got {X0.shape}")
    reach = np.full(N, np.inf) if reach is None else \
        np.ascontiguousarray(vector(reach, "reach", N, np.float64, cast=True))
    check_fits((N, D), 8, "X", "the steps")
    out = np.empty((N, D), np.float64)
    _core.fab_step(X, X0, W, b, lo, hi, code, float(eta), float(alpha_max), reach, out,
                   resolve_threads(threads))
    return out


def square_linf_mlp(X: np.ndarray, Xb: np.ndarray, margin: np.ndarray, y: np.ndarray,
                    weights: Sequence[np.ndarray], biases: Sequence[np.ndarray | None],
                    activations: Activations, idx: np.ndarray, start: np.ndarray,
                    val: np.ndarray, *, it0: int = 0, lo=None, hi=None,
                    queries: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """The L-inf Square Attack's loop with windows shared by all rows (Andriushchenko et al.
    2020, AutoAttack's version) over a dense stack whose last layer gives the logits, in place.

    Rows with ``margin > 0`` are in play; ``Xb`` holds their current best points and ``margin``
    the margin ``z_y - max_{c != y} z_c`` there (float64). Iteration ``it`` (``len(start) - 1``
    of them) moves features ``idx[start[it]:start[it + 1]]`` of every row in play to ``clip(X +
    val[...], lo, hi)`` and keeps the move where the margin falls; the first layer's
    pre-activation is carried per row in double and updated by the window's columns only. A row
    whose margin reaches ``<= 0`` leaves play with ``it0 + it + 2`` queries, the others end with
    ``it0 + n_iter + 1``; ``Xb``, ``margin`` and ``queries`` (int64, returned) are written for
    rows in play only. CPU, float32 or float64 (X's dtype; lo / hi per feature or None)."""
    X = matrix(X, "X")
    N, D = X.shape
    Ws, bs, acts = _layers(X, weights, biases, activations, CPU, logits=True)
    yy = labels_to_index(y, N, Ws[-1].shape[1])
    if queries is None:
        queries = np.zeros(N, np.int64)
    # the arrays written in place: checked, and worked on as aligned copies where they are not
    # aligned (the C++ loop reads and writes whole doubles)
    inplace = [out_array(a, name, shape, dt, [(X, "X")] if name == "Xb" else ())
               for a, name, shape, dt in ((Xb, "Xb", (N, D), X.dtype),
                                          (margin, "margin", (N,), np.dtype(np.float64)),
                                          (queries, "queries", (N,), np.dtype(np.int64)))]
    work = [a if a.flags.aligned else a.copy() for a in inplace]
    def flat(v, dt):  # contiguous and aligned (a copy only where needed)
        return np.require(np.asarray(v, dt), dt, ["C", "A"])

    bounds = [None if v is None else flat(np.broadcast_to(np.asarray(v, X.dtype), (D,)), X.dtype)
              for v in (lo, hi)]
    _core.square_linf_mlp(X, work[0], work[1], yy, Ws, bs, acts, flat(idx, np.int64),
                          flat(start, np.int64), flat(val, X.dtype), int(it0), bounds[0],
                          bounds[1], work[2], resolve_threads(threads))
    for a, w in zip(inplace, work):
        if w is not a:
            a[...] = w
    return queries


def all_finite(X: Array, *, threads: int | None = None) -> bool:
    """True when X (any float array) holds no NaN or infinity; one vectorised pass."""
    be = backend_of(X)
    X = float_array(X, "X", be=be)
    if X.ndim != 2:
        X = X.reshape(1, -1) if X.ndim < 2 else X.reshape(X.shape[0], -1)
    return be.all_finite(X, resolve_threads(threads))
