"""Plumbing shared by the attacks: argument checks, targets, row chunks, progress, results."""

from __future__ import annotations

import sys
import time

import numpy as np

from .. import _random, cuda, kernels, verdict
from .._backend import CPU
from .._checks import CheckedBounds, Trusted, clip_bounds, norm_name  # noqa: F401  (re-exported)
from .._runtime import resolve_threads
from ..models import Model
from ..result import AttackResult

#: Elements (rows x features) per chunk: bounds every per-chunk temporary (gradients, random
#: starts, probabilities) to a few MiB regardless of N (on a GPU: a few hundred MiB, so that
#: each launch has enough rows).
CHUNK_ELEMENTS = 1 << 21
GPU_CHUNK_ELEMENTS = 1 << 26

#: The attacks written for either device (the others refuse a GPU model in check_model).
GPU_ATTACKS = ("fgsm", "pgd", "apgd", "autoattack", "fab", "fmn", "ddn", "cw", "square",
               "hop_skip_jump", "deepfool", "universal", "score_attack")


def check_model(model, gpu=False) -> Model:
    """The one place an attack refuses what it cannot run: not a fastfool model, or a GPU model
    for an attack without GPU support (``gpu=False``)."""
    if not isinstance(model, Model):
        raise TypeError(
            f"model: expected a fastfool model (ff.LinearModel, ff.MLP or ff.from_sklearn(est)), "
            f"got {type(model).__name__}")
    if model.device != "cpu" and not gpu:
        raise NotImplementedError(
            f"model: this attack runs on the CPU only ({', '.join(GPU_ATTACKS)} run on the GPU); "
            "use model.to('cpu') with NumPy inputs")
    return model


#: the attacks' name for the one norm parser (fastfool._checks.norm_name)
norm_of = norm_name


def row_norms(d, p: str, xp=np):
    """Per-row norms of a float64 matrix: p "0" (the count of nonzero elements), "1", "2" or
    "inf" (0 for rows of no columns); ``xp`` the array module of d (NumPy or CuPy)."""
    if p == "0":
        return xp.count_nonzero(d, axis=1).astype(np.float64)
    if p == "inf":
        return xp.abs(d).max(axis=1) if d.shape[1] else xp.zeros(d.shape[0])
    if p == "1":
        return xp.abs(d).sum(axis=1)
    return xp.sqrt(xp.einsum("ij,ij->i", d, d))


def positive(value, name, *, allow_zero=True, allow_inf=False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a number, got {value!r}") from exc
    if np.isnan(v) or v < 0 or (v == 0 and not allow_zero) or (np.isinf(v) and not allow_inf):
        raise ValueError(f"{name}: must be {'>=' if allow_zero else '>'} 0"
                         f"{'' if allow_inf else ' and finite'}, got {value!r}")
    return v


def count(value, name, *, lo: int = 1, hi: int = 2**31 - 1) -> int:
    """An integer setting (steps, iterations, queries, sizes) in [lo, hi]: Python or NumPy
    integers, or floats with an integral value; bools, NaN, infinities and fractions are
    refused with an error naming the setting."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, (int, np.integer)):
        v = int(value)
    else:
        try:
            f = float(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}: expected an integer, got {value!r}") from exc
        if not np.isfinite(f) or f != int(f):
            raise ValueError(f"{name}: must be an integer in [{lo}, {hi}], got {value!r}")
        v = int(f)
    if not lo <= v <= hi:
        raise ValueError(f"{name}: must be an integer in [{lo}, {hi}], got {value!r}")
    return v


def check_inside_clip(X, lo, hi, be=CPU):
    """Refuse inputs outside the clip box: the attack could not keep them and stay honest."""
    if lo is None and hi is None:
        return
    # the same bound for every column (clip=(0, 1), the usual case): one min / max reduction
    # (~0.1 ms for 20k x 64) instead of a boolean array per bound (~0.4 ms each)
    lo0 = None if lo is None or not lo.size else lo.reshape(-1)[0]
    hi0 = None if hi is None or not hi.size else hi.reshape(-1)[0]
    lo1 = lo0 is not None and bool((lo == lo0).all())
    hi1 = hi0 is not None and bool((hi == hi0).all())
    for s in row_chunks(X.shape[0], X.shape[1], be):
        xc = X[s]
        if xc.size == 0:
            continue
        below = bool(xc.min() < lo0) if lo1 else (lo is not None and bool((xc < lo).any()))
        above = bool(xc.max() > hi0) if hi1 else (hi is not None and bool((xc > hi).any()))
        if below or above:
            raise ValueError("X: values lie outside clip=(lo, hi); clip the data first or widen "
                             "the range")


def bounds64(lo, hi, D, xp=np):
    """The clip bounds (of :func:`clip_bounds`, on their backend) as float64 (D,) vectors (None
    stays None): what the attacks' float64 arithmetic clips with."""
    return tuple(None if v is None else xp.broadcast_to(v.astype(np.float64), (D,))
                 for v in (lo, hi))


def row_chunks(N, D, be=CPU, weights=0):
    """Row slices covering N rows of D features: each chunk's temporaries hold at most
    CHUNK_ELEMENTS elements, or as many as the model's ``weights`` when that is more. A kernel
    call packs (and streams) the weights once: on a wide model (12288 -> 1000: 12.3M weights)
    170-row chunks made the fused FGSM step 1.13 s against 0.73-0.83 s over 1000-2000 rows."""
    elements = max(CHUNK_ELEMENTS if be is CPU else GPU_CHUNK_ELEMENTS, int(weights))
    rows = max(1, elements // max(D, 1))
    return [slice(i, min(N, i + rows)) for i in range(0, N, rows)]


def prepare(model, X, y, threads, gpu=False):
    """Validated X (model dtype, on the model's device), attacked class indices on the host
    (own predictions when y is None)."""
    model = check_model(model, gpu)
    threads = resolve_threads(threads)
    X = model._X(X, threads, out_cols=model.n_features_in_)
    if y is None:
        yi = predict_index(model, X, threads)
    else:
        yi = model._y(y, X.shape[0])
    return model, X, yi, threads


def predict_index(model, X, threads):
    """The user's model's decisions (class indices, on the host) on X (either device):
    :func:`fastfool.verdict.decide`, which decides on the host."""
    return verdict.decide(model, model._be.to_host(X), threads)


def on_device(model, labels):
    """Host class indices as checked indices on the model's device, made once before a step
    loop (kernels then skip the range check, and a GPU loop the copy, on every call)."""
    return Trusted(model._be.asarray(labels))


def resolve_target(model, target, X, yi, seed, threads, row_offset=0):
    """Target class indices per row, or None for an untargeted attack.

    ``target``: None, a label of ``classes_``, an array of labels (one per row),
    ``"least_likely"`` (the model's least probable class) or ``"random"`` (uniform over the
    other classes, drawn per row from (``seed``, the row's global index ``row_offset + i``):
    the same target for a row whatever the batch). Raises if every row's target is its own
    label.
    """
    if target is None:
        return None
    N, C = X.shape[0], model.n_classes
    if isinstance(target, str):
        if target == "least_likely":
            t = np.empty(N, dtype=np.int64)
            for s in row_chunks(N, X.shape[1], model._be):
                t[s] = model._be.to_host(model.scores(X[s], None, threads).argmin(axis=1))
        elif target == "random":
            t = _random.integers(_random.key(seed, "target"),
                                 _random.global_rows(row_offset, 0, N), max(C - 1, 1))
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


def label_targets(model, target, yi, N):
    """Target class indices (one label per row, or one for all) of the minimum-norm attacks, or
    None; refuses targets that equal the attacked label on every row."""
    if target is None:
        return None
    ti = model._y(target, N)  # (one label for all, NumPy or CuPy labels: _y takes them all)
    if N and np.all(ti == yi):
        raise ValueError("target: equals the attacked label on every row; nothing to attack")
    return ti


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


def on_grid(x, x0, q: float, *, eps: float = np.inf, norm: str = "inf", lo=None, hi=None,
            outward: bool = False) -> np.ndarray:
    """x moved onto x0's grid of step ``q`` (a new array of x's dtype): each element of the
    perturbation ``x - x0`` rounded to a multiple of q, to the nearest (half to even, as the
    fused kernels' ``quantum``) or, with ``outward``, away from x0; then kept inside the
    ``norm`` ball of radius ``eps`` as the kernels keep it (L-inf: an element rounded past eps
    moves one quantum back; L2 / L1: a row whose rounded perturbation is too long is truncated
    toward x0 instead), then clipped to ``[lo, hi]``. The result is on the grid when x0 and the
    clip bounds are. x must lie inside the ball (an element may pass eps by one quantum at
    most)."""
    x = np.asarray(x)
    dt = x.dtype
    qq = dt.type(q)
    r = (x - x0) / qq
    k = np.sign(r) * np.ceil(np.abs(r)) if outward else np.rint(r)
    d = k * qq
    if np.isfinite(eps) and d.size:
        if norm == "inf":
            d -= np.where(np.abs(d) > eps, np.sign(d) * qq, dt.type(0))
        else:
            long = row_norms(d.astype(np.float64), norm) > eps
            if long.any():
                d[long] = np.trunc(r[long]) * qq
    out = (x0 + d).astype(dt, copy=False)
    if lo is not None or hi is not None:
        np.clip(out, lo, hi, out=out)
    return out


#: Rows per batch when APGD-T and FAB-T run their targets side by side: past ~1000 the step's
#: temporaries outgrow the caches, below it the Python steps dominate (bench/RESULTS.md).
TARGET_PAIRS = 1024


def target_pairs(rows, n, k):
    """The (row, run) pairs of runs 0 .. k - 1 of ``rows`` (of n), row-major: (position of each
    of the n rows among ``rows`` (-1: none), each pair's row, its run, its group = position)."""
    pos = np.full(n, -1)
    pos[rows] = np.arange(rows.size)
    return pos, np.repeat(rows, k), np.tile(np.arange(k), rows.size), np.repeat(
        np.arange(rows.size), k)


def before_first_done(done, group, order):
    """The pairs still needed when runs of a group are tried in ``order`` and the sequence stops
    at the first done one: those at or before each group's first done run."""
    first = np.full(int(group.max(initial=-1)) + 1, int(order.max(initial=0)) + 1)
    np.minimum.at(first, group[done], order[done])
    return order <= first[group]


def confirm_outward(model, X, x_adv, yi, ti, threads, lo=None, hi=None,
                    factors=(1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)):
    """:func:`confirm_host` on arrays of the model's backend: on a GPU model X, x_adv and the
    bounds are copied to the host once and the result copied back."""
    be = model._be
    if be is CPU:
        return confirm_host(model, X, x_adv, yi, ti, threads, lo, hi, factors)
    host = [None if a is None else be.to_host(a) for a in (X, x_adv, lo, hi)]
    return be.asarray(confirm_host(model, host[0], host[1], yi, ti, threads, host[2], host[3],
                                   factors))


def confirm_host(model, X, x_adv, yi, ti, threads, lo=None, hi=None,
                 factors=(1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)):
    """The minimum-norm attacks' last step: their closest point per row was adversarial by the
    model's own-precision logits, which can sit on the boundary where the user's model (the
    float64 verdict) decides otherwise. Such rows are moved outward, ``X + (1 + f)(x - X)`` for
    the factors in turn (clipped to the box), and take the first point the user's model
    confirms; rows that were not adversarial at all (x = X) or that no factor confirms are left
    as they are. Returns x_adv (a new array where anything moved)."""
    from .. import verdict
    x_adv = np.asarray(x_adv)
    moved = np.flatnonzero(np.any(x_adv != X, axis=1)) if x_adv.size else np.zeros(0, int)
    if moved.size == 0:
        return x_adv
    t = None if ti is None else ti[moved]
    ok = succeeded(verdict.decide(model, x_adv[moved], threads), yi[moved], t)
    bad = moved[~ok]
    if bad.size == 0:
        return x_adv
    out = np.array(x_adv)
    x0 = np.asarray(X[bad], np.float64)
    d = np.asarray(x_adv[bad], np.float64) - x0
    for f in factors:
        if bad.size == 0:
            break
        cand = x0 + d * (1.0 + f)
        if lo is not None or hi is not None:
            cand = np.clip(cand, lo, hi)
        cand = cand.astype(x_adv.dtype)
        t = None if ti is None else ti[bad]
        hit = succeeded(verdict.decide(model, cand, threads), yi[bad], t)
        out[bad[hit]] = cand[hit]
        bad, x0, d = bad[~hit], x0[~hit], d[~hit]
    return out


class Grid:
    """``quantize=`` of the attacks that round at the end: step ``q`` (validated), the ball
    (``eps``, ``norm``; eps inf for the minimum-norm attacks) and the clip bounds (of the
    backend ``be``: on a GPU the rounding runs on host copies, once per result)."""

    def __init__(self, quantize, eps=np.inf, norm="inf", lo=None, hi=None, be=CPU):
        self.q = 0.0 if quantize is None else positive(quantize, "quantize", allow_zero=False)
        self.eps, self.norm, self.be = eps, norm, be
        self.lo = None if lo is None else be.to_host(lo)
        self.hi = None if hi is None else be.to_host(hi)

    def __bool__(self):
        return self.q > 0

    def snap(self, x_adv, X, fooled):
        """x_adv on X's grid: the nearest grid point of each row; a row that ``fooled(x, rows)``
        (a bool per row of the host array ``x``, rows its indices) rejects there takes the grid
        point rounded away from X instead when that one fools. Arrays of the grid's backend
        (the result is too)."""
        be = self.be
        x_adv, X = be.to_host(x_adv), be.to_host(X)
        kw = dict(eps=self.eps, norm=self.norm, lo=self.lo, hi=self.hi)
        xn = on_grid(x_adv, X, self.q, **kw)
        if xn.shape[0]:
            bad = np.flatnonzero(~np.asarray(fooled(xn, np.arange(xn.shape[0])), dtype=bool))
            if bad.size:
                xo = on_grid(x_adv[bad], X[bad], self.q, outward=True, **kw)
                ok = np.asarray(fooled(xo, bad), dtype=bool)
                xn[bad[ok]] = xo[ok]
        return xn if be is CPU else be.asarray(xn)


def finish(model, X, x_adv, yi, ti, iterations, *, attack, params, t0, threads, queries=None,
           X_ref=None, min_confidence=None, extra=None, own_labels=False, grid=None):
    """Measure the outcome on the returned x_adv and build the AttackResult.

    ``pred`` and ``success`` are the user's model's decisions on x_adv (fastfool.verdict): the
    float64 reference, the source estimator for rows within rounding of a tie. A targeted row
    succeeds when that decision is its target and the target is not the attacked label;
    ``correct`` says whether the model gave X its label ``y`` before the attack (all True,
    without another pass, when ``own_labels``: y was the model's own decisions). ``grid``: a
    :class:`Grid` (``quantize=``) that x_adv is snapped to before anything is measured."""
    if grid:
        x_adv = grid.snap(x_adv, X, lambda x, rows: succeeded(
            verdict.decide(model, x, threads), yi[rows], None if ti is None else ti[rows]))
    N = x_adv.shape[0]
    be = model._be
    l2 = np.empty(N, dtype=x_adv.dtype)
    linf = np.empty(N, dtype=x_adv.dtype)
    ref = X if X_ref is None else X_ref
    xinf = None  # max |x_adv| per row, from the norms' pass (the verdict's error bound needs it)
    if ref is not None:
        host = be is CPU
        if host:
            xinf = np.empty(N, dtype=x_adv.dtype)
        for s in row_chunks(N, x_adv.shape[1], be):
            out = kernels.diff_norms(x_adv[s], ref[s], threads=threads, return_max_abs=host)
            l2[s], linf[s] = be.to_host(out[0]), be.to_host(out[1])
            if host:
                xinf[s] = out[2]
    else:
        l2[:] = np.nan
        linf[:] = np.nan
    # verdicts on the host (x_adv of a GPU attack copied there once); x_adv stays where it is
    pred, _, conf = verdict.judge(model, be.to_host(x_adv), threads,
                                  xinf=None if xinf is None else xinf.astype(np.float64))
    conf = conf.astype(x_adv.dtype)
    success = succeeded(pred, yi, ti)
    if min_confidence is not None:
        success &= conf >= min_confidence
    correct = None
    if X is not None and yi is not None:
        correct = np.ones(N, dtype=bool) if own_labels else \
            (lambda: verdict.decide(model, be.to_host(X), threads) == yi)
    if be is not CPU:
        extra = {"device": f"cuda:{be.device}", **(extra or {})}
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
    model = check_model(model, gpu=attack.__name__ in GPU_ATTACKS)
    threads = resolve_threads(kwargs.get("threads"))
    X = model._X(X, threads, out_cols=model.n_features_in_ * max(model.n_classes - 1, 1))
    yi = predict_index(model, X, threads) if y is None else model._y(y, X.shape[0])
    N, C = X.shape[0], model.n_classes
    rows = np.repeat(np.arange(N), C - 1)
    others = np.array([[c for c in range(C) if c != k] for k in range(C)], dtype=np.int64)
    t = others[yi].reshape(-1) if N else np.zeros(0, dtype=np.int64)
    kw = dict(kwargs)
    kw["target"] = model.classes_[t]
    res = attack(model, X[model._be.asarray(rows)], model.classes_[yi[rows]], **kw)
    res.extra["row"] = rows
    res.attack = f"{res.attack} (all targets)"
    res.params["target"] = "all"
    return res


class DeviceQueries:
    """A GPU fastfool model as the host-side black-box searches (:func:`fastfool.hop_skip_jump`,
    :func:`fastfool.score_attack`) query it, on host arrays: ``predict_proba`` runs on the
    device (one copy each way per query batch); ``predict`` is the model's verdict, which a GPU
    model decides on the host anyway (:func:`fastfool.verdict.decide`, the float64 reference),
    so it is asked there directly."""

    def __init__(self, model):
        self.model, self.be = model, model._be
        self.classes_ = model.classes_

    def predict(self, x):
        return self.model.classes_[verdict.decide(self.model, np.ascontiguousarray(x),
                                                  resolve_threads(None))]

    def predict_proba(self, x):
        out = self.model.predict_proba(self.be.asarray(np.ascontiguousarray(x)))
        return np.asarray(self.be.to_host(out))


def host_queries(clf, X, clip, *labels):
    """(the classifier a host-side search queries, X on the host, the device backend or None,
    clip and the label arguments on the host): a GPU fastfool model becomes
    :class:`DeviceQueries` and its (validated) X a host copy; anything else passes through."""
    if not (isinstance(clf, Model) and clf.device != "cpu"):
        return (clf, X, None, clip, *labels)
    be = clf._be

    def host(v):
        return be.to_host(v) if v is not None and be.owns(v) else v
    Xh = be.to_host(clf._X(X, resolve_threads(None), out_cols=clf.n_features_in_))
    if isinstance(clip, (tuple, list)):
        clip = tuple(host(v) for v in clip)
    return (DeviceQueries(clf), Xh, be, clip, *(host(v) for v in labels))


def restart_objective(model, x, y, t, threads):
    """(score to maximise, fooled?) per row: CE toward y (untargeted) or -CE toward t. Works on
    NumPy and CuPy arrays alike (the GPU attacks keep their restarts with it)."""
    L = model.scores(x, "log_softmax", threads)
    pred = L.argmax(axis=1)
    r = model._be.xp.arange(x.shape[0])
    if t is None:
        return -L[r, y], pred != y
    return L[r, t], pred == t


def keep_better(best, x, score, ok):
    """The restart bookkeeping: per row, a fooled point beats an unfooled one, then the higher
    score wins. ``best`` is None or (x, score, ok); returns the updated triple (NumPy or CuPy)."""
    if best is None:
        return x, score, ok
    bx, bscore, bok = best
    xp = np if isinstance(x, np.ndarray) else cuda.require()
    better = (ok & ~bok) | ((ok == bok) & (score > bscore))
    return xp.where(better[:, None], x, bx), xp.where(better, score, bscore), ok | bok
