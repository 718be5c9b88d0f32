"""fastfool's models: the protocol every attack uses (:mod:`.base`), stacks of affine layers
(:mod:`.dense`: ``LinearModel``, ``MLP``), binary kernel SVMs (:mod:`.svm`) and the conversion of
scikit-learn estimators (:mod:`.convert`: ``from_sklearn``)."""

from .base import DEFAULT_MARGIN, Model
from .dense import MLP, DenseModel, LinearModel
from .svm import KernelSVM
from .convert import from_sklearn

__all__ = ["Model", "DenseModel", "LinearModel", "MLP", "KernelSVM", "from_sklearn", "DEFAULT_MARGIN"]
