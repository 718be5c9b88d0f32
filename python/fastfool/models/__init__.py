"""fastfool's models: the protocol every attack uses (:mod:`.base`), stacks of affine layers
(:mod:`.dense`: ``LinearModel``, ``MLP``), binary kernel SVMs (:mod:`.svm`) and the conversion of
scikit-learn estimators (:mod:`.convert`: ``from_sklearn``; pipelines folded by :mod:`.pipeline`)
and of PyTorch dense networks (:mod:`.torch_model`: ``from_torch``) and ONNX dense graphs
(:mod:`.onnx_model`: ``from_onnx``)."""

from .base import DEFAULT_MARGIN, Model
from .dense import MLP, DenseModel, LinearModel
from .svm import KernelSVM
from .convert import from_sklearn
from .torch_model import from_torch
from .onnx_model import from_onnx

__all__ = ["Model", "DenseModel", "LinearModel", "MLP", "KernelSVM", "from_sklearn", "from_torch",
           "from_onnx", "DEFAULT_MARGIN"]
