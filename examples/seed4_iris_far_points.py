"""Seed 2 / iris: multinomial LogisticRegression on petal length and width (all 150 rows) is
96.6% accurate, and points far from the data are classified with near certainty:
(0.1, 5) -> setosa 0.998, (10, 10) -> virginica 1.000, (5, -5) -> versicolor 0.992.
fastfool also searches such points itself (far_points) and maps the confidence over a 1000x1000
grid of the plane.

    python examples/seed4_iris_far_points.py
"""

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import fastfool as ff


def main(verbose=True, resolution=1000, out_dir=None):
    iris = load_iris()
    X, y = iris.data[:, 2:], iris.target
    clf = LogisticRegression(max_iter=100).fit(X, y)
    m = ff.from_sklearn(clf)
    pts = np.array([[0.1, 5.0], [10.0, 10.0], [5.0, -5.0]])
    P = m.predict_proba(pts)
    names = iris.target_names
    far = ff.far_points(m, X, p=0.99, k=10, seed=0)
    cmap = ff.confidence_map(m, (-20, 30), (-20, 30), resolution=resolution)
    out = {"accuracy": float(clf.score(X, y)),
           "points": [(tuple(float(v) for v in p), str(names[int(np.argmax(q))]), float(q.max()))
                      for p, q in zip(pts, P)],
           "far_points": far, "map": cmap}
    if out_dir:
        from fastfool import plot
        plot.confidence_map(cmap, X=X, y=y, far=pts, classes=list(names),
                            path=f"{out_dir}/seed4_iris_far_points.png",
                            title="iris, LogisticRegression on petal length/width; stars: the seed's far points")
    if verbose:
        print(f"training accuracy {out['accuracy']:.3f}")
        for p, name, conf in out["points"]:
            print(f"  {p} -> {name} {conf:.3f}")
        for xa, c, conf, d in zip(far.x_adv, far.target, far.confidence, far.extra["distance"]):
            print(f"  found far point {np.round(xa, 1).tolist()} ({d:.0f} data radii away) -> "
                  f"{names[c]} {conf:.3f}")
        print(f"confidence map {cmap.label.shape}: {100 * np.mean(cmap.confidence > 0.99):.1f}% "
              "of the plane above 0.99")
    return out


if __name__ == "__main__":
    import sys
    main(out_dir=sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else None)
