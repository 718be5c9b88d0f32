"""PyTorch dense networks through ff.from_torch: every verdict is the module's own decision
(generated networks: depth, widths, activations, dropout, flatten with an image input shape,
final softmax / log-softmax / sigmoid, binary and multi-class, float32 and float64 modules),
forward chains traced with torch.fx, CPU tensors as inputs, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import fastfool as ff  # noqa: E402

ACTS = [nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Identity]


def module_decision(net, X, input_shape, sigmoid_out=False):
    """The module's own class per row (argmax; one output: > 0, > 0.5 after a Sigmoid)."""
    p = next(net.parameters())
    with torch.no_grad():
        out = net.eval()(torch.as_tensor(np.ascontiguousarray(X)).to(p.dtype)
                         .reshape((len(X),) + tuple(input_shape))).numpy().reshape(len(X), -1)
    if out.shape[1] == 1:
        return (out[:, 0] > (0.5 if sigmoid_out else 0.0)).astype(np.int64)
    return out.argmax(axis=1)


def random_net(seed, D):
    """A generated dense network on D inputs (and its input shape, and whether it ends in a
    Sigmoid on one output)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    layers, shape = [], (D,)
    if D == 64 and rng.integers(2):
        layers.append(nn.Flatten())
        shape = (1, 8, 8)
    width = D
    depth = int(rng.integers(1, 4))
    for i in range(depth):
        out = int(rng.integers(3, 24))
        layers.append(nn.Linear(width, out, bias=bool(rng.integers(4))))
        layers.append(ACTS[int(rng.integers(len(ACTS)))]())
        if rng.integers(3) == 0:
            layers.append(nn.Dropout(0.2))
        width = out
    C = int(rng.choice([1, 2, 3, 10]))
    layers.append(nn.Linear(width, C))
    sig = False
    if C == 1 and rng.integers(2):
        layers.append(nn.Sigmoid())
        sig = True
    elif C > 1 and rng.integers(3) == 0:
        layers.append(nn.Softmax(dim=1) if rng.integers(2) else nn.LogSoftmax(dim=-1))
    net = nn.Sequential(*layers)
    if rng.integers(3) == 0:
        net = net.double()
    for p in net.parameters():  # weights large enough that the decisions are not all one class
        p.data.mul_(2.0)
    return net, shape, sig


@pytest.mark.parametrize("seed", list(range(8)) + [pytest.param(s, marks=pytest.mark.slow)
                                                   for s in range(8, 30)])
def test_generated_networks_decide_as_the_module(digits, seed):
    X, _ = digits
    X = X[np.random.default_rng(seed).choice(len(X), 80, replace=False)]
    net, shape, sig = random_net(seed, X.shape[1])
    truth = module_decision(net, X, shape, sig)
    for dtype in (np.float32, np.float64):
        m = ff.from_torch(net, dtype=dtype, input_shape=shape)
        Xt = X.astype(dtype)
        np.testing.assert_array_equal(m.predict(Xt), module_decision(net, Xt, shape, sig))
        for what, res in (("fgsm", ff.fgsm(m, Xt, truth, eps=0.1)),
                          ("pgd", ff.pgd(m, Xt, truth, eps=0.1, steps=5, seed=seed)),
                          ("pgd-clip", ff.pgd(m, Xt, truth, eps=0.2, steps=5, seed=seed, clip=(0, 1))),
                          ("deepfool", ff.deepfool(m, Xt, truth, max_iter=20))):
            dec = module_decision(net, res.x_adv, shape, sig)
            assert np.array_equal(res.pred, dec), f"{what} {dtype.__name__} {net}"
            assert np.array_equal(res.success, dec != truth), f"{what} success {net}"


def test_a_traced_module_tensor_inputs_and_the_transpose_hint(digits):
    X, y = digits

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.out = nn.Linear(64, 30), nn.Linear(30, 12), nn.Linear(12, 10)

        def forward(self, x):
            return self.out(torch.tanh(self.fc2(torch.relu(self.fc1(x)))))

    torch.manual_seed(1)
    net = Net()
    m = ff.from_torch(net, classes=np.arange(10) * 10)
    assert repr(m).startswith("MLP(64-30-12-10") and m.activations == ["relu", "tanh"]
    t = torch.tensor(X[:50], dtype=torch.float32, requires_grad=True)
    np.testing.assert_array_equal(m.predict(t), module_decision(net, X[:50], (64,)) * 10)
    res = ff.pgd(m, t, m.predict(t), eps=0.2, steps=5)
    np.testing.assert_array_equal(res.pred, module_decision(net, res.x_adv, (64,)) * 10)
    assert t.grad is None and np.array_equal(t.detach().numpy(), X[:50].astype(np.float32))
    with pytest.raises(ValueError, match="transpose"):
        m.predict(X[:10].T)


def test_unsupported_modules_are_refused_with_the_reason():
    cases = [
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 3)), "unsupported layer Conv2d"),
        (nn.Sequential(nn.ReLU(), nn.Linear(4, 3)), "before the first Linear"),
        (nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Tanh(), nn.Linear(5, 3)), "two activations"),
        (nn.Sequential(nn.Linear(4, 3), nn.Sigmoid()), "followed by logistic"),
        (nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 3)), "BatchNorm1d"),
        (nn.Sequential(nn.Linear(4, 5), nn.Softmax(dim=1), nn.Linear(5, 3)), "only as the last"),
        (nn.Sequential(nn.Linear(4, 3)).half(), "dtype"),
        (nn.Sequential(nn.ReLU()), "no Linear"),
    ]
    for net, match in cases:
        with pytest.raises((ValueError, TypeError), match=match):
            ff.from_torch(net)

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(x + self.a(x))

    with pytest.raises(ValueError, match="not a chain"):
        ff.from_torch(Residual())
    with pytest.raises(TypeError, match="torch.nn.Module"):
        ff.from_torch(np.eye(3))
    with pytest.raises(ValueError, match="input_shape"):
        ff.from_torch(nn.Sequential(nn.Linear(4, 3)), input_shape=(2, 3))
