"""Model files: a documented, versioned ``.npz`` format that loads without pickle.

Layout (format version 1):

- ``format``: the string ``"fastfool.model"``; ``version``: 1 (int);
- ``kind``: ``"linear"``, ``"mlp"`` or ``"kernel_svm"``; ``dtype``: ``"float32"`` or ``"float64"``;
- ``classes``: the labels (numbers or strings);
- linear: ``W`` (C, D), ``b`` (C,);
- mlp: ``n_layers`` L, ``W0..W{L-1}`` (in, out), ``b0..b{L-1}``, ``activations`` (L-1 names);
- kernel_svm: ``support_vectors``, ``dual_coef``, ``intercept``, ``kernel``, ``gamma``,
  ``coef0``, ``degree``.

The weights written are those of the model's float64 reference (:mod:`fastfool.verdict`): a
float32 model converted from float64 weights is saved with the float64 originals and loads as
the same float32 model with the same verdicts. The source estimator of a ``from_sklearn``
model is not saved (no pickle): a loaded model decides rows within rounding of a tie by its
float64 evaluation alone.

:func:`load_model` reads with ``allow_pickle=False`` and validates every field (through the model
constructors: shapes, finite weights, known activations); anything else raises ``ValueError``
naming the file and the field.
"""

from __future__ import annotations

import os

import numpy as np

from ._files import check_npz, decode_labels, encode_labels, save_npz
from .models import MLP, KernelSVM, LinearModel, Model

__all__ = ["save_model", "load_model", "FORMAT_VERSION"]

FORMAT_VERSION = 1


def save_model(model: Model, path: str | os.PathLike) -> None:
    """Write a fastfool model to ``path`` (``.npz``, no pickle); a GPU model is written from its
    CPU copy. The write is atomic: if it fails (disk full, Ctrl-C), a previous file at ``path``
    is left as it was."""
    if not isinstance(model, Model):
        raise TypeError(f"model: expected a fastfool model (ff.LinearModel, ff.MLP, ff.KernelSVM "
                        f"or ff.from_sklearn(est)), got {type(model).__name__}")
    if getattr(model, "device", "cpu") != "cpu":
        model = model.to("cpu")
    dtype = model.dtype
    if isinstance(model, Model):
        model = model._reference()  # the float64 originals: the same verdicts after loading
    classes, as_object = encode_labels(model.classes_, "classes")
    fields = {"format": np.array("fastfool.model"), "version": np.array(FORMAT_VERSION),
              "dtype": np.array(str(dtype)), "classes": classes,
              "classes_object": np.array(as_object)}
    if isinstance(model, KernelSVM):
        fields.update(kind=np.array("kernel_svm"), support_vectors=model.support_vectors_,
                      dual_coef=model.dual_coef_, intercept=np.array(model.intercept_),
                      kernel=np.array(model.kernel), gamma=np.array(model.gamma),
                      coef0=np.array(model.coef0), degree=np.array(model.degree))
    elif isinstance(model, LinearModel):
        fields.update(kind=np.array("linear"), W=model.coef_, b=model.intercept_)
    elif isinstance(model, MLP):
        fields.update(kind=np.array("mlp"), n_layers=np.array(model.n_layers),
                      activations=np.array(model.activations, dtype=str))
        for i, (W, b) in enumerate(zip(model.coefs_, model.intercepts_)):
            fields[f"W{i}"], fields[f"b{i}"] = W, b
    else:
        raise TypeError(f"model: cannot save a {type(model).__name__}")
    save_npz(path, fields)


def load_model(path: str | os.PathLike) -> Model:
    """Read a model written by :func:`save_model`; raises ``ValueError`` for malformed files
    (``FileNotFoundError`` when there is none)."""
    try:
        fh = open(path, "rb")  # our own handle: np.load leaks its own on an unreadable zip
    except IsADirectoryError as exc:
        raise ValueError(f"{path}: is a directory, not a model file") from exc
    with fh:
        return _load_model(fh, path)


def _load_model(src, path) -> Model:
    check_npz(src, path)
    try:
        f = np.load(src, allow_pickle=False)
    except ValueError as exc:  # object arrays (pickled) or not an npz
        raise ValueError(f"{path}: not a fastfool model file ({exc})") from exc
    except Exception as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
    if not hasattr(f, "files"):
        raise ValueError(f"{path}: not a fastfool model file (a single array, not an .npz)")
    with f:

        def get(name, kind=None):
            if name not in f.files:
                raise ValueError(f"{path}: missing field {name!r}")
            try:
                a = f[name]
            except ValueError as exc:
                raise ValueError(f"{path}: field {name!r} cannot be read without pickle") from exc
            if kind == "str":
                if a.ndim != 0 or a.dtype.kind != "U":
                    raise ValueError(f"{path}: field {name!r} must be a string")
                return str(a)
            if kind == "int":
                if a.ndim != 0 or a.dtype.kind not in "iu":
                    raise ValueError(f"{path}: field {name!r} must be an integer")
                return int(a)
            if kind == "float":
                if a.ndim != 0 or a.dtype.kind not in "fiu":
                    raise ValueError(f"{path}: field {name!r} must be a number")
                return float(a)
            if kind == "labels":  # classes_: numbers, bools or strings
                if a.ndim != 1 or a.dtype.kind not in "biufU":
                    raise ValueError(f"{path}: field {name!r} must be a list of labels")
                return a
            if a.dtype.kind not in "fiuU" and kind != "any":
                raise ValueError(f"{path}: field {name!r} has unsupported dtype {a.dtype}")
            return a

        if get("format", "str") != "fastfool.model":
            raise ValueError(f"{path}: not a fastfool model file (format field)")
        version = get("version", "int")
        if version < 1 or version > FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported model format version {version} "
                             f"(this fastfool reads up to {FORMAT_VERSION})")
        dtype = get("dtype", "str")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"{path}: field 'dtype' must be float32 or float64, got {dtype!r}")
        classes = get("classes", "labels")
        if "classes_object" in f.files:
            flag = f["classes_object"]
            if flag.ndim != 0 or flag.dtype.kind != "b":
                raise ValueError(f"{path}: field 'classes_object' must be a bool")
            classes = decode_labels(classes, bool(flag))
        kind = get("kind", "str")
        try:
            if kind == "linear":
                return LinearModel(get("W"), get("b"), classes=classes, dtype=dtype)
            if kind == "mlp":
                n = get("n_layers", "int")
                if not 1 <= n <= 1000:
                    raise ValueError(f"field 'n_layers' out of range: {n}")
                acts = get("activations")
                if acts.dtype.kind != "U" or acts.ndim != 1:
                    raise ValueError("field 'activations' must be a list of names")
                return MLP([get(f"W{i}") for i in range(n)], [get(f"b{i}") for i in range(n)],
                           activation=[str(a) for a in acts], classes=classes, dtype=dtype)
            if kind == "kernel_svm":
                return KernelSVM(get("support_vectors"), get("dual_coef"), get("intercept", "float"),
                                 kernel=get("kernel", "str"), gamma=get("gamma", "float"),
                                 coef0=get("coef0", "float"), degree=get("degree", "int"),
                                 classes=classes, dtype=dtype)
        except (TypeError, ValueError) as exc:
            if str(exc).startswith(str(path)):
                raise
            raise ValueError(f"{path}: {exc}") from exc
        raise ValueError(f"{path}: unknown model kind {kind!r}")
