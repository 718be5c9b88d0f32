"""Attacks that run a network backwards or go far from the data ("I Pity the fool", 2017).

- :func:`invert`: codes chosen in a hidden layer (or the logits) are back-projected to inputs
  through the Moore-Penrose pseudo-inverse of every layer; optionally the input nearest to a
  natural one. The outcome is measured on the model: a back-projected input counts only if the
  model really classifies it as the codes' class.
- :func:`far_points`: for each class, points far from the data (>= k times its radius) that
  the model labels with probability >= p: searched along rays in input space or in a hidden
  layer (then back-projected).
- :func:`confidence_map`: class and max probability over a dense 2-D grid (an input plane of a
  2-feature model, or a 2-unit hidden layer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .. import kernels
from ..models import DEFAULT_MARGIN, Model
from .._checks import matrix
from .._runtime import resolve_threads
from .._typing import ArrayLike
from ..result import AttackResult
from ..models import DenseModel
from ._common import check_model, count, finish, positive


def _dense(model, what):
    """Hidden layers and back-projection exist for stacks of affine layers only."""
    if not isinstance(model, DenseModel):
        raise TypeError(f"model: {what} needs a stack of affine layers (ff.LinearModel, ff.MLP), "
                        f"got {type(model).__name__}")
    return model

__all__ = ["invert", "far_points", "confidence_map", "ConfidenceMap", "codes_to_logits"]


def codes_to_logits(model: Model, H, layer, threads=None):
    """Logits (softmax view) of codes H at ``layer`` (hidden index or ``"logits"``)."""
    threads = resolve_threads(threads)
    top = model.layer_index(layer)
    Ws, bs, acts = model.layers()
    H = matrix(H, "H", model.dtype, cast=True)
    if top == model.n_layers - 1:
        if model.binary and H.shape[1] == 1:
            return np.hstack([np.zeros_like(H), H])
        return H
    return kernels.mlp_forward(H, Ws[top + 1:], bs[top + 1:], acts[top + 1:], threads=threads)


def invert(model: Model, H: ArrayLike, layer: int | str = -1, x0: ArrayLike | None = None, *,
           margin: float = DEFAULT_MARGIN, threads: int | None = None) -> AttackResult:
    """The pseudo-inverse attack: inputs that carry the codes H at ``layer``.

    Parameters
    ----------
    model : a fastfool model (MLP; a LinearModel accepts ``layer="logits"``).
    H : (N, width) codes at ``layer`` (e.g. far inside a class region of a 2-unit layer).
    layer : hidden-layer index (``-1`` the last) or ``"logits"``.
    x0 : optional (N, D) natural inputs: returns the input nearest to each (L2) that carries the
        code (every layer below ``layer`` must be affine), and norms are measured against x0.
    margin : clamping margin of inverse tanh/logistic (see ``ff.models.DEFAULT_MARGIN``).

    Returns
    -------
    AttackResult: ``target`` is the class the codes lie in (argmax of the logits they imply),
    ``success`` says per row whether the model really classifies the back-projected input so
    (clamping and rank deficiency can break it), ``extra["code_error"]`` is
    ``||hidden(x_adv) - H||`` per row and ``extra["clamped"]`` the number of clamped values.
    """
    t0 = time.perf_counter()
    model = _dense(check_model(model), "invert")
    threads = resolve_threads(threads)
    x, clamped = model.backproject(H, layer, x0, margin=margin, threads=threads, return_clamped=True)
    H = matrix(np.asarray(H).reshape(len(x), -1) if np.ndim(H) == 1 else H, "H", model.dtype, cast=True)
    intended = np.argmax(codes_to_logits(model, H, layer, threads), axis=1)
    top = model.layer_index(layer)
    if top == model.n_layers - 1:
        back = model.decision_function(x, threads=threads, check_finite=False)
        back = back.reshape(len(x), -1)
    else:
        back = model.hidden(x, layer, threads=threads, check_finite=False)
    code_error = np.linalg.norm(back - H, axis=1)
    X_ref = None if x0 is None else model._X(x0, threads, name="x0")
    return finish(model, None, x, None, intended, np.zeros(len(x)), attack="invert", t0=t0,
                  threads=threads, X_ref=X_ref,
                  params=dict(layer=layer, margin=margin, x0=x0 is not None),
                  extra=dict(code_error=code_error, clamped=np.full(len(x), clamped)))


def _rays(dim, n_random, rng, extra_dirs=()):
    U = rng.standard_normal((n_random, dim))
    if len(extra_dirs):
        U = np.vstack([np.asarray(extra_dirs, dtype=np.float64).reshape(-1, dim), U])
    n = np.linalg.norm(U, axis=1, keepdims=True)
    return U / np.where(n > 0, n, 1)


def far_points(model: Model, X: ArrayLike, *, p: float = 0.99, k: float = 10.0,
               layer: int | None = None, n_per_class: int = 1, n_directions: int = 512,
               max_doublings: int = 20, seed: int = 0, threads: int | None = None) -> AttackResult:
    """High-confidence points far from the data, one set per class.

    The data's centre mu and radius R = max ||x - mu|| are taken from X (or from its codes at
    ``layer``). Along random rays mu + t u (plus the rays toward each class's mean), t starting
    at ``k * R`` and doubling up to ``max_doublings`` times, the first point the model labels
    with probability >= p is kept; per class the ``n_per_class`` closest such points win. With
    ``layer`` the search runs in that hidden layer and the codes are back-projected
    (:func:`invert`), and success is judged on the back-projected inputs.

    Returns
    -------
    AttackResult over (classes x n_per_class) rows: ``target`` the class sought, ``success``
    when the model gives it probability >= p, ``extra["distance"]`` the distance from mu in the
    searched space in units of R (>= k, except in a tanh/logistic layer whose bounded range
    caps it) and ``extra["found"]`` whether the search found one.
    """
    t0 = time.perf_counter()
    model = check_model(model)
    if layer is not None:
        _dense(model, "far_points(layer=...)")
    threads = resolve_threads(threads)
    p = positive(p, "p")
    if not 0 < p < 1:
        raise ValueError(f"p: must be in (0, 1), got {p}")
    k = positive(k, "k", allow_zero=False)
    n_per_class = count(n_per_class, "n_per_class")
    n_directions = count(n_directions, "n_directions")
    max_doublings = count(max_doublings, "max_doublings", lo=0, hi=1000)
    rng = np.random.default_rng(seed)
    X = model._X(X, threads, out_cols=model.n_features_in_)
    if X.shape[0] == 0:
        raise ValueError("X: need data to measure its radius")
    space = X if layer is None else model.hidden(X, layer, threads=threads)
    space = np.asarray(space, np.float64)
    mu = space.mean(axis=0)
    R = float(np.max(np.linalg.norm(space - mu, axis=1)))
    if R == 0:
        R = 1.0
    C = model.n_classes
    yi = np.argmax(model.scores(X, None, threads), axis=1)
    class_dirs = [space[yi == c].mean(axis=0) - mu for c in range(C) if np.any(yi == c)]
    # Codes of a tanh / logistic layer live in a bounded range: keep candidates inside it (by the
    # back-projection margin), so "far" means the range's corners and the distances say so.
    bound = None
    if layer is not None:
        act = model.layers()[2][model.layer_index(layer)]
        if act == "tanh":
            bound = (-1 + DEFAULT_MARGIN, 1 - DEFAULT_MARGIN)
        elif act == "logistic":
            bound = (DEFAULT_MARGIN, 1 - DEFAULT_MARGIN)
    U = _rays(space.shape[1], n_directions, rng, class_dirs)

    def probs(Z):
        Z = np.asarray(Z, dtype=model.dtype)
        L = model.scores(Z, None, threads) if layer is None else codes_to_logits(model, Z, layer, threads)
        L = np.asarray(L, np.float64)
        L -= L.max(axis=1, keepdims=True)
        P = np.exp(L)
        return P / P.sum(axis=1, keepdims=True)

    best = {c: [] for c in range(C)}  # class -> list of (t, point)
    t = np.full(len(U), k * R)
    pending = np.ones(len(U), dtype=bool)
    for _ in range(max_doublings + 1):
        idx = np.flatnonzero(pending)
        if idx.size == 0:
            break
        Z = mu + t[idx, None] * U[idx]
        if bound is not None:
            Z = np.clip(Z, *bound)
        P = probs(Z)
        cls = np.argmax(P, axis=1)
        hit = P[np.arange(idx.size), cls] >= p
        for i in np.flatnonzero(hit):
            best[int(cls[i])].append((float(np.linalg.norm(Z[i] - mu) / R), Z[i]))
        pending[idx[hit]] = False
        t[idx] *= 2
    rows, targets, dist, found = [], [], [], []
    for c in range(C):
        cand = sorted(best[c], key=lambda e: e[0])[:n_per_class]
        for j in range(n_per_class):
            if j < len(cand):
                rows.append(cand[j][1])
                dist.append(cand[j][0])
                found.append(True)
            else:  # nothing found: report the ray toward the class's data, as far as searched
                z = mu + k * R * U[min(c, len(class_dirs) - 1)]
                if bound is not None:
                    z = np.clip(z, *bound)
                rows.append(z)
                dist.append(float(np.linalg.norm(z - mu) / R))
                found.append(False)
            targets.append(c)
    Z = np.asarray(rows, dtype=np.float64).reshape(len(rows), space.shape[1])
    ti = np.asarray(targets, dtype=np.int64)
    if layer is None:
        x = np.ascontiguousarray(Z, dtype=model.dtype)
    else:
        x = model.backproject(Z.astype(model.dtype), layer, threads=threads)
    return finish(model, None, x, None, ti, np.zeros(len(x)), attack="far_points", t0=t0,
                  threads=threads, min_confidence=p,
                  params=dict(p=p, k=k, layer=layer, n_per_class=n_per_class,
                              n_directions=n_directions, seed=seed, radius=R),
                  extra=dict(distance=np.asarray(dist), found=np.asarray(found)))


@dataclass
class ConfidenceMap:
    """Predicted class and its probability over a 2-D grid (``label[i, j]`` at ``(xs[j], ys[i])``)."""

    xs: np.ndarray
    ys: np.ndarray
    label: np.ndarray
    confidence: np.ndarray
    layer: object = None

    @property
    def extent(self):
        return (float(self.xs[0]), float(self.xs[-1]), float(self.ys[0]), float(self.ys[-1]))


def confidence_map(model: Model, xlim: tuple[float, float], ylim: tuple[float, float], *,
                   resolution: int = 1000, layer: int | None = None,
                   threads: int | None = None) -> ConfidenceMap:
    """Class and max probability over a ``resolution x resolution`` grid (default 1 M points),
    scored in row chunks through the batched kernels.

    ``layer=None`` maps the input plane of a 2-feature model; ``layer`` (hidden index) maps the
    plane of a 2-unit hidden layer, forwarding the grid codes through the layers above it.
    """
    model = check_model(model)
    threads = resolve_threads(threads)
    res = int(resolution)
    if res < 2:
        raise ValueError(f"resolution: must be >= 2, got {resolution!r}")
    (x0, x1), (y0, y1) = xlim, ylim
    for name, (a, b) in (("xlim", (x0, x1)), ("ylim", (y0, y1))):
        if not (np.isfinite(a) and np.isfinite(b) and a < b):
            raise ValueError(f"{name}: expected finite (lo, hi) with lo < hi, got {(a, b)}")
    if layer is None:
        if model.n_features_in_ != 2:
            raise ValueError(f"confidence_map: the model has {model.n_features_in_} features; "
                             "pass layer= for a 2-unit hidden layer")
    else:
        width = _dense(model, "confidence_map(layer=...)").layer_width(layer)
        if width != 2:
            raise ValueError(f"confidence_map: layer {layer!r} has {width} units, not 2")
    xs = np.linspace(x0, x1, res)
    ys = np.linspace(y0, y1, res)
    label = np.empty((res, res), dtype=np.int64)
    conf = np.empty((res, res), dtype=model.dtype)
    rows_per = max(1, (1 << 18) // res)
    for r0 in range(0, res, rows_per):
        r1 = min(res, r0 + rows_per)
        gx, gy = np.meshgrid(xs, ys[r0:r1])
        G = np.column_stack([gx.ravel(), gy.ravel()]).astype(model.dtype)
        if layer is None:
            P = model.scores(G, "softmax", threads)
        else:
            L = codes_to_logits(model, G, layer, threads)
            P = kernels.scores(L, np.eye(L.shape[1], dtype=L.dtype), epilogue="softmax", threads=threads)
        label[r0:r1] = np.argmax(P, axis=1).reshape(r1 - r0, res)
        conf[r0:r1] = P.max(axis=1).reshape(r1 - r0, res)
    return ConfidenceMap(xs, ys, model.classes_[label], conf, layer)
