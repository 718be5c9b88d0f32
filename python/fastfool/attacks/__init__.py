"""The attack suite: each attack is a function ``attack(model, X, y=None, ...)`` returning an
:class:`~fastfool.result.AttackResult`."""

from .apgd import apgd
from .autoattack import autoattack
from .blackbox import score_attack
from .evaluate import robustness_curve, transfer
from .cw import cw
from .ddn import ddn
from .fab import fab
from .fmn import fmn
from .gradient import fgsm, pgd
from .hsj import hop_skip_jump
from .inversion import ConfidenceMap, confidence_map, far_points, invert
from ..certify import certify
from .minimal import deepfool, minimal
from .square import square
from .template import template
from .universal import universal

__all__ = ["fgsm", "pgd", "apgd", "autoattack", "fmn", "fab", "ddn", "cw", "certify", "minimal", "deepfool", "template",
           "invert", "far_points", "confidence_map", "ConfidenceMap", "score_attack", "square",
           "transfer", "robustness_curve", "hop_skip_jump", "universal"]
