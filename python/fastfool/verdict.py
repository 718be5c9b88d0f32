"""The one rule behind every verdict: what the user's own model decides.

An attack's ``success``, a result's ``pred`` and :meth:`fastfool.models.Model.predict` are the
decision of the model the user gave, on the inputs as returned (after clipping and
quantisation). That model is the float64 one: the weights as given (a float32 fastfool model
keeps the float64 originals beside its float32 copy) and, for ``from_sklearn`` models, the
estimator itself.

How a decision is made, per row:

1. The logits of the float64 reference are computed with fastfool's kernels, together with a
   bound ``err`` on their rounding error (standard forward error bounds for dot products,
   ``gamma_n = n u / (1 - n u)`` with ``u = 2**-53``, carried through the layers: every
   activation is 1-Lipschitz, logistic 1/4).
2. The row's class is the first argmax, scikit-learn's rule (binary: ``s > 0``). Its margin over
   the runner-up is *clear* when it exceeds ``4 err`` plus a few units of roundoff: then the
   exact model and any other float64 evaluation of it (scikit-learn's BLAS, libsvm, its
   softmax or sigmoid followed by argmax / ``> 0.5``) decide the same.
3. Rows without a clear margin are decided by the source estimator's own ``predict`` when there
   is one (``from_sklearn``), else by the float64 evaluation of step 1.

Attacks that can push a row further (DeepFool, the exact minimal perturbation, the template
attack) ask for a clear margin before they stop, so that their rows stay fooled whoever
evaluates the model.
"""

from __future__ import annotations

import numpy as np

from . import kernels

__all__ = ["U64", "gamma", "layer_error_bound", "clear", "decide", "judge", "reference_logits", "resolve"]

U64 = 2.0 ** -53
U32 = 2.0 ** -24
CHUNK_ELEMENTS = 1 << 21
#: Roundoff allowed beyond 4 err, in units of u, for the softmax / sigmoid evaluated after the
#: logits (``exp(s_j - max)`` rounds to 1 for differences below ~u): times ``1 + |s_max|``.
SLACK_ULPS = 64


def gamma(n: int, u: float = U64) -> float:
    """Higham's gamma_n = n u / (1 - n u) (n + 2 terms: products, sums, bias)."""
    nu = (n + 2) * u
    return nu / (1.0 - nu)


def layer_constants(Ws, bs):
    """Per layer (max column 1-norm of W, max |b|, fan-in), in float64."""
    out = []
    for W, b in zip(Ws, bs):
        W = np.asarray(W, dtype=np.float64)
        out.append((float(np.abs(W).sum(axis=0).max()) if W.size else 0.0,
                    float(np.abs(np.asarray(b, np.float64)).max()) if np.size(b) else 0.0,
                    W.shape[0]))
    return out


def layer_error_bound(xinf, consts, acts, u=U64, *, act_err=2, rounded_weights=False, e0=0.0):
    """Bound on |computed - exact| of every logit of a dense stack, per row.

    ``xinf``: (N,) max |x| per row (the input is exact). Per layer with ``w = max_j sum_i |W_ij|``,
    ``b = max |b|``, fan-in n: ``|z| <= w a + b``; ``err_z <= w err + gamma_n (w a + b)``; then
    the activation: identity / relu keep ``a = |z|`` and the error, tanh bounds ``a`` by 1 and
    adds ``act_err`` u of evaluation error, logistic bounds ``a`` by 1 and scales the error by
    1/4 (+ ``act_err`` u). ``u``: the unit roundoff of the evaluation bounded.
    ``rounded_weights``: the evaluation used the weights rounded to that precision (a float32
    model's copy of float64 weights): one more u per product and w up by 2u. ``e0``: an error
    the input already carries (per row or scalar), propagated with the rest."""
    a = np.asarray(xinf, dtype=np.float64)
    e = np.zeros_like(a) + e0
    for (w, b, n), act in zip(consts, acts):
        g = gamma(n + 1 if rounded_weights else n, u)
        if rounded_weights:
            w = w * (1 + 2 * u)
        mz = w * a + b
        e = w * e + g * mz
        if act in ("identity", "relu"):
            a = mz
        elif act == "tanh":
            a = np.minimum(mz, 1.0)
            e = e + act_err * u
        elif act == "logistic":
            a = np.ones_like(mz)
            e = 0.25 * e + act_err * u
        else:  # pragma: no cover - activations are checked at construction
            raise ValueError(act)
    return e


def reference_logits(model, X, threads):
    """(S (N, C) float64 logits of the reference model in the softmax view, err (N,))."""
    return model._reference_logits(np.asarray(X, dtype=np.float64), threads)


def threshold(S, err, u=U64, top=None):
    """The margin (N,) a row's decision must exceed over the runner-up to be clear."""
    if top is None:
        top = S.max(axis=1) if S.shape[1] else np.zeros(S.shape[0])
    return 4 * err + SLACK_ULPS * u * (1.0 + np.abs(top))


def duplicate_groups(W_out, b_out):
    """Per output class, the first class with the same logit weights and bias (a tie that every
    evaluation resolves the same way, to the first index), or None when there are none."""
    key = np.vstack([np.asarray(W_out, np.float64), np.asarray(b_out, np.float64)[None, :]]).T
    _, first, inv = np.unique(key, axis=0, return_index=True, return_inverse=True)
    if len(first) == key.shape[0]:
        return None
    return first[inv.reshape(-1)]


def clear(S, err, u=U64, dup=None):
    """(first argmax per row, whether its margin over the runner-up is clear of rounding).
    ``dup`` (from :func:`duplicate_groups`): classes identical to the winner are no rivals."""
    N, C = S.shape
    if N == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    if C < 2:
        return kernels.argmax_rows(S)[0], np.ones(N, dtype=bool)
    # one pass: the first argmax, its score and the best rival's (NaN-propagating), in float64
    pred, top, second = kernels.top2_rows(S, dup)
    with np.errstate(invalid="ignore"):
        ok = (top - second) > threshold(S, err, u, top)
    return pred, ok & np.isfinite(top)


def judge(model, X, threads, *, return_logits=False, want_conf=True, xinf=None):
    """(class indices, clear margin?, reference probability of that class) per row of X.

    The class is the user's model's decision (the rule in the module docstring); rows without a
    clear margin were decided by the source estimator, or by float64 when there is none. A
    float32 model first screens all rows with its own logits and their (float32) error bound:
    rows clear there are decided; only the others are evaluated in float64, by chunks. With
    ``return_logits`` every row is evaluated in float64 and the float64 reference logits (N, C)
    and the threshold (N,) a margin must exceed to be clear are returned too. ``xinf``: the
    rows' max |x| (float64) when the caller has it (an attack's finish computes it with the
    perturbation norms, in the same pass)."""
    vote = getattr(model._reference(), "_vote_judge", None)
    if vote is not None:  # one-vs-one votes (multi-class kernel SVMs): their own rule
        return vote(X, threads, return_logits=return_logits, want_conf=want_conf)
    N, C = X.shape[0], model.n_classes
    u, dup = model._source_u, model._duplicates()
    screen = None if return_logits or N == 0 else model._screen_logits(X, threads, xinf)
    if screen is not None:  # one call over all rows: a wide model streams its weights once
        S_all, e32, xinf = screen
        pred, ok = clear(S_all, e32, u, dup)
        todo = np.flatnonzero(~ok)
    else:
        S_all = np.empty((N, C))
        pred = np.empty(N, dtype=np.int64)
        ok = np.zeros(N, dtype=bool)
        todo = np.arange(N)
    if return_logits:
        thr = np.empty(N)
    rows = max(1, CHUNK_ELEMENTS // max(X.shape[1], 1))
    for i in range(0, todo.size, rows):  # bounded memory: a float64 copy of a chunk at a time
        idx = todo[i:i + rows]
        Xt = X[i:i + rows] if screen is None else X[idx]
        part = None if screen is None else model._candidate_logits(Xt, S_all[idx], e32[idx],
                                                                   xinf[idx], threads)
        if part is not None:  # float64 logits for the classes that can still win only
            S, err, S_conf = part
        else:
            S, err = model._reference_logits(np.asarray(Xt, dtype=np.float64), threads,
                                             None if xinf is None else xinf[idx])
            S_conf = S
        pred[idx], ok[idx] = clear(S, err, u, dup)
        S_all[idx] = S_conf
        if return_logits:
            thr[idx] = threshold(S, err, u)
    conf = _softmax_at(S_all, pred, threads) if want_conf and N else np.zeros(N)
    ask_source(model, X, pred, ok)
    return (pred, ok, conf, S_all, thr) if return_logits else (pred, ok, conf)


def _softmax_at(S, p, threads):
    """softmax(S)[r, p[r]] per row (float64), one pass (kernels.softmax_at); rows with an
    infinite or NaN score take the softmax epilogue's IEEE conventions (an identity product)."""
    n, C = S.shape
    conf = kernels.softmax_at(S, p, threads=threads)
    bad = np.flatnonzero(np.isnan(conf))
    if bad.size:
        P = kernels.scores(S[bad], np.eye(C), epilogue="softmax", threads=threads)
        conf[bad] = P[np.arange(bad.size), p[bad]]
    return conf


def resolve(model, X, S, err):
    """Class indices from float64 reference logits ``S`` and their bound ``err`` that a caller
    already has (``reference_logits``): the first argmax where clear, the source estimator's
    decision elsewhere; the same rule as :func:`judge` without another forward pass."""
    pred, ok = clear(S, err, model._source_u, model._duplicates())
    ask_source(model, X, pred, ok)
    return pred


def decide(model, X, threads, *, return_clear=False):
    """Class indices the user's model gives X (see :func:`judge`); with ``return_clear``
    also whether each row's float64 margin was clear of rounding."""
    pred, ok, _ = judge(model, X, threads, want_conf=False)
    return (pred, ok) if return_clear else pred


def ask_source(model, X, pred, ok):
    """Rows not clear (``~ok``) take the source estimator's decision, in place."""
    src = getattr(model, "_source", None)
    if src is not None and not ok.all():
        rows = np.flatnonzero(~ok)
        # the rows as returned (their dtype too: an estimator fitted on float32 data computes
        # in float32 on float32 inputs, in float64 on float64 ones), and all of them: a BLAS
        # product rounds a row differently depending on the rows around it (its blocking), so
        # scikit-learn's predict of a row on the tie can differ between X[rows] and X (seen:
        # LogisticRegression, 3 classes, a boundary point decided 1 alone and 2 among 24 rows);
        # the user checks est.predict(x_adv), so that is the call made
        pred[rows] = model.class_index(np.asarray(src.predict(X)))[rows]
