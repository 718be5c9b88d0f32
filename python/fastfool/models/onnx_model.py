"""ONNX dense graphs in: :func:`from_onnx`.

The graph is read with the ``onnx`` package (no runtime is needed to attack): from its one
input, a chain of

- affine preprocessing before the first layer: ``Scaler`` (ai.onnx.ml, as skl2onnx emits for
  scikit-learn's scalers), ``Sub`` / ``Add`` / ``Mul`` / ``Div`` by a constant vector,
  ``Flatten`` (axis 1), ``Cast``, ``Identity``, ``Dropout``;
- dense layers: ``Gemm`` (alpha = beta = 1, transA = 0), ``MatMul`` followed by ``Add`` of a
  bias, ``Relu`` / ``Tanh`` / ``Sigmoid``;
- and the end: ``Softmax`` / ``LogSoftmax`` (their argmax is the logits'), ``LinearClassifier``
  (ai.onnx.ml), or the graph's output itself (a torch export's logits); the label branch
  skl2onnx adds (ArgMax, ArrayFeatureExtractor, ZipMap, Normalizer of the probabilities) is
  read for the class labels only.

The preprocessing folds into the first layer exactly as a scikit-learn pipeline's does
(:mod:`fastfool.models.pipeline`). When ``onnxruntime`` is installed the session is the judge
(rows within rounding of a tie are run through it, in the graph's precision); without it the
graph's decisions are its float64 evaluation.
"""

from __future__ import annotations

import os

import numpy as np
from numpy.typing import DTypeLike

from .. import verdict
from .base import Model
from .pipeline import Affine, _recip

__all__ = ["from_onnx"]

_ACT = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "logistic"}
_PASS = ("Identity", "Dropout", "Cast")
_LABEL_BRANCH = ("ArgMax", "ArrayFeatureExtractor", "ZipMap", "Normalizer", "Reshape", "Shape",
                 "Concat", "Sub", "Cast", "Identity", "Gather", "Unsqueeze", "Squeeze")
SUPPORTED = ("Gemm, MatMul + Add, Relu, Tanh, Sigmoid, Softmax, LogSoftmax, Identity, Dropout, "
             "Cast, Flatten, Scaler, LinearClassifier, and Sub / Add / Mul / Div by constants "
             "before the first layer")


class OnnxSource:
    """The onnxruntime session as the verdict's judge: ``predict(X)`` runs the graph on rows
    (cast to its input type, reshaped to its input shape) and returns the labels it outputs
    (a ``label`` output), or the argmax of the decision output."""

    def __init__(self, proto, input_name, input_shape, in_dtype, label_output, score_output,
                 classes, binary_threshold):
        import onnxruntime as ort
        self._sess = ort.InferenceSession(proto.SerializeToString(),
                                          providers=["CPUExecutionProvider"])
        self._input, self._shape, self._dtype = input_name, tuple(input_shape), in_dtype
        self._label, self._score = label_output, score_output
        self.classes_ = np.asarray(classes)
        self._thr = binary_threshold

    def predict(self, X):
        x = np.ascontiguousarray(X, dtype=self._dtype).reshape((len(X),) + self._shape)
        if self._label is not None:
            return np.asarray(self._sess.run([self._label], {self._input: x})[0]).reshape(-1)
        out = np.asarray(self._sess.run([self._score], {self._input: x})[0]).reshape(len(X), -1)
        if out.shape[1] == 1:
            return self.classes_[(out[:, 0] > self._thr).astype(np.int64)]
        return self.classes_[np.argmax(out, axis=1)]


def _attr(node, name, default=None):
    import onnx
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _load(model):
    import onnx
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    if isinstance(model, (str, os.PathLike)):
        if not os.path.exists(model):
            raise FileNotFoundError(f"from_onnx: no such file {os.fspath(model)!r}")
        return onnx.load(os.fspath(model))
    raise TypeError(f"from_onnx: expected a path, bytes or an onnx.ModelProto, got "
                    f"{type(model).__name__}")


def from_onnx(model, *, dtype: DTypeLike = None, classes=None) -> Model:
    """Convert a dense ONNX classifier (a path, bytes or an ``onnx.ModelProto``) to a fastfool
    model: a skl2onnx export of a scikit-learn linear model / MLPClassifier / pipeline of
    scalers, or a ``torch.onnx`` export of an ``nn.Sequential`` (the ops in the module
    docstring).

    Parameters
    ----------
    dtype : the fastfool model's dtype; default the graph's input type (float32 or float64).
    classes : labels of the outputs; default the graph's own (LinearClassifier's class labels,
        the label branch's class array), else ``arange(C)``.

    Verdicts: the graph's decisions (onnxruntime's on rows within rounding of a tie, when it is
    installed: ``pip install ".[onnx]"``).
    """
    try:
        import onnx  # noqa: F401
        from onnx import numpy_helper
    except ImportError:  # pragma: no cover - optional dependency
        raise ImportError("from_onnx needs the onnx package: pip install onnx (or "
                          "fastfool[onnx])") from None
    proto = _load(model)
    g = proto.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            v = _attr(n, "value")
            if v is not None:
                consts[n.output[0]] = numpy_helper.to_array(v)
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise ValueError(f"from_onnx: the graph has {len(inputs)} inputs; expected one")
    inp = inputs[0]
    elem = inp.type.tensor_type.elem_type
    if elem not in (1, 11):
        raise TypeError(f"from_onnx: the input {inp.name!r} has ONNX element type {elem}; "
                        "expected float (1) or double (11)")
    in_dtype = np.float32 if elem == 1 else np.float64
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in inp.type.tensor_type.shape.dim]
    consumers: dict = {}
    for n in g.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    outputs = {o.name for o in g.output}

    items: list = []  # ("aff", Affine), ("lin", W (in, out), b), ("act", name), in order
    want_bias = False  # a MatMul waiting for its Add
    cur = inp.name
    width = None  # features of the current tensor
    input_shape = tuple(d for d in dims[1:])
    if input_shape and all(isinstance(d, int) and d > 0 for d in input_shape):
        width = int(np.prod(input_shape))
    end = None  # the tensor whose argmax decides
    lc_classes = None

    def const_vec(name, n):
        v = np.asarray(consts[name], np.float64).reshape(-1)
        if v.size == 1:
            v = np.full(n, float(v[0]))
        if v.shape != (n,):
            raise ValueError(f"from_onnx: constant {name!r} of shape {consts[name].shape} does not "
                             f"broadcast over {n} features")
        return v

    def chain_consumers(name):
        return [n for n in consumers.get(name, []) if n.op_type not in ("ArgMax", "ZipMap",
                                                                          "ArrayFeatureExtractor",
                                                                          "Shape")]

    def last_lin_out():
        lins = [it for it in items if it[0] == "lin"]
        return lins[-1][1].shape[1] if lins else None

    while True:
        nxt = chain_consumers(cur)
        if not nxt:
            end = cur
            break
        if len(nxt) > 1:
            if items and items[-1] == ("act", "logistic") and last_lin_out() == 1:
                end = cur  # skl2onnx's binary MLP: [1 - p, p] assembled from the sigmoid
                break
            raise ValueError(f"from_onnx: the tensor {cur!r} feeds {len(nxt)} nodes "
                             f"({', '.join(n.op_type for n in nxt)}): not a chain of layers")
        n = nxt[0]
        op = n.op_type
        others = [x for x in n.input if x != cur and x]
        if op in _PASS:
            if op == "Cast" and _attr(n, "to") not in (1, 11):
                raise ValueError(f"from_onnx: Cast to ONNX type {_attr(n, 'to')} in the chain")
        elif op == "Flatten":
            if items:
                raise ValueError("from_onnx: Flatten after the first operation is not supported")
            if _attr(n, "axis", 1) != 1:
                raise ValueError("from_onnx: only Flatten(axis=1) is supported")
        elif op == "Scaler":
            if width is None:
                raise ValueError("from_onnx: the input's feature count is not static")
            items.append(("aff", Affine(f"Scaler {n.name!r}", const_vec_attr(n, "offset", width),
                                        const_vec_attr(n, "scale", width), None, 0.0)))
        elif op == "Add" and want_bias and len(others) == 1 and others[0] in consts:
            _, W, b = items[-1]
            items[-1] = ("lin", W, b + const_vec(others[0], W.shape[1]))
        elif op in ("Sub", "Add", "Mul", "Div") and len(others) == 1 and others[0] in consts and \
                n.input[0] == cur:
            if width is None:
                raise ValueError("from_onnx: the input's feature count is not static")
            v = const_vec(others[0], width)
            if op == "Sub":
                aff = Affine(f"Sub {n.name!r}", v, np.ones(width))
            elif op == "Add":
                aff = Affine(f"Add {n.name!r}", None, np.ones(width), v)
            elif op == "Mul":
                aff = Affine(f"Mul {n.name!r}", None, v)
            else:
                A, err = _recip(v)
                aff = Affine(f"Div {n.name!r}", None, A, None, err)
            items.append(("aff", aff))
        elif op in ("Gemm", "MatMul"):
            if n.input[0] != cur or n.input[1] not in consts:
                raise ValueError(f"from_onnx: {op} {n.name!r} must multiply the chain by a "
                                 "constant weight matrix")
            W = np.asarray(consts[n.input[1]], np.float64)
            if op == "Gemm":
                if _attr(n, "transA", 0) or _attr(n, "alpha", 1.0) != 1.0 or \
                        _attr(n, "beta", 1.0) != 1.0:
                    raise ValueError(f"from_onnx: Gemm {n.name!r} with transA / alpha / beta other "
                                     "than 0 / 1 / 1 is not supported")
                if _attr(n, "transB", 0):
                    W = W.T
            if W.ndim != 2:
                raise ValueError(f"from_onnx: {op} {n.name!r} weights of shape {W.shape}")
            if width is not None and W.shape[0] != width:
                raise ValueError(f"from_onnx: {op} {n.name!r} takes {W.shape[0]} features, the "
                                 f"chain gives {width}")
            b = np.zeros(W.shape[1])
            if op == "Gemm" and len(n.input) > 2 and n.input[2]:
                b = np.broadcast_to(np.asarray(consts[n.input[2]], np.float64).reshape(-1),
                                    (W.shape[1],)).copy()
            items.append(("lin", W, b))
            want_bias = op == "MatMul"
            width = W.shape[1]
            cur = n.output[0]
            continue
        elif op in _ACT:
            items.append(("act", _ACT[op]))
        elif op in ("Softmax", "LogSoftmax"):
            if _attr(n, "axis", -1) not in (-1, 1):
                raise ValueError(f"from_onnx: {op} over axis {_attr(n, 'axis')} is not over the "
                                 "classes")
            end = cur
            break
        elif op == "LinearClassifier":
            coef = np.asarray(_attr(n, "coefficients"), np.float64)
            ints = np.asarray(_attr(n, "intercepts", []), np.float64)
            C = ints.size if ints.size else coef.size // (width or 1)
            if width is None or coef.size != C * width:
                raise ValueError("from_onnx: LinearClassifier coefficients do not match the input")
            W = coef.reshape(C, width)
            if ints.size == 0:
                ints = np.zeros(C)
            if C == 2 and np.array_equal(W[0], -W[1]) and ints[0] == -ints[1]:
                W, ints = W[1:], ints[1:]  # skl2onnx's binary [-s, s]: one score s
            items.append(("lin", W.T.copy(), ints))
            labels = _attr(n, "classlabels_ints") or _attr(n, "classlabels_strings")
            if labels:
                lc_classes = np.asarray([x.decode() if isinstance(x, bytes) else x for x in labels])
            end = None
            break
        else:
            raise ValueError(f"from_onnx: unsupported operation {op} (node {n.name!r}); "
                             f"supported: {SUPPORTED}")
        cur = n.output[0]
        want_bias = want_bias and op in _PASS
    pre, Ws, bs, acts, final_sigmoid = _layers(items)
    C = Ws[-1].shape[1]
    if classes is None:
        classes = lc_classes
    if classes is None:  # the label branch's class array (skl2onnx: ArrayFeatureExtractor)
        for n in g.node:
            if n.op_type == "ArrayFeatureExtractor" and n.input[0] in consts:
                classes = np.asarray(consts[n.input[0]]).reshape(-1)
                break
    if classes is not None:
        classes = np.asarray([c.decode() if isinstance(c, bytes) else c for c in classes]) \
            if np.asarray(classes).dtype.kind in "OS" else np.asarray(classes)
    dt = np.dtype(in_dtype) if dtype is None else dtype
    from .convert import dense_with_fold
    D = pre[0].d_in if pre else Ws[0].shape[0]
    u = verdict.U32 if in_dtype == np.float32 else verdict.U64  # the graph's arithmetic
    m = dense_with_fold(pre, Ws, bs, acts, classes, dt, D, u_src=u, u_pre=u)
    src = None
    try:
        import onnxruntime  # noqa: F401
        label = "label" if "label" in outputs else None
        score = end if end in outputs else None
        if label is not None or score is not None:
            src = OnnxSource(proto, inp.name, input_shape or (D,), in_dtype, label, score,
                             m.classes_, 0.5 if final_sigmoid else 0.0)
    except ImportError:
        src = None
    for r in (m, m._ref64):
        if r is not None:
            r._source, r._source_u, r._source_act_err = src, u, 8
    return m


def const_vec_attr(node, name, n):
    v = np.asarray(_attr(node, name, [0.0 if name == "offset" else 1.0]), np.float64).reshape(-1)
    if v.size == 1:
        v = np.full(n, float(v[0]))
    if v.shape != (n,):
        raise ValueError(f"from_onnx: Scaler {name} of {v.size} values for {n} features")
    return v


def _layers(items):
    """(preprocessing chain, Ws, bs, hidden acts, final sigmoid?) from the chain's items:
    everything before the last linear op that precedes the first activation is preprocessing
    (scalers, projections: folded), that op is the first layer, the rest alternate."""
    if not any(it[0] == "lin" for it in items):
        raise ValueError("from_onnx: the graph has no dense layer (Gemm, MatMul, LinearClassifier)")
    first_act = next((i for i, it in enumerate(items) if it[0] == "act"), len(items))
    lins = [i for i in range(first_act) if items[i][0] == "lin"]
    if not lins:
        raise ValueError(f"from_onnx: an activation ({items[first_act][1]}) before the first layer")
    k = lins[-1]
    pre = []
    for it in items[:k]:
        if it[0] == "aff":
            pre.append(it[1])
        else:  # a projection before the first layer (skl2onnx's PCA): an affine step
            pre.append(Affine("MatMul", None, it[1], it[2], 0.0, n=it[1].shape[0]))
    Ws, bs, acts = [items[k][1]], [items[k][2]], []
    pending = None
    for it in items[k + 1:]:
        if it[0] == "aff":
            raise ValueError(f"from_onnx: {it[1].name} after the first layer is not supported")
        if it[0] == "act":
            if pending is not None:
                raise ValueError(f"from_onnx: two activations in a row ({pending}, {it[1]})")
            pending = it[1]
            continue
        if Ws[-1].shape[1] != it[1].shape[0]:
            raise ValueError(f"from_onnx: a layer of {Ws[-1].shape[1]} outputs feeds one of "
                             f"{it[1].shape[0]} inputs")
        acts.append(pending or "identity")
        pending = None
        Ws.append(it[1])
        bs.append(it[2])
    final_sigmoid = False
    if pending is not None:
        if pending == "logistic" and Ws[-1].shape[1] == 1:
            final_sigmoid = True
        else:
            raise ValueError(f"from_onnx: the last layer is followed by {pending}; expected logits, "
                             "Softmax / LogSoftmax, or a Sigmoid on one output")
    return pre, Ws, bs, acts, final_sigmoid
