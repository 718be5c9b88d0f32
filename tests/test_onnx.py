"""ONNX dense graphs through ff.from_onnx: skl2onnx exports of scikit-learn pipelines (scalers,
PCA, linear models, MLPClassifiers; binary and multi-class) and torch.onnx exports of generated
nn.Sequential networks load, with predictions and every attack's verdicts equal to
onnxruntime's on every row; unsupported graphs are refused with the reason."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
skl2onnx = pytest.importorskip("skl2onnx")

from sklearn.datasets import load_breast_cancer, load_iris  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler  # noqa: E402

import fastfool as ff  # noqa: E402


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return est.fit(X, y)


def _export(est, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return skl2onnx.to_onnx(est, X[:1].astype(np.float32), options={"zipmap": False})


def _labels(onx, X):
    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["label"], {sess.get_inputs()[0].name: np.asarray(X, np.float32)})[0]


STEPS = [StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, lambda: PCA(3, random_state=0)]
CLFS = [lambda: LogisticRegression(max_iter=500),
        lambda: MLPClassifier((12,), activation="tanh", max_iter=80, random_state=0),
        lambda: MLPClassifier((10, 6), activation="relu", max_iter=80, random_state=0),
        lambda: MLPClassifier((8,), activation="logistic", max_iter=80, random_state=0)]


@pytest.mark.parametrize("case", list(range(4)) + [pytest.param(c, marks=pytest.mark.slow)
                                                   for c in range(4, 16)])
def test_skl2onnx_exports_decide_as_onnxruntime(digits, case):
    rng = np.random.default_rng(case)
    data = [digits, load_iris(return_X_y=True), load_breast_cancer(return_X_y=True)][case % 3]
    X, y = data
    X = X * 16 if X.shape[1] == 64 else X  # raw units
    steps = [STEPS[int(i)]() for i in rng.choice(len(STEPS), int(rng.integers(0, 3)), replace=False)]
    est = _fit(make_pipeline(*steps, CLFS[case % len(CLFS)]()), X, y)
    onx = _export(est, X)
    m = ff.from_onnx(onx)
    rows = rng.choice(len(X), 80, replace=False)
    Xs, ys = X[rows].astype(np.float32), y[rows]
    np.testing.assert_array_equal(m.predict(Xs), _labels(onx, Xs), err_msg=str(est))
    np.testing.assert_array_equal(m.predict(Xs), est.predict(Xs))
    span = float(np.ptp(X))
    for what, res in (("fgsm", ff.fgsm(m, Xs, ys, eps=0.05 * span)),
                      ("pgd", ff.pgd(m, Xs, ys, eps=0.03 * span, steps=5, seed=case)),
                      ("deepfool", ff.deepfool(m, Xs, ys, max_iter=30))):
        lab = _labels(onx, res.x_adv)
        assert np.array_equal(res.pred, lab), f"{what} {est}"
        assert np.array_equal(res.success, lab != ys), f"{what} success {est}"


@pytest.mark.parametrize("seed", [pytest.param(s, marks=pytest.mark.slow) for s in range(8)])
def test_torch_onnx_exports_decide_as_onnxruntime(digits, tmp_path, seed):
    torch = pytest.importorskip("torch")
    from test_torch import module_decision, random_net
    X, _ = digits
    X = X[np.random.default_rng(seed).choice(len(X), 80, replace=False)].astype(np.float32)
    net, shape, sig = random_net(seed, 64)
    net = net.float().eval()
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros((1,) + shape),), str(path), dynamo=False,
                          input_names=["x"], output_names=["out"], dynamic_axes={"x": {0: "n"}})
    m = ff.from_onnx(path)
    truth = module_decision(net, X, shape, sig)
    np.testing.assert_array_equal(m.predict(X), truth)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def decide(x):
        out = sess.run(["out"], {"x": x.reshape((len(x),) + shape)})[0].reshape(len(x), -1)
        return (out[:, 0] > (0.5 if sig else 0)).astype(np.int64) if out.shape[1] == 1 else out.argmax(1)

    for what, res in (("pgd", ff.pgd(m, X, truth, eps=0.1, steps=5, seed=seed)),
                      ("deepfool", ff.deepfool(m, X, truth, max_iter=20))):
        np.testing.assert_array_equal(res.pred, decide(res.x_adv), err_msg=f"{what} {net}")


def test_unsupported_graphs_are_refused(tmp_path):
    from onnx import TensorProto, helper, numpy_helper
    W = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    # a residual: x + x W
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["h"]),
                           helper.make_node("Add", ["x", "h"], ["y"])], "res", [x], [y], [W])
    with pytest.raises(ValueError, match="not a chain"):
        ff.from_onnx(helper.make_model(g))
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["h"]),
                           helper.make_node("Exp", ["h"], ["y"])], "exp", [x], [y], [W])
    with pytest.raises(ValueError, match="unsupported operation Exp"):
        ff.from_onnx(helper.make_model(g))
    with pytest.raises(FileNotFoundError):
        ff.from_onnx(tmp_path / "missing.onnx")
    with pytest.raises(TypeError, match="ModelProto"):
        ff.from_onnx(42)
