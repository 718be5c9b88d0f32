"""The attack suite: each attack is a function ``attack(model, X, y=None, ...)`` returning an
:class:`~fastfool.result.AttackResult`."""

from .gradient import fgsm, pgd

__all__ = ["fgsm", "pgd"]
