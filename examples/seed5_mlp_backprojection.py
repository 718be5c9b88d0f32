"""Seed 2 / MLP: a (50, 20, 2) identity MLPClassifier on digits 0-3 (scikit-learn's 8x8 digits
stand in for MNIST). Its 2-unit last hidden layer separates the classes and the output layer
draws linear regions there; a point far inside each region, run backwards through the
pseudo-inverse of every layer, gives an 8x8 "image" of noise that the network classifies as that
digit with probability >= 0.99. The tanh variant needs the codes kept inside (-1, 1) (fastfool
clamps by a margin), and the x0 variant finds the input nearest to a real digit that carries the
chosen code.

    python examples/seed5_mlp_backprojection.py
"""

import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier

import fastfool as ff


def main(verbose=True, max_iter=300, out_dir=None):
    X, y = load_digits(return_X_y=True)
    keep = y < 4
    X, y = X[keep] / 16.0, y[keep]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ident = MLPClassifier((50, 20, 2), activation="identity", solver="adam", max_iter=max_iter,
                              random_state=21).fit(X, y)
        tanh = MLPClassifier((50, 20, 2), activation="tanh", solver="adam", max_iter=max_iter,
                             random_state=21).fit(X, y)
    m = ff.from_sklearn(ident)
    H = m.hidden(X, -1)  # the 2-D layer
    far = ff.far_points(m, X, p=0.99, k=10, layer=-1)  # one far code per class region
    images = far.x_adv.reshape(-1, 8, 8)
    codes = m.hidden(far.x_adv, -1)  # the far codes the search found
    nearest = ff.invert(m, codes, layer=-1, x0=X[:4])
    mt = ff.from_sklearn(tanh)
    Ht = mt.hidden(X, -1)
    corners = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=float)  # clamped inside (-1, 1)
    inv_t = ff.invert(mt, corners, layer=-1)
    out = {"accuracy_identity": float(ident.score(X, y)), "accuracy_tanh": float(tanh.score(X, y)),
           "hidden": H, "far": far, "images": images, "nearest": nearest, "tanh_inverse": inv_t,
           "hidden_tanh": Ht}
    if out_dir:
        from fastfool import plot
        lim = float(np.abs(H).max()) * 12
        cmap = ff.confidence_map(m, (-lim, lim), (-lim, lim), resolution=400, layer=-1)
        plot.confidence_map(cmap, X=H, y=y, far=codes, path=f"{out_dir}/seed5_hidden_layer.png",
                            title="(50, 20, 2) identity MLP: the 2-unit layer; stars: far codes")
        plot.images(far.x_adv, (8, 8), titles=[f"{p} ({c:.3f})" for p, c in zip(far.pred, far.confidence)],
                    path=f"{out_dir}/seed5_backprojected.png", title="back-projected far codes")
        plot.images(np.vstack([X[:4], nearest.x_adv]), (8, 8), cols=4,
                    titles=[f"real {v}" for v in y[:4]] + [f"-> {p}" for p in nearest.pred],
                    path=f"{out_dir}/seed5_nearest.png",
                    title="x0 variant: real digits, nearest input with the far code")
    if verbose:
        print(f"identity MLP accuracy {out['accuracy_identity']:.3f}; tanh MLP {out['accuracy_tanh']:.3f}")
        for c, conf, d in zip(far.pred, far.confidence, far.extra["distance"]):
            print(f"  back-projected far code ({d:.0f} radii out in the 2-unit layer) -> digit {c}, "
                  f"p = {conf:.4f}")
        print(f"  x0 variant: nearest inputs to 4 real digits carrying those codes, L2 distances "
              f"{np.round(nearest.l2, 2).tolist()}, classified {nearest.pred.tolist()}")
        print(f"  tanh corners (clamped {int(inv_t.extra['clamped'][0])} values): classified "
              f"{inv_t.pred.tolist()} with p {np.round(inv_t.confidence, 3).tolist()}")
    return out


if __name__ == "__main__":
    import sys
    main(out_dir=sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else None)
