"""The attack suite: each attack is a function ``attack(model, X, y=None, ...)`` returning an
:class:`~fastfool.result.AttackResult`."""

from .gradient import fgsm, pgd
from .minimal import certify, deepfool, minimal

__all__ = ["fgsm", "pgd", "certify", "minimal", "deepfool"]
