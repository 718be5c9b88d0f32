"""Evaluation helpers: transferability between models and accuracy versus epsilon."""

from __future__ import annotations

import numpy as np

from .._runtime import resolve_threads
from .._typing import ArrayLike, Norm
from ..models import Model
from ..result import AttackResult
from ._common import check_model

__all__ = ["transfer", "robustness_curve"]


def _predict(clf, X):
    return np.asarray(clf.predict(X))


def transfer(attack, source: Model, targets: dict, X: ArrayLike, y: ArrayLike,
             **attack_kw) -> tuple[AttackResult, dict[str, float]]:
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
    (result, rates): the source AttackResult, and a dict name -> fooled rate (fraction of the
    rows that the model classifies correctly on X and incorrectly on ``x_adv``: the same
    definition as :attr:`AttackResult.fooled_rate`; ``result.success_rate`` counts every row).
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


def robustness_curve(model: Model, X: ArrayLike, y: ArrayLike, eps_values: ArrayLike, *,
                     norm: Norm = "inf", attack=None, **attack_kw) -> dict:
    """Accuracy under attack for each epsilon of ``eps_values`` (ascending).

    ``attack`` (called as ``attack(model, X, y, eps=e, norm=norm, **attack_kw)``) defaults to
    ``ff.pgd``, in the norm ``norm`` (L-inf by default); every epsilon runs
    the attack on the rows that were still classified correctly at the previous (smaller)
    epsilon only, which gives the same accuracy for attacks whose success is monotone in
    epsilon and saves the work on rows already lost. ``attack="exact"`` (affine models) takes
    the curve from the certified radii of :func:`fastfool.certify` in the same ``norm``
    instead (no attack runs): accuracy at eps is the fraction of rows classified correctly
    whose radius exceeds eps.

    ``y`` must hold labels of ``model.classes_`` (the check every attack uses); ``eps_values``
    must be finite, >= 0 and ascending.

    Returns
    -------
    dict with ``eps`` (the grid), ``accuracy`` (fraction of all rows still correct) and
    ``norm``.
    """
    from .gradient import pgd
    from .minimal import certify_affine as certify
    from ._common import norm_of

    check_model(model)
    nrm = norm_of(norm)
    try:
        eps_values = np.asarray(eps_values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"eps_values: expected numbers, got {eps_values!r}") from exc
    if eps_values.ndim != 1:
        raise ValueError(f"eps_values: expected a 1-D sequence, got shape {eps_values.shape}")
    if not np.all(np.isfinite(eps_values)):
        raise ValueError("eps_values: contains NaN or infinity")
    if np.any(np.diff(eps_values) < 0) or np.any(eps_values < 0):
        raise ValueError("eps_values: expected an ascending 1-D sequence of values >= 0")
    X = model._X(X, resolve_threads(None))
    yi = model._y(y, X.shape[0])  # refuses labels that are not classes (no silent accuracy 0)
    labels = model.classes_[yi]
    correct = model.predict(X) == labels
    N = X.shape[0]
    if attack == "exact":
        radius, _ = certify(model, X, norm=nrm)
        acc = [float(np.mean(correct & (radius > e))) if N else float("nan") for e in eps_values]
        return {"eps": eps_values, "accuracy": np.asarray(acc), "norm": nrm}
    attack = pgd if attack is None else attack
    alive = correct.copy()
    acc = []
    for e in eps_values:
        idx = np.flatnonzero(alive)
        if idx.size and e > 0:
            res = attack(model, X[idx], labels[idx], eps=float(e), norm=nrm, **attack_kw)
            alive[idx[res.success]] = False
        acc.append(float(alive.sum()) / N if N else float("nan"))
    return {"eps": eps_values, "accuracy": np.asarray(acc), "norm": nrm}
