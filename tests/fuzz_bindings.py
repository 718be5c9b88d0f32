"""Hypothesis-driven fuzzing of every public kernel, model method and attack (run by
tests/test_hardening.py in a subprocess, so that a crash fails the test instead of killing it).

Each example takes one call with valid arguments and replaces some of them by hostile values:
wrong ranks and shapes, zero and odd sizes, overflow-sized zero-stride views (N*D > 2**31, for
calls that must refuse them before allocating), negative / Fortran / strided / read-only /
misaligned / big-endian layouts, NaN, +-inf, denormals, huge values, object/int/bool/float16/
complex dtypes and non-array values. Each call must end in a result or in one of the clean
exceptions below; for the kernels with a closed form, a result on finite float inputs must also
match the float64 NumPy reference. Usage: ``python tests/fuzz_bindings.py N_EXAMPLES``; prints
``examples ok refused checked``.
"""

from __future__ import annotations

import sys

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastfool as ff
from fastfool import _core
from fastfool import kernels as K

CLEAN = (ValueError, TypeError, MemoryError, IndexError, OverflowError)
stats = {"examples": 0, "ok": 0, "refused": 0, "checked": 0}

rng = np.random.default_rng(0)
D, C, H = 4, 5, 3
W = rng.standard_normal((C, D))
b = rng.standard_normal(C)
W0, W1 = rng.standard_normal((D, H)), rng.standard_normal((H, C))
X = rng.standard_normal((3, D))
y = np.array([0, 1, 4])
lm = ff.LinearModel(W, b)
mlp = ff.MLP([W0, W1], None, activation="tanh")
P0 = np.linalg.pinv(W0)  # (H, D)
# one tree of three nodes in scikit-learn's layout (root splits feature 1; -1 marks leaves)
TREE = (np.array([1, -2, -2]), np.array([0.5, -2.0, -2.0]), np.array([1, -1, -1]),
        np.array([2, -1, -1]), np.array([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]), np.array([0, 3]))
FOREST = _core.Forest(*TREE, D, 1.0)


def _ref_scores(X, W, b, S):
    return X @ W.T + b


def _ref_norms(A, B, out):
    d = A - B
    return np.stack([np.sqrt((d * d).sum(1)), np.abs(d).max(1, initial=0)])


def _ref_ce(X, W, b, y, out):
    S = X @ W.T + b
    S -= S.max(1, keepdims=True)
    P = np.exp(S)
    P /= P.sum(1, keepdims=True)
    P[np.arange(len(y)), y] -= 1
    return P @ W


# name, function, valid arguments, float64 reference of the result (or None), may take a huge view
CALLS = [
    ("scores", lambda X, W, b: K.scores(X, W, b), (X, W, b), _ref_scores, True),
    ("scores/softmax", lambda X, W, b: K.scores(X, W, b, epilogue="log_softmax"), (X, W, b), None, True),
    ("ce_grad_linear", lambda X, W, b, y: K.ce_grad_linear(X, W, b, y)[0], (X, W, b, y), _ref_ce, True),
    ("mlp_forward", lambda X, A, B: K.mlp_forward(X, [A, B], None, ["tanh", "identity"]), (X, W0, W1), None, True),
    ("ce_grad_mlp", lambda X, A, B, y: K.ce_grad_mlp(X, [A, B], None, ["relu", "identity"], y), (X, W0, W1, y), None, False),
    ("mlp_vjp", lambda X, V: K.mlp_vjp(X, [W0, W1], None, ["logistic", "identity"], V), (X, np.ones((3, C))), None, False),
    ("backproject", lambda Hc, P: K.backproject(Hc, [P], None, ["tanh"]), (np.zeros((3, H)), P0), None, True),
    ("fused_update", lambda x, g, x0, lo: K.fused_update(x, g, x0, step=0.1, eps=0.5, clip=(lo, None)), (X, X, X, -1.0), None, False),
    ("fused_update/l2", lambda x, g, st_: K.fused_update(x, g, x, step=st_, eps=1.0, norm=2, quantum=0.01), (X, X, 0.1), None, False),
    ("ce_step_linear", lambda x, W, y: K.ce_step_linear(x, W, None, y, x, step=0.1, eps=0.2), (X, W, y), None, False),
    ("ce_step_mlp", lambda x, y, e: K.ce_step_mlp(x, [W0, W1], None, ["tanh", "identity"], y, x, step=0.1, eps=e), (X, y, 0.2), None, False),
    ("diff_norms", lambda A, B: K.diff_norms(A, B), (X, X + 1), _ref_norms, False),
    ("all_finite", lambda A: K.all_finite(A), (X,), None, False),
    ("LinearModel", lambda W, b: ff.LinearModel(W, b).predict(X), (W, b), None, False),
    ("MLP", lambda A, B: ff.MLP([A, B], None, activation="tanh").predict(X), (W0, W1), None, False),
    ("predict_proba", lambda X: mlp.predict_proba(X), (X,), None, False),
    ("loss_gradient", lambda X, y: lm.loss_gradient(X, y), (X, y), None, False),
    ("hidden", lambda X, k: mlp.hidden(X, k), (X, 0), None, False),
    ("fgsm", lambda X, y, e: ff.fgsm(mlp, X, y, eps=e), (X, y, 0.1), None, False),
    ("pgd", lambda X, y, e, s: ff.pgd(lm, X, y, eps=e, steps=s, seed=0), (X, y, 0.1, 2), None, False),
    ("deepfool", lambda X, y: ff.deepfool(mlp, X, y, max_iter=3), (X, y), None, False),
    ("minimal", lambda X, t: ff.minimal(lm, X, norm="inf", target=t), (X, None), None, False),
    ("certify", lambda X: ff.certify(lm, X), (X,), None, False),
    ("certify-crown", lambda X: ff.certify(mlp, X, norm="inf", bisection_steps=4), (X,), None,
     False),
    ("template", lambda X, t, c: ff.template(lm, X, target=t, confidence=c), (X, 2, 0.9), None, False),
    ("invert", lambda Hc, k: ff.invert(mlp, Hc, k), (np.zeros((2, H)), 0), None, False),
    ("far_points", lambda X, p: ff.far_points(lm, X, p=p, n_directions=16, max_doublings=2), (X, 0.9), None, False),
    ("score_attack", lambda X, e: ff.score_attack(lm, X, eps=e, max_queries=20), (X, 0.1), None, False),
    ("dlr_rows", lambda S, yy: K.dlr_rows(S, yy), (rng.standard_normal((6, C)), y), None, False),
    ("apgd", lambda X, y, e: ff.apgd(mlp, X, y, eps=e, steps=3, loss="dlr"), (X, y, 0.1), None, False),
    ("square", lambda X, y, e: ff.square(lm, X, y, eps=e, max_queries=5), (X, y, 0.1), None, False),
    ("square-mlp", lambda X, y, e: ff.square(mlp, X, y, eps=e, max_queries=7, clip=(-3, 3)),
     (X, y, 0.1), None, False),
    ("square_linf_mlp", lambda X, Xb, v: K.square_linf_mlp(
        X, Xb, np.ones(3), y, [W0, W1], [None, None], ["tanh", "identity"], np.array([0, 3, 1]),
        np.array([0, 2, 3]), v, lo=-1.0, hi=1.0), (X, X.copy(), np.array([0.1, -0.1, 0.1])),
     None, False),
    ("fmn", lambda X, y: ff.fmn(mlp, X, y, steps=3), (X, y), None, False),
    ("fab", lambda X, y: ff.fab(mlp, X, y, steps=3, norm=1), (X, y), None, False),
    ("apgd-l1", lambda X, y, e: ff.apgd(mlp, X, y, eps=e, steps=3, norm=1), (X, y, 0.5), None,
     False),
    ("square-l2", lambda X, y, e: ff.square(lm, X, y, eps=e, norm=2, max_queries=5), (X, y, 0.5),
     None, False),
    ("ddn", lambda X, y: ff.ddn(mlp, X, y, steps=3), (X, y), None, False),
    ("cw", lambda X, y: ff.cw(mlp, X, y, steps=3, binary_search_steps=2), (X, y), None, False),
    ("project_plane", lambda A, W, b: K.project_plane(A, W, b, 0.0, 1.0, norm="inf"),
     (X, X, np.zeros(len(X))), None, False),
    ("fab_step", lambda A, W, b: K.fab_step(A, A, W, b, norm=1), (X, X, np.zeros(len(X))), None,
     False),
    ("autoattack", lambda X, y, e: ff.autoattack(lm, X, y, eps=e, steps=2, n_targets=1, square_queries=3),
     (X, y, 0.1), None, False),
    ("universal", lambda X, y, e: ff.universal(mlp, X, y, eps=e, max_passes=1, max_iter=3), (X, y, 0.3), None, False),
    ("Forest", lambda f, t, l, r, v, o: _core.Forest(f, t, l, r, v, o, D, 3.0).predict(
        X.astype(np.float32), np.empty(len(X), np.int64), None, 1), TREE, None, False),
    ("Forest.predict", lambda X, lab, p: FOREST.predict(X, lab, p, 2),
     (X.astype(np.float32), np.empty(len(X), np.int64), np.empty((len(X), 2))), None, False),
    ("hop_skip_jump", lambda X, q: ff.hop_skip_jump(lm, X, max_queries=q, clip=(-10, 10)), (X, 60), None, False),
]

FILLS = {
    "normal": lambda shape: rng.standard_normal(shape),
    "nan": lambda shape: np.full(shape, np.nan),
    "inf": lambda shape: np.full(shape, np.inf),
    "-inf": lambda shape: np.full(shape, -np.inf),
    "denormal": lambda shape: np.full(shape, 1e-310),
    "huge": lambda shape: np.full(shape, 1e300),
    "zero": lambda shape: np.zeros(shape),
    "mixed": lambda shape: rng.choice([0.0, 1.0, -2.5, np.nan, np.inf, 1e-310, 3e38], size=shape),
}
DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_, np.uint8,
          np.complex128, object, ">f8", ">f4"]
LAYOUTS = ["c", "fortran", "negative", "step2", "readonly", "misaligned", "zero_stride"]


@st.composite
def hostile_array(draw, like, benign=False):
    """An array shaped like ``like`` (or not), with a hostile dtype, layout or content; with
    ``benign`` only the layout and finite content vary (the call should then succeed)."""
    if isinstance(like, np.ndarray) and (benign or draw(st.booleans())):
        shape = like.shape
    else:
        shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 7, 17]), max_size=3)))
    if benign:
        dtype = like.dtype if isinstance(like, np.ndarray) else np.float64
        fill = draw(st.sampled_from(["normal", "zero", "denormal"]))
    else:
        dtype = draw(st.sampled_from(DTYPES))
        fill = draw(st.sampled_from(sorted(FILLS)))
    layout = draw(st.sampled_from(LAYOUTS))
    with np.errstate(all="ignore"):
        base = FILLS[fill](shape)
        if dtype is object:
            a = base.astype(object)
        elif np.dtype(dtype).kind in "iub":
            a = np.nan_to_num(base, nan=0, posinf=1, neginf=-1).clip(-100, 100).astype(dtype)
        else:
            a = base.astype(dtype)
    if a.ndim == 0 or layout == "c":
        return a
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "negative":
        return a[::-1]
    if layout == "step2":
        return np.repeat(a, 2, axis=-1)[..., ::2]
    if layout == "readonly":
        a.flags.writeable = False
        return a
    if layout == "misaligned" and a.dtype != object and a.itemsize > 1:
        raw = np.zeros(a.nbytes + 1, np.uint8)
        v = raw[1:].view(a.dtype).reshape(a.shape)
        v[...] = a
        return v
    if layout == "zero_stride" and a.size:
        return np.lib.stride_tricks.as_strided(a.reshape(-1)[:1], shape=a.shape, strides=(0,) * a.ndim)
    return a


def huge_view(like):
    """(2**31 + 1, D) rows of a zero-stride view: 8.6e9 elements that take no memory."""
    return np.lib.stride_tricks.as_strided(np.ones(1, like.dtype), shape=(2**31 + 1, like.shape[1]),
                                           strides=(0, 0))


OTHER = st.sampled_from([None, "text", 3, -1, 2.5, float("nan"), float("inf"), True,
                         [[1.0, 2.0], [3.0]], [], {}, (1, 2), b"bytes", 10**30, np.float64(0.5)])


@st.composite
def case(draw):
    i = draw(st.integers(0, len(CALLS) - 1))
    name, fn, valid, ref, huge_ok = CALLS[i]
    args = list(valid)
    mode = draw(st.sampled_from(["benign", "float32", "hostile", "hostile"]))
    if mode == "float32":  # every array argument in single precision: must work as well
        args = [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a
                for a in args]
    positions = draw(st.sets(st.integers(0, len(args) - 1), min_size=1, max_size=len(args)))
    for p in sorted(positions):
        if mode != "hostile":
            if isinstance(args[p], np.ndarray) and args[p].dtype.kind == "f":
                args[p] = draw(hostile_array(args[p], benign=True))
            continue
        how = draw(st.sampled_from(["array", "array", "other", "huge"]))
        if how == "huge" and huge_ok and isinstance(args[p], np.ndarray) and args[p].ndim == 2 and p == 0:
            args[p] = huge_view(args[p])
        elif how == "other":
            args[p] = draw(OTHER)
        else:
            args[p] = draw(hostile_array(args[p]))
    return name, fn, args, ref


def _finite_floats(args):
    """Float arrays (and integer labels) of moderate, finite values: a reference applies."""
    return all(isinstance(a, np.ndarray) and a.size < 10**6 and (
        a.dtype.kind == "i" or (a.dtype.kind == "f" and a.dtype.itemsize >= 4
                                and np.all(np.isfinite(a)) and np.all(np.abs(a) < 1e3)))
        for a in args)


@settings(max_examples=int(sys.argv[1]) if len(sys.argv) > 1 else 200, deadline=None,
          database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(case())
def fuzz(c):
    name, fn, args, ref = c
    stats["examples"] += 1
    try:
        out = fn(*args)
    except CLEAN:
        stats["refused"] += 1
        return
    stats["ok"] += 1
    if ref is not None and _finite_floats(args):
        a64 = [np.asarray(a, np.float64) if a.dtype.kind == "f" else a for a in args]
        want = ref(*a64, out)
        got = np.asarray(out if not isinstance(out, tuple) else np.stack(out), np.float64)
        tol = 1e-4 if any(a.dtype == np.float32 for a in args) else 1e-10
        scale = max(1.0, float(np.abs(want).max(initial=0)))
        assert got.shape == want.shape, (name, got.shape, want.shape)
        assert np.all(np.abs(got - want) <= tol * scale * 10), (name, got, want)
        stats["checked"] += 1


if __name__ == "__main__":
    fuzz()
    print(stats["examples"], stats["ok"], stats["refused"], stats["checked"])
