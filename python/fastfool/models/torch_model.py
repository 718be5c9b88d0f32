"""PyTorch dense networks in: :func:`from_torch`.

An ``nn.Sequential`` (or a module whose ``forward`` is a chain of its layers, checked by
tracing it with ``torch.fx``) of ``Linear``, ``ReLU``, ``Tanh``, ``Sigmoid``, ``Identity``,
``Flatten``, ``Dropout`` (inference: the identity) and a final ``Softmax`` / ``LogSoftmax``
becomes a fastfool :class:`~fastfool.MLP` (or :class:`~fastfool.LinearModel`) with the
weights copied out. The module stays the judge: rows whose float64 margin is within rounding
of a tie are decided by running the module itself (in its own dtype, in eval mode), and the
rounding bounds use the module's precision (float32 weights: torch computes in float32).

torch is optional (``pip install ".[torch]"``); it is imported only here.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from .. import verdict
from .base import Model
from .dense import MLP, LinearModel

__all__ = ["from_torch"]

_ACTS = {"ReLU": "relu", "Tanh": "tanh", "Sigmoid": "logistic"}
_IDENTITY = ("Identity", "Dropout", "Dropout1d", "AlphaDropout")
_FINAL = ("Softmax", "LogSoftmax")
SUPPORTED = ("Linear, ReLU, Tanh, Sigmoid, Identity, Flatten, Dropout (eval), and a final "
             "Softmax / LogSoftmax")


class TorchSource:
    """The module as the verdict's judge: ``predict(X)`` runs it (eval mode, no gradient, in
    its own dtype) on rows reshaped to its input shape and returns class labels (argmax of the
    outputs; one output: > 0, or > 0.5 after a final Sigmoid)."""

    def __init__(self, module, input_shape, classes, final_sigmoid):
        self.module, self.input_shape = module, tuple(input_shape)
        self.classes_ = np.asarray(classes)
        self._final_sigmoid = final_sigmoid
        p = next(iter(module.parameters()))
        self._dtype = p.dtype

    def outputs(self, X) -> np.ndarray:
        import torch
        x = torch.as_tensor(np.ascontiguousarray(X)).to(self._dtype)
        x = x.reshape((x.shape[0],) + self.input_shape)
        was = self.module.training
        self.module.eval()
        try:
            with torch.no_grad():
                out = self.module(x)
        finally:
            self.module.train(was)
        return out.detach().cpu().numpy().reshape(len(X), -1)

    def predict(self, X):
        out = self.outputs(X)
        if out.shape[1] == 1:
            thr = 0.5 if self._final_sigmoid else 0.0
            return self.classes_[(out[:, 0] > thr).astype(np.int64)]
        return self.classes_[np.argmax(out, axis=1)]


def _chain(module):
    """The module's layers in call order, checked to be a chain: nn.Sequential directly (nested
    ones flattened), anything else through torch.fx (each node a call of a submodule or of
    relu / tanh / sigmoid / flatten on the previous node's output)."""
    import torch
    from torch import nn
    if isinstance(module, nn.Sequential):
        out = []
        for m in module:
            out += _chain(m) if isinstance(m, nn.Sequential) else [m]
        return out
    if not list(module.children()):
        return [module]
    import torch.fx as fx
    try:
        gm = fx.symbolic_trace(module)
    except Exception as exc:
        raise ValueError(f"from_torch: cannot trace {type(module).__name__}.forward ({exc}); pass "
                         "an nn.Sequential of the layers") from None
    funcs = {torch.relu: nn.ReLU(), torch.tanh: nn.Tanh(), torch.sigmoid: nn.Sigmoid(),
             torch.nn.functional.relu: nn.ReLU(), torch.nn.functional.sigmoid: nn.Sigmoid(),
             torch.nn.functional.tanh: nn.Tanh(), torch.flatten: nn.Flatten()}
    layers, prev = [], None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if prev is not None:
                raise ValueError("from_torch: forward takes more than one input")
            prev = node
            continue
        if node.op == "output":
            if node.args[0] is not prev:
                raise ValueError("from_torch: forward does not return its last layer's output")
            break
        if node.args[:1] != (prev,) or any(isinstance(a, fx.Node) for a in node.args[1:]):
            raise ValueError(f"from_torch: {type(module).__name__}.forward is not a chain of layers "
                             f"(node {node.name!r} does not take the previous output alone); "
                             "pass an nn.Sequential")
        if node.op == "call_module":
            layers.append(gm.get_submodule(node.target))
        elif node.op == "call_function" and node.target in funcs:
            layers.append(funcs[node.target])
        elif node.op == "call_method" and node.target in ("relu", "tanh", "sigmoid", "flatten"):
            layers.append({"relu": nn.ReLU(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(),
                           "flatten": nn.Flatten()}[node.target])
        else:
            raise ValueError(f"from_torch: unsupported operation {node.target!r} in "
                             f"{type(module).__name__}.forward; supported: {SUPPORTED}")
        prev = node
    return layers


def _eager_copy(sm):
    """An eager nn.Sequential with the layers and weights of a TorchScript Sequential (the
    scripted module stays the judge)."""
    from torch import nn
    if getattr(sm, "original_name", "") != "Sequential":
        raise ValueError(f"from_torch: a TorchScript {getattr(sm, 'original_name', '?')}; only a "
                         "scripted nn.Sequential is read (script the Sequential itself)")
    out = []
    for _, c in sm.named_children():
        kind = getattr(c, "original_name", type(c).__name__)
        if kind == "Sequential":
            out.append(_eager_copy(c))
        elif kind == "Linear":
            W = c.weight.detach()
            lin = nn.Linear(W.shape[1], W.shape[0], bias=c.bias is not None, dtype=W.dtype)
            lin.weight.data.copy_(W)
            if c.bias is not None:
                lin.bias.data.copy_(c.bias.detach())
            out.append(lin)
        elif kind in ("ReLU", "Tanh", "Sigmoid", "Identity") + _IDENTITY:
            out.append(getattr(nn, kind)() if kind not in _IDENTITY else nn.Identity())
        elif kind == "Flatten":
            out.append(nn.Flatten(getattr(c, "start_dim", 1), getattr(c, "end_dim", -1)))
        elif kind in _FINAL:
            out.append(getattr(nn, kind)(dim=getattr(c, "dim", -1)))
        else:
            raise ValueError(f"from_torch: unsupported layer {kind} in the TorchScript module; "
                             f"supported: {SUPPORTED}")
    return nn.Sequential(*out)


def from_torch(module, *, dtype: DTypeLike = None, classes=None, input_shape=None) -> Model:
    """Convert a PyTorch dense network to a fastfool model.

    Parameters
    ----------
    module : ``nn.Sequential`` (nested ones too) or an ``nn.Module`` whose forward is a chain of
        its layers; supported layers: Linear, ReLU, Tanh, Sigmoid, Identity, Flatten, Dropout
        (inference: the identity), and a final Softmax / LogSoftmax (its argmax is the logits').
        One output unit is a binary model (class 1 when the output is > 0, or > 0.5 after a
        final Sigmoid).
    dtype : the fastfool model's dtype; default the module's (float32 or float64).
    classes : labels of the outputs; default ``arange(C)``.
    input_shape : the shape of one input the module takes, when it is not a flat vector (an
        image before ``nn.Flatten``: e.g. ``(1, 28, 28)``); rows of X are reshaped to it when the
        module itself decides. Default ``(in_features,)`` of the first Linear.

    Inputs are flat rows (N, D) (NumPy arrays or CPU tensors). Verdicts are the module's:
    ``predict`` and every attack's ``success`` are what the module decides on the returned
    rows (float64 evaluation with a rounding bound in the module's precision; rows within it of
    a tie are run through the module itself).
    """
    try:
        import torch
        from torch import nn
    except ImportError:  # pragma: no cover - torch is an optional dependency
        raise ImportError("from_torch needs PyTorch: pip install torch (or fastfool[torch])") from None
    if not isinstance(module, nn.Module):
        raise TypeError(f"from_torch: expected a torch.nn.Module, got {type(module).__name__}")
    judge = module
    if isinstance(module, torch.jit.ScriptModule):  # TorchScript: read an eager copy, judge by it
        module = _eager_copy(module)
    layers = _chain(module)
    Ws, bs, acts = [], [], []
    pending = None  # the activation after the last Linear
    final_sigmoid = False
    for i, layer in enumerate(layers):
        name = type(layer).__name__
        if isinstance(layer, nn.Linear):
            if Ws:
                acts.append(pending or "identity")
            elif pending is not None:
                raise ValueError(f"from_torch: an activation ({pending}) before the first Linear "
                                 "is not supported")
            W = layer.weight.detach().cpu()
            if W.dtype not in (torch.float32, torch.float64):
                raise TypeError(f"from_torch: Linear weights of dtype {W.dtype}; convert the "
                                "module with .float() or .double()")
            Ws.append(W.numpy().T.copy())
            b = layer.bias
            bs.append(None if b is None else b.detach().cpu().numpy().copy())
            pending = None
        elif name in _ACTS:
            if pending is not None:
                raise ValueError(f"from_torch: two activations in a row ({pending}, {name}) are "
                                 "not a dense layer")
            pending = _ACTS[name]
        elif name in _IDENTITY:
            continue
        elif name == "Flatten":
            if Ws:
                raise ValueError("from_torch: Flatten after a Linear layer is not supported")
            if getattr(layer, "start_dim", 1) != 1 or getattr(layer, "end_dim", -1) != -1:
                raise ValueError("from_torch: only Flatten(start_dim=1, end_dim=-1) is supported")
        elif name in _FINAL:
            if i != len(layers) - 1:
                raise ValueError(f"from_torch: {name} is supported only as the last layer")
            if getattr(layer, "dim", None) not in (None, 1, -1):
                raise ValueError(f"from_torch: {name}(dim={layer.dim}) does not act on the classes")
        else:
            raise ValueError(f"from_torch: unsupported layer {name} (layer {i}); supported: "
                             f"{SUPPORTED}")
    if not Ws:
        raise ValueError("from_torch: the module has no Linear layer")
    if pending is not None:
        if pending == "logistic" and Ws[-1].shape[1] == 1:
            final_sigmoid = True  # binary probability: the score is its logit
        else:
            raise ValueError(f"from_torch: the last Linear is followed by {pending}; fastfool's "
                             "models end in logits (or a final Softmax / LogSoftmax, or a Sigmoid "
                             "on one output)")
    for i, (W, W2) in enumerate(zip(Ws, Ws[1:])):
        if W.shape[1] != W2.shape[0]:
            raise ValueError(f"from_torch: layer {i} gives {W.shape[1]} outputs but layer {i + 1} "
                             f"takes {W2.shape[0]}")
    C = Ws[-1].shape[1]
    n_cls = 2 if C == 1 else C
    classes = np.arange(n_cls) if classes is None else np.asarray(classes)
    if input_shape is None:
        input_shape = (Ws[0].shape[0],)
    input_shape = tuple(int(s) for s in np.atleast_1d(input_shape))
    if int(np.prod(input_shape)) != Ws[0].shape[0]:
        raise ValueError(f"input_shape: {input_shape} holds {int(np.prod(input_shape))} values, "
                         f"the first Linear takes {Ws[0].shape[0]}")
    dt = np.dtype(Ws[0].dtype) if dtype is None else dtype
    if len(Ws) == 1:
        m = LinearModel(Ws[0].T, bs[0], classes=classes, dtype=dt)
    else:
        m = MLP(Ws, bs, activation=acts, classes=classes, dtype=dt)
    src = TorchSource(judge, input_shape, m.classes_, final_sigmoid)
    # torch computes in the module's precision; its float32 tanh / sigmoid are within a few
    # ulps (8 u allowed, as for fastfool's own AVX2 functions)
    u = verdict.U32 if src._dtype == torch.float32 else verdict.U64
    for r in (m, m._ref64):
        if r is not None:
            r._source, r._source_u, r._source_act_err = src, u, 8
    return m
