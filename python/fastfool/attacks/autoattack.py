"""AutoAttack (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"): attacks run in a fixed order, each on the rows
that are still robust after the previous ones; a row's result is the first adversarial example
found for it, and the robust accuracy is the fraction of rows none of the attacks fooled.

The stages here (``attacks=`` names):

- ``"apgd-ce"``: :func:`fastfool.apgd`, cross-entropy, 100 steps, from X (one run);
- ``"apgd-t"``: APGD-T, the targeted DLR loss toward each of the 9 most likely other classes
  (fewer when the model has fewer), 100 steps each;
- ``"apgd-dlr"``: untargeted DLR, 100 steps;
- ``"fab-t"``: :func:`fastfool.fab` targeted at each of the 9 most likely other classes
  (FAB-T), 100 steps each; a row counts as fooled when the point found lies within ``eps``;
- ``"square"``: :func:`fastfool.square`, 5000 queries (L-inf or L2).

``version="standard"`` is the paper's ensemble APGD-CE, APGD-T, FAB-T, Square.

Beyond the paper (``skip_certified``, on by default): after the first stage, the rows still
robust are bounded with CROWN at ``eps`` (:func:`fastfool.certify.proven_robust`, for MLPs),
and the rows it proves robust skip the later stages. A proven row cannot be fooled by any
attack (the bound is sound for the user's model, rounding included), so every row's result is
the one the full ensemble gives; only the time the later stages would spend failing on those
rows is saved (on the digits MLPs at eps 0.05: 238 / 450 robust tanh rows, 450 / 473 relu).
``version="rand"`` (for randomised defences) is APGD-CE then APGD-DLR; fastfool's
models are deterministic, so the expectation over transformations the paper adds (EOT) would
average identical gradients and is left out. ``version="custom"`` runs ``attacks`` as given.
"""

from __future__ import annotations

import time

import numpy as np

from .._dask import dask_aware
from .. import verdict
from .._typing import ArrayLike, Clip, Labels, Norm
from .._backend import CPU
from ..models import Model
from ..certify import proven_robust
from ._common import (Grid, Progress, check_inside_clip, clip_bounds, count, finish, norm_of,
                      positive, prepare, succeeded)
from .apgd import apgd
from .fab import fab
from .square import square

__all__ = ["autoattack", "STAGES"]

#: The stage names autoattack accepts, in the standard order.
STAGES = ("apgd-ce", "apgd-t", "apgd-dlr", "fab-t", "square")
_VERSIONS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "rand": ("apgd-ce", "apgd-dlr")}


def _stage(name, model, X, y, eps, nrm, clip, quantize, seed, threads, steps, n_targets,
           queries, image_shape, channels_last):
    kw = dict(clip=clip, quantize=quantize, seed=seed, threads=threads)
    if name == "apgd-ce":
        return apgd(model, X, y, eps=eps, norm=nrm, loss="ce", steps=steps, **kw)
    if name == "apgd-dlr":
        return apgd(model, X, y, eps=eps, norm=nrm, loss="dlr", steps=steps, **kw)
    if name == "apgd-t":
        loss = "dlr" if model.n_classes >= 4 else "ce"
        return apgd(model, X, y, eps=eps, norm=nrm, loss=loss, target=n_targets, steps=steps,
                    **kw)
    if name == "fab-t":
        return fab(model, X, y, norm=nrm, steps=steps, n_targets=n_targets, eps=eps, **kw)
    return square(model, X, y, eps=eps, norm=nrm, max_queries=queries,
                  image_shape=image_shape, channels_last=channels_last, **kw)


def _within(x_adv, X, eps, nrm, be=CPU):
    """Rows (host bools) whose perturbation, measured in float64 on the returned points (arrays
    of the backend ``be``), is at most eps."""
    xp = be.xp
    d = x_adv.astype(np.float64) - X.astype(np.float64)
    if not d.shape[1]:
        return np.ones(d.shape[0], dtype=bool)
    n = xp.abs(d).max(axis=1) if nrm == "inf" else xp.sqrt(xp.einsum("ij,ij->i", d, d))
    return be.to_host(n <= eps)


@dask_aware
def autoattack(model: Model, X: ArrayLike, y: Labels = None, *, eps: float, norm: Norm = "inf",
               version: str = "standard", attacks=None, steps: int = 100, n_targets: int = 9,
               square_queries: int = 5000, image_shape=None, channels_last: bool = True,
               clip: Clip = None, quantize: float | None = None, seed: int = 0,
               skip_certified: bool = True, threads: int | None = None,
               progress: bool = False):
    """AutoAttack (Croce & Hein 2020): APGD-CE, APGD-T, FAB-T and Square in the standard order,
    each on the rows still robust.

    Parameters
    ----------
    eps : the radius. norm : "inf" (default) or 2.
    version : "standard" (default), "rand" (APGD-CE, APGD-DLR) or "custom" (``attacks``).
    attacks : the stage names for "custom" (from ``STAGES``), run in the given order.
    steps : APGD and FAB iterations per run (default 100). n_targets : APGD-T's and FAB-T's
        target classes (default 9). square_queries : Square's budget per row (default 5000).
    image_shape, channels_last : the layout Square's windows use (:func:`fastfool.square`).
    clip : optional (lo, hi) box. seed : every stage's random draws (default 0).
    quantize : grid step (e.g. ``1/255``; default None): every stage's points are moved onto
        X's grid inside the ball and the box before the model judges them (see
        :func:`fastfool.apgd`), so a row counts as fooled only by a point on the grid.
    skip_certified : after the first stage, bound the rows still robust with CROWN at ``eps``
        (:func:`fastfool.certify.proven_robust`: one sound bound per row, for MLPs and
        pipelines folded into one, on the CPU) and run the later stages only on the rows it cannot prove
        (default True). A proven row cannot be fooled by any attack, so the robust accuracy and
        every other row's result are the same as without it; it only saves the time the later
        stages would spend failing on those rows (``extra["certified"]`` marks them,
        ``extra["certify_seconds"]`` the bound's cost). False: every stage attacks every row
        still robust, as in the paper.

    Returns one AttackResult: per row the first adversarial example any stage found (else X),
    ``success`` / ``pred`` the user's model's decisions on it, ``iterations`` the gradient steps
    plus the queries spent on the row, ``queries`` the model evaluations; ``extra`` holds the
    per-stage table (``stage_names``, ``stage_robust_accuracy`` after each stage,
    ``stage_seconds``, ``stage_queries``), ``clean_accuracy``, per row ``stage`` (the index
    of the stage that fooled it, -1 for none; rows the model already got wrong: -2) and
    ``certified`` (proven robust, see ``skip_certified``), and ``summary()`` includes the table
    and the count of certified rows.
    """
    t0 = time.perf_counter()
    model, X, yi, threads = prepare(model, X, y, threads, gpu=True)
    be = model._be
    xp, dev = be.xp, be.asarray
    eps = positive(eps, "eps", allow_zero=False)
    nrm = norm_of(norm)
    if nrm not in ("inf", "2"):
        raise ValueError(f"norm: autoattack supports 'inf' and 2, got {norm!r}")
    if version in _VERSIONS:
        if attacks is not None:
            raise ValueError(f"attacks: only with version='custom' (version is {version!r})")
        names = list(_VERSIONS[version])
    elif version == "custom":
        if attacks is None or isinstance(attacks, str) or len(attacks) == 0:
            raise ValueError("attacks: version='custom' needs a non-empty list of stage names "
                             f"from {STAGES}")
        names = list(attacks)
        bad = [a for a in names if a not in STAGES]
        if bad:
            raise ValueError(f"attacks: unknown stage(s) {bad}; expected names from {STAGES}")
    else:
        raise ValueError(f"version: expected 'standard', 'rand' or 'custom', got {version!r}")
    steps = count(steps, "steps")
    n_targets = count(n_targets, "n_targets")
    square_queries = count(square_queries, "square_queries")
    lo, hi = clip_bounds(clip, X.shape[1], X.dtype, be)
    check_inside_clip(X, lo, hi, be)
    grid = Grid(quantize, eps, nrm, lo, hi, be)
    N = X.shape[0]
    x_adv = xp.array(X)
    robust = verdict.decide(model, be.to_host(X), threads) == yi
    clean_acc = float(robust.mean()) if N else float("nan")
    stage_of = np.where(robust, -1, -2).astype(np.int64)
    iterations = np.zeros(N, dtype=np.int64)
    queries = np.zeros(N, dtype=np.int64)
    table_acc, table_s, table_q = [], [], []
    certified = np.zeros(N, dtype=bool)
    cert_s = 0.0
    bar = Progress(len(names), progress, "autoattack")
    for k, name in enumerate(names):
        if k == 1 and skip_certified and robust.any():  # the rows no later stage can fool
            tc = time.perf_counter()
            left = np.flatnonzero(robust)
            # the bound runs on the CPU: a GPU model's host copy (the same weights)
            hclip = None if clip is None else (grid.lo, grid.hi)  # (Grid's host copies)
            proven = proven_robust(model if be is CPU else model.to("cpu"),
                                   be.to_host(X[dev(left)]), yi[left], eps, nrm, hclip, threads)
            if proven is not None:
                certified[left[proven]] = True
            cert_s = time.perf_counter() - tc
        ts = time.perf_counter()
        rows = np.flatnonzero(robust & ~certified)
        spent = 0
        if rows.size:
            Xr = X[dev(rows)]
            res = _stage(name, model, Xr, yi[rows], eps, nrm, clip, quantize, seed, threads,
                         steps, n_targets, square_queries, image_shape, channels_last)
            q = res.queries if res.queries is not None else res.iterations
            queries[rows] += q
            iterations[rows] += res.iterations
            spent = int(q.sum())
            xs, ok = res.x_adv, res.success
            if grid:  # FAB-T's points may lie outside the ball: on the grid inside it
                yr = yi[rows]
                xs = grid.snap(xs, Xr, lambda v, r: succeeded(
                    verdict.decide(model, v, threads), yr[r]))
                ok = succeeded(verdict.decide(model, be.to_host(xs), threads), yr)
            if name == "fab-t":  # a minimum-norm attack: fooled only within the radius
                ok = ok & _within(xs, Xr, eps, nrm, be)
                if not grid:
                    ok &= res.extra["distance"] <= eps
            hit = rows[ok]
            x_adv[dev(hit)] = xs[dev(ok)]
            robust[hit] = False
            stage_of[hit] = k
        table_acc.append(float(robust.mean()) if N else float("nan"))
        table_s.append(time.perf_counter() - ts)
        table_q.append(spent)
        bar.update(1)
    bar.close()
    params = dict(eps=eps, norm=nrm, version=version, attacks=names, steps=steps,
                  n_targets=n_targets, square_queries=square_queries, clip=clip,
                  quantize=quantize, seed=seed, skip_certified=skip_certified)
    extra = {"stage": stage_of, "stage_names": np.array(names), "certified": certified,
             "certify_seconds": np.array(cert_s),
             "stage_robust_accuracy": np.array(table_acc), "stage_seconds": np.array(table_s),
             "stage_queries": np.array(table_q, dtype=np.int64),
             "clean_accuracy": np.array(clean_acc)}
    return finish(model, X, x_adv, yi, None, iterations, attack="autoattack", t0=t0,
                  threads=threads, queries=queries, own_labels=y is None, params=params,
                  extra=extra)
