"""Plumbing shared by the attacks: argument checks, targets, row chunks, progress, results."""

from __future__ import annotations

import sys
import time

import numpy as np

from .. import cuda, kernels, verdict
from .._checks import clip_bounds  # noqa: F401  (re-exported for attack modules)
from .._runtime import resolve_threads
from ..models import Model
from ..result import AttackResult

#: Elements (rows x features) per chunk: bounds every per-chunk temporary (gradients, random
#: starts, probabilities) to a few MiB regardless of N.
CHUNK_ELEMENTS = 1 << 21


def check_model(model, gpu=False) -> Model:
    if not isinstance(model, Model):
        raise TypeError(
            f"model: expected a fastfool model (ff.LinearModel, ff.MLP or ff.from_sklearn(est)), "
            f"got {type(model).__name__}")
    if model.device != "cpu" and not gpu:
        raise NotImplementedError(
            "model: this attack runs on the CPU only (fgsm and pgd run on the GPU); use "
            "model.to('cpu') with NumPy inputs")
    return model


def on_gpu(model) -> bool:
    return isinstance(model, Model) and model.device == "cuda"


def norm_of(norm) -> str:
    if norm in ("inf", np.inf, float("inf"), "linf", "Linf"):
        return "inf"
    if norm in (2, 2.0, "2", "l2", "L2"):
        return "2"
    raise ValueError(f"norm: expected 'inf' or 2, got {norm!r}")


def positive(value, name, *, allow_zero=True, allow_inf=False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a number, got {value!r}") from exc
    if np.isnan(v) or v < 0 or (v == 0 and not allow_zero) or (np.isinf(v) and not allow_inf):
        raise ValueError(f"{name}: must be {'>=' if allow_zero else '>'} 0"
                         f"{'' if allow_inf else ' and finite'}, got {value!r}")
    return v


def check_inside_clip(X, lo, hi):
    """Refuse inputs outside the clip box: the attack could not keep them and stay honest."""
    if lo is None and hi is None:
        return
    # the same bound for every column (clip=(0, 1), the usual case): one min / max reduction
    # (~0.1 ms for 20k x 64) instead of a boolean array per bound (~0.4 ms each)
    lo1 = lo is not None and lo.size and bool((lo == lo.flat[0]).all())
    hi1 = hi is not None and hi.size and bool((hi == hi.flat[0]).all())
    for s in row_chunks(X.shape[0], X.shape[1]):
        xc = X[s]
        if xc.size == 0:
            continue
        below = (xc.min() < lo.flat[0]) if lo1 else (lo is not None and np.any(xc < lo))
        above = (xc.max() > hi.flat[0]) if hi1 else (hi is not None and np.any(xc > hi))
        if below or above:
            raise ValueError("X: values lie outside clip=(lo, hi); clip the data first or widen "
                             "the range")


def row_chunks(N, D):
    rows = max(1, CHUNK_ELEMENTS // max(D, 1))
    return [slice(i, min(N, i + rows)) for i in range(0, N, rows)]


def prepare(model, X, y, threads):
    """Validated X (model dtype), attacked class indices (own predictions when y is None)."""
    model = check_model(model)
    threads = resolve_threads(threads)
    X = model._X(X, threads)
    if y is None:
        yi = predict_index(model, X, threads)
    else:
        yi = model._y(y, X.shape[0])
    return model, X, yi, threads


def predict_index(model, X, threads):
    """The user's model's decisions (class indices) on X: :func:`fastfool.verdict.decide`."""
    return verdict.decide(model, X, threads)


def resolve_target(model, target, X, yi, rng, threads):
    """Target class indices per row, or None for an untargeted attack.

    ``target``: None, a label of ``classes_``, an array of labels (one per row),
    ``"least_likely"`` (the model's least probable class) or ``"random"`` (uniform over the
    other classes, from ``seed``). Raises if every row's target is its own label.
    """
    if target is None:
        return None
    N, C = X.shape[0], model.n_classes
    if isinstance(target, str):
        if target == "least_likely":
            t = np.empty(N, dtype=np.int64)
            for s in row_chunks(N, X.shape[1]):
                t[s] = np.argmin(model._forward_soft(X[s], None, threads), axis=1)
        elif target == "random":
            t = rng.integers(0, C - 1, N)
            t = t + (t >= yi)
        elif target == "all":
            raise ValueError("target='all' is supported by fgsm, pgd and minimal")
        else:
            t = model._y(np.full(N, target, dtype=object) if N else np.array([], dtype=object), N)
    else:
        t = model._y(target, N)
    t = np.asarray(t, dtype=np.int64)
    if N and np.all(t == yi):
        raise ValueError("target: equals the attacked label on every row; nothing to attack")
    return t


class Progress:
    """A tqdm bar when asked for and installed; a plain stderr counter otherwise; or nothing."""

    def __init__(self, total, enabled, desc):
        self.bar = None
        self.enabled = enabled
        self.total, self.done, self.desc = total, 0, desc
        if enabled:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, desc=desc, unit="row")
            except ImportError:
                self.bar = None

    def update(self, n):
        if not self.enabled:
            return
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        else:
            sys.stderr.write(f"\r{self.desc}: {self.done}/{self.total} rows")
            sys.stderr.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            sys.stderr.write("\n")


def succeeded(pred, y, t=None):
    """The success rule every attack reports, on the user's model's decisions ``pred`` (class
    indices): untargeted, ``pred != y``; targeted, ``pred == t`` with ``t != y`` (a target that
    is the row's own label is never a success); without an attacked label, ``pred == t``."""
    if t is None:
        return pred != y
    if y is None:
        return pred == t
    return (pred == t) & (t != y)


def finish(model, X, x_adv, yi, ti, iterations, *, attack, params, t0, threads, queries=None,
           X_ref=None, min_confidence=None, extra=None, own_labels=False):
    """Measure the outcome on the returned x_adv and build the AttackResult.

    ``pred`` and ``success`` are the user's model's decisions on x_adv (fastfool.verdict): the
    float64 reference, the source estimator for rows within rounding of a tie. A targeted row
    succeeds when that decision is its target and the target is not the attacked label;
    ``correct`` says whether the model gave X its label ``y`` before the attack (all True,
    without another pass, when ``own_labels``: y was the model's own decisions)."""
    N = x_adv.shape[0]
    pred, _, conf = verdict.judge(model, x_adv, threads)
    conf = conf.astype(x_adv.dtype)
    l2 = np.empty(N, dtype=x_adv.dtype)
    linf = np.empty(N, dtype=x_adv.dtype)
    ref = X if X_ref is None else X_ref
    if ref is not None:
        for s in row_chunks(N, x_adv.shape[1]):
            l2[s], linf[s] = kernels.diff_norms(x_adv[s], ref[s], threads=threads)
    else:
        l2[:] = np.nan
        linf[:] = np.nan
    success = succeeded(pred, yi, ti)
    if min_confidence is not None:
        success &= conf >= min_confidence
    correct = None
    if X is not None and yi is not None:
        correct = np.ones(N, dtype=bool) if own_labels else \
            (lambda: verdict.decide(model, X, threads) == yi)
    cls = model.classes_
    return AttackResult(
        x_adv=x_adv, success=success, pred=cls[pred], confidence=conf, l2=l2, linf=linf,
        iterations=np.asarray(iterations, dtype=np.int64), queries=queries,
        y=None if yi is None else cls[yi], target=None if ti is None else cls[ti],
        _correct=correct, attack=attack, params=params, elapsed=time.perf_counter() - t0,
        extra=extra or {})


def for_all_targets(attack, model, X, y, kwargs):
    """Run ``attack`` from every row toward every other class: N x (C - 1) rows, ordered row by
    row; ``extra["row"]`` holds each result row's index into X."""
    model = check_model(model)
    threads = resolve_threads(kwargs.get("threads"))
    X = model._X(X, threads)
    yi = predict_index(model, X, threads) if y is None else model._y(y, X.shape[0])
    N, C = X.shape[0], model.n_classes
    rows = np.repeat(np.arange(N), C - 1)
    others = np.array([[c for c in range(C) if c != k] for k in range(C)], dtype=np.int64)
    t = others[yi].reshape(-1) if N else np.zeros(0, dtype=np.int64)
    kw = dict(kwargs)
    kw["target"] = model.classes_[t]
    res = attack(model, X[rows], model.classes_[yi[rows]], **kw)
    res.extra["row"] = rows
    res.attack = f"{res.attack} (all targets)"
    res.params["target"] = "all"
    return res


def restart_objective(model, x, y, t, threads):
    """(score to maximise, fooled?) per row: CE toward y (untargeted) or -CE toward t. Works on
    NumPy and CuPy arrays alike (the GPU attacks keep their restarts with it)."""
    L = model._forward_soft(x, "log_softmax", threads)
    pred = L.argmax(axis=1)
    r = (cuda.require() if cuda.is_device_array(L) else np).arange(x.shape[0])
    if t is None:
        return -L[r, y], pred != y
    return L[r, t], pred == t


def keep_better(best, x, score, ok):
    """The restart bookkeeping: per row, a fooled point beats an unfooled one, then the higher
    score wins. ``best`` is None or (x, score, ok); returns the updated triple (NumPy or CuPy)."""
    if best is None:
        return x, score, ok
    bx, bscore, bok = best
    xp = cuda.require() if cuda.is_device_array(x) else np
    better = (ok & ~bok) | ((ok == bok) & (score > bscore))
    return xp.where(better[:, None], x, bx), xp.where(better, score, bscore), ok | bok
