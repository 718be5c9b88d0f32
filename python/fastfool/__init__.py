"""fastfool: find inputs that fool linear models and small neural networks, fast.

Hand-written C++ kernels (AVX2/FMA chosen at run time, a small thread pool, GIL released) for
batched scoring, softmax cross-entropy input gradients, MLP back-propagation, pseudo-inverse
back-projection and the fused attack update, under a NumPy-first API.

>>> import fastfool as ff
>>> m = ff.from_sklearn(estimator)           # or ff.LinearModel(W, b) / ff.MLP(weights, biases)
>>> g = m.loss_gradient(X, y)                # d cross-entropy / d X
"""

from __future__ import annotations

try:
    from . import _core  # noqa: F401
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "fastfool's compiled module fastfool._core could not be imported "
        f"({exc}). Reinstall with `pip install .` from a source checkout (a C++ compiler and "
        "CMake are needed), and do not import fastfool from inside its source tree's python/ "
        "folder without building it."
    ) from exc

from . import cuda, datasets, kernels
from .certify import Certificate, Verification, verify
from .audit import Audit, audit
from .attacks import (ConfidenceMap, certify, confidence_map, deepfool, far_points, fgsm, invert,
                      minimal, pgd, robustness_curve, score_attack, template, transfer, apgd,
                      autoattack, cw, ddn, fab, fmn, hop_skip_jump, square,
                      universal)
from .io import load_model, save_model
from .result import AttackResult
from ._runtime import get_simd, get_threads, set_simd, set_threads, simd_info
from .models import MLP, KernelSVM, LinearModel, Model, from_onnx, from_sklearn, from_torch

__version__ = "0.1.0"

__all__ = [
    "cuda",
    "LinearModel",
    "MLP",
    "Model",
    "KernelSVM",
    "from_sklearn",
    "from_torch",
    "from_onnx",
    "save_model",
    "load_model",
    "kernels",
    "datasets",
    "AttackResult",
    "fgsm",
    "pgd",
    "apgd",
    "autoattack",
    "fmn",
    "fab",
    "ddn",
    "cw",
    "hop_skip_jump",
    "square",
    "universal",
    "certify",
    "audit",
    "Audit",
    "verify",
    "Certificate",
    "Verification",
    "minimal",
    "deepfool",
    "template",
    "invert",
    "far_points",
    "confidence_map",
    "ConfidenceMap",
    "score_attack",
    "transfer",
    "robustness_curve",
    "get_simd",
    "set_simd",
    "simd_info",
    "get_threads",
    "set_threads",
    "__version__",
]
