"""Every figure renders to a PNG that is not blank."""

from __future__ import annotations

import numpy as np
import pytest

mpl = pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

import fastfool as ff  # noqa: E402
from fastfool import plot  # noqa: E402


def check_png(path, min_bytes=5000):
    assert path.stat().st_size > min_bytes
    img = imread(path)[..., :3]
    non_white = np.mean(np.any(img < 0.95, axis=-1))
    assert non_white > 0.02 and img.std() > 0.05


@pytest.fixture(scope="module")
def digits_model(digits, digits_logreg):
    X, y = digits
    return X, y, ff.from_sklearn(digits_logreg)


def test_templates_and_adversarial_grid(tmp_path, digits_model):
    X, y, m = digits_model
    plot.templates(m, (8, 8), path=tmp_path / "t.png")
    check_png(tmp_path / "t.png")
    res = ff.pgd(m, X[:8], y[:8], eps=0.2, seed=0, clip=(0, 1))
    plot.adversarial_grid(X[:8], res, (8, 8), path=tmp_path / "g.png")
    check_png(tmp_path / "g.png")


# ~1 s of figures: CI runs it (-m slow); the grid test above keeps plotting in the quick run
@pytest.mark.slow
def test_confidence_map_curves_and_sweep(tmp_path, digits_model):
    iris = load_iris()
    Xi, yi = iris.data[:, 2:], iris.target
    m = ff.from_sklearn(LogisticRegression(max_iter=100).fit(Xi, yi))
    cmap = ff.confidence_map(m, (-10, 20), (-10, 20), resolution=300)
    far = ff.far_points(m, Xi)
    plot.confidence_map(cmap, X=Xi, y=yi, far=far.x_adv, path=tmp_path / "c.png")
    check_png(tmp_path / "c.png")
    X, y, lm = digits_model
    curves = {"pgd": ff.robustness_curve(lm, X[:200], y[:200], [0, 0.05, 0.1], steps=5, seed=0),
              "exact L2": ff.robustness_curve(lm, X[:200], y[:200], [0, 0.5, 1.0], attack="exact")}
    plot.robustness_curves(curves, path=tmp_path / "r.png")
    check_png(tmp_path / "r.png")
    rows = [{"C": c, "accuracy": a, "mean_min_l2": l} for c, a, l in
            ((0.01, 0.88, 0.64), (0.1, 0.94, 0.59), (1.0, 0.96, 0.51))]
    plot.regularisation(rows, path=tmp_path / "s.png")
    check_png(tmp_path / "s.png")
