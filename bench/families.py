"""Per model family that fastfool converts: how often its verdicts agree with the original
object, and how strong one attack is against that object (issue 18's evidence table).

    python bench/families.py [--json bench/results/families.json]

For each family (scikit-learn pipelines, a search CV, one-vs-rest, a torch nn.Sequential, ONNX
exports of a pipeline and of the torch network), on held-out rows of digits / iris / breast
cancer, in float64 and float32: the share of rows where ``m.predict`` equals the object's own
decision on clean rows, and on PGD's ``x_adv`` the share where ``res.pred`` does; and PGD's
success rate as the object decides it (eps in the data's raw units: 5% of its range, 10
steps). Agreement below 1.0 would be a bug (the tests assert it on generated cases).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import fastfool as ff

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import header, write_json  # noqa: E402


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return est.fit(X, y)


def families():
    """(name, data set, fitted object, converter, decide(obj, X) -> labels)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler
    from sklearn.svm import SVC, LinearSVC

    data = {"digits": load_digits(return_X_y=True), "iris": load_iris(return_X_y=True),
            "cancer": load_breast_cancer(return_X_y=True), "wine": load_wine(return_X_y=True)}
    Xd, yd = data["digits"]
    data["digits/16"] = (Xd / 16, yd)
    split = {k: (X[np.arange(len(y)) % 3 != 0], y[np.arange(len(y)) % 3 != 0],
                 X[::3], y[::3]) for k, (X, y) in data.items()}
    out = []
    sk = (ff.from_sklearn, lambda o, X: o.predict(X))
    specs = [
        ("Pipeline(StandardScaler, LogisticRegression)", "digits",
         lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))),
        ("Pipeline(MinMaxScaler, MLPClassifier relu)", "digits",
         lambda: make_pipeline(MinMaxScaler(), MLPClassifier((50,), max_iter=300, random_state=0))),
        ("Pipeline(StandardScaler, PCA whiten, LogisticRegression)", "cancer",
         lambda: make_pipeline(StandardScaler(), PCA(8, whiten=True), LogisticRegression(max_iter=500))),
        ("Pipeline(ColumnTransformer(Standard | Robust), MLP tanh)", "iris",
         lambda: make_pipeline(ColumnTransformer([("a", StandardScaler(), [0, 1]),
                                                  ("b", RobustScaler(), [2, 3])]),
                               MLPClassifier((16,), activation="tanh", max_iter=500, random_state=0))),
        ("GridSearchCV(Pipeline(StandardScaler, LogisticRegression))", "cancer",
         lambda: GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
                              {"logisticregression__C": [0.1, 1, 10]}, cv=3)),
        ("OneVsRestClassifier(LinearSVC)", "digits",
         lambda: OneVsRestClassifier(LinearSVC(max_iter=5000))),
        ("Pipeline(StandardScaler, SVC rbf) binary", "cancer",
         lambda: make_pipeline(StandardScaler(), SVC())),
        ("Pipeline(StandardScaler, SVC rbf) one-vs-one", "wine",
         lambda: make_pipeline(StandardScaler(), SVC())),
        ("SVC poly one-vs-one (10 classes)", "digits/16",
         lambda: SVC(kernel="poly", degree=3, coef0=1.0)),
        ("OneVsRestClassifier(SVC rbf)", "wine",
         lambda: make_pipeline(StandardScaler(), OneVsRestClassifier(SVC()))),
    ]
    for name, ds, make in specs:
        Xtr, ytr, Xte, yte = split[ds]
        out.append((name, ds, _fit(make(), Xtr, ytr), *sk, Xte, yte))
    try:
        import torch
        from torch import nn
    except ImportError:
        torch = None
    if torch is not None:
        Xtr, ytr, Xte, yte = split["digits"]
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(64, 50), nn.Tanh(), nn.Linear(50, 20), nn.ReLU(), nn.Linear(20, 10))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        Xt, yt = torch.tensor(Xtr / 16, dtype=torch.float32), torch.tensor(ytr)
        for _ in range(300):
            opt.zero_grad()
            nn.functional.cross_entropy(net(Xt), yt).backward()
            opt.step()
        net.eval()

        def torch_decide(o, X):
            with torch.no_grad():
                return o(torch.as_tensor(np.asarray(X, np.float32))).argmax(1).numpy()
        out.append(("torch nn.Sequential(Linear, Tanh, Linear, ReLU, Linear)", "digits/16", net,
                    ff.from_torch, torch_decide, Xte / 16, yte))
    try:
        import onnxruntime as ort
        import skl2onnx
    except ImportError:
        ort = None
    if ort is not None:
        est = out[0][2]
        Xtr, ytr, Xte, yte = split["digits"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onx = skl2onnx.to_onnx(est, Xte[:1].astype(np.float32), options={"zipmap": False})

        def onnx_decide(o, X):
            s = ort.InferenceSession(o.SerializeToString(), providers=["CPUExecutionProvider"])
            return s.run(["label"], {"X": np.asarray(X, np.float32)})[0]
        out.append(("ONNX (skl2onnx) of Pipeline(StandardScaler, LogisticRegression)", "digits", onx,
                    ff.from_onnx, onnx_decide, Xte, yte))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    meta = header()
    print(f"# {meta['date']} {meta['machine']} {meta['cpus']} CPUs, commit {meta['commit']}")
    rows = []
    print(f"{'family':62s} {'data':9s} {'dtype':7s} {'clean agree':>11s} {'x_adv agree':>11s} "
          f"{'PGD success':>11s} {'rows':>5s}")
    for name, ds, obj, conv, decide, X, y in families():
        for dtype in (np.float64, np.float32):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # OvR's probabilities: a surrogate
                m = conv(obj, dtype=dtype)
            Xt = np.asarray(X, dtype)
            clean = float(np.mean(m.predict(Xt) == decide(obj, Xt)))
            t0 = time.perf_counter()
            res = ff.pgd(m, Xt, y, eps=0.05 * float(np.ptp(X)), steps=10, seed=0)
            truth = decide(obj, res.x_adv)
            agree = float(np.mean(res.pred == truth))
            success = float(np.mean(truth != y))
            rows.append(dict(family=name, data=ds, dtype=np.dtype(dtype).name, rows=len(X),
                             clean_agreement=clean, x_adv_agreement=agree, pgd_success=success,
                             seconds=time.perf_counter() - t0))
            print(f"{name:62s} {ds:9s} {np.dtype(dtype).name:7s} {clean:11.4f} {agree:11.4f} "
                  f"{success:11.3f} {len(X):5d}")
    if args.json:
        write_json(args.json, {**meta, "families": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
