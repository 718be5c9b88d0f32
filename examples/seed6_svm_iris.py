"""Seed 2 / SVMs: a linear-kernel and a Gaussian (RBF) SVM on the iris petal features. Both fit
the data about equally well, but far from the data the linear one is as confident as ever (its
score grows without bound) while the RBF one's score decays to its intercept, so its
probability (sigmoid of the score, fastfool's view of a binary SVM) becomes uncertain.
fastfool supports binary kernel SVMs, so the pair is versicolor vs virginica.

    python examples/seed6_svm_iris.py [--out DIR]
"""

import sys

import numpy as np
from sklearn.datasets import load_iris
from sklearn.svm import SVC

import fastfool as ff


def main(verbose=True, resolution=400, out_dir=None):
    iris = load_iris()
    keep = iris.target > 0
    X, y = iris.data[keep][:, 2:], iris.target[keep]
    lin = SVC(kernel="linear").fit(X, y)
    rbf = SVC(kernel="rbf", gamma=1.0).fit(X, y)
    maps, far_conf = {}, {}
    for name, est in (("linear", lin), ("rbf", rbf)):
        m = ff.from_sklearn(est)
        maps[name] = ff.confidence_map(m, (-10, 20), (-10, 20), resolution=resolution)
        far_pts = np.array([[-10, -10], [20, 20], [-10, 20], [20, -10]], dtype=float)
        far_conf[name] = m.predict_proba(far_pts).max(axis=1)
    out = {"accuracy_linear": float(lin.score(X, y)), "accuracy_rbf": float(rbf.score(X, y)),
           "maps": maps, "far_confidence": far_conf}
    if out_dir:
        from fastfool import plot
        for name in maps:
            plot.confidence_map(maps[name], X=X, y=y, path=f"{out_dir}/seed6_{name}_svm.png",
                                title=f"{name} SVM, versicolor vs virginica")
    if verbose:
        print(f"accuracy: linear SVM {out['accuracy_linear']:.3f}, RBF SVM {out['accuracy_rbf']:.3f}")
        for name, c in far_conf.items():
            print(f"  {name}: probability of the predicted class at 4 far corners {np.round(c, 3).tolist()}")
    return out


if __name__ == "__main__":
    main(out_dir=sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else None)
