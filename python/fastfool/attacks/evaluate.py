"""Evaluation helpers: transferability between models and accuracy versus epsilon."""

from __future__ import annotations

import numpy as np

from .._checks import matrix
from ._common import check_model

__all__ = ["transfer", "robustness_curve"]


def _predict(clf, X):
    return np.asarray(clf.predict(X))


def transfer(attack, source, targets, X, y, **attack_kw):
    """Craft adversarial examples on ``source`` and measure how often they fool each model.

    Parameters
    ----------
    attack : an attack function (e.g. ``ff.pgd``) called as ``attack(source, X, y, **attack_kw)``.
    source : the fastfool model to craft on.
    targets : dict name -> classifier (fastfool models or anything with ``predict``); the
        source itself is usually included to show the white-box rate.
    X, y : inputs and true labels.

    Returns
    -------
    (result, rates): the source AttackResult, and a dict name -> fooling rate (fraction of the
    rows that the model classifies correctly on X and incorrectly on ``x_adv``).
    """
    check_model(source)
    res = attack(source, X, y, **attack_kw)
    y = np.asarray(y)
    rates = {}
    for name, clf in targets.items():
        clean = _predict(clf, X) == y
        adv = _predict(clf, res.x_adv) != y
        rates[name] = float(np.mean(adv[clean])) if clean.any() else float("nan")
    return res, rates


def robustness_curve(model, X, y, eps_values, *, attack=None, **attack_kw):
    """Accuracy under attack for each epsilon of ``eps_values`` (ascending).

    ``attack`` defaults to ``ff.pgd``; every epsilon runs the attack on the rows that were still
    classified correctly at the previous (smaller) epsilon only, which gives the same accuracy
    for attacks whose success is monotone in epsilon and saves the work on rows already lost.
    For affine models and ``attack="exact"`` the curve comes from the exact radii of
    :func:`fastfool.certify` instead (no attack runs).

    Returns
    -------
    dict with ``eps`` (the grid) and ``accuracy`` (fraction of all rows still correct).
    """
    from .gradient import pgd
    from .minimal import certify

    check_model(model)
    eps_values = np.asarray(eps_values, dtype=np.float64)
    if eps_values.ndim != 1 or np.any(np.diff(eps_values) < 0) or np.any(eps_values < 0):
        raise ValueError("eps_values: expected an ascending 1-D sequence of values >= 0")
    X = matrix(X, "X")
    y = np.asarray(y)
    correct = model.predict(X) == y
    N = len(y)
    if attack == "exact":
        radius, _ = certify(model, X, norm=attack_kw.get("norm", 2))
        acc = [float(np.mean(correct & (radius > e))) for e in eps_values]
        return {"eps": eps_values, "accuracy": np.asarray(acc)}
    attack = pgd if attack is None else attack
    alive = correct.copy()
    acc = []
    for e in eps_values:
        idx = np.flatnonzero(alive)
        if idx.size and e > 0:
            res = attack(model, X[idx], y[idx], eps=float(e), **attack_kw)
            alive[idx[res.success]] = False
        acc.append(float(alive.sum()) / N if N else float("nan"))
    return {"eps": eps_values, "accuracy": np.asarray(acc)}
