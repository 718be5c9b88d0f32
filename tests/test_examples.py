"""The seed experiments in examples/ run (fast settings) and reproduce their figures."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_seed1_toy_figures_exactly():
    out = load("seed1_toy_linear").main(verbose=False)
    assert out["score_before"] == pytest.approx(-3.0, abs=1e-12)
    assert out["score_after"] == pytest.approx(2.0, abs=1e-12)
    assert round(out["p_before"], 4) == 0.0474 and round(out["p_after"], 2) == 0.88
    np.testing.assert_array_equal(out["x_adv"], [1.5, -1.5, 3.5, -2.5, 2.5, 1.5, 1.5, -3.5, 4.5, 1.5])


@pytest.mark.slow  # a whole example program (CI runs the slow set)
def test_seed2_linear_templates():
    out = load("seed2_linear_templates").main(verbose=False, imagenet_rows=8)
    assert out["accuracy"] > 0.95
    assert out["templates"].shape == (10, 8, 8)
    assert out["into_each"].success.all() and out["from_noise"].success.all()
    assert np.all(out["into_each"].confidence >= 0.99)
    assert out["every"].n == 20 * 9 and out["every"].success.mean() > 0.95
    assert out["imagenet"].x_adv.shape == (8, 12288)


@pytest.mark.slow  # a whole example program (CI runs the slow set)
def test_seed3_regularisation_tradeoff():
    rows = load("seed3_regularisation").main(verbose=False, Cs=(1e-2, 1e-1, 1.0, 10.0))
    acc = [r["accuracy"] for r in rows]
    l2 = [r["mean_min_l2"] for r in rows]
    assert acc[0] < acc[-1]          # weaker regularisation: more accurate ...
    assert l2[0] > l2[-1]            # ... and fooled by smaller changes
    for r in rows:                   # the exact minimal perturbation is the certified radius
        assert r["fooled"] == 1.0
        assert r["mean_min_l2"] == pytest.approx(r["mean_radius"], rel=1e-3)


def test_seed4_iris_figures():
    out = load("seed4_iris_far_points").main(verbose=False, resolution=200)
    assert abs(out["accuracy"] - 0.966) < 0.001
    expected = [("setosa", 0.998), ("virginica", 1.000), ("versicolor", 0.992)]
    for (_, name, conf), (ename, econf) in zip(out["points"], expected):
        assert name == ename and abs(conf - econf) <= 0.01
    far = out["far_points"]
    assert far.success.all() and np.all(far.extra["distance"] >= 10 - 1e-9)
    assert out["map"].label.shape == (200, 200) and out["map"].confidence.max() > 0.999


@pytest.mark.slow  # a whole example program (CI runs the slow set)
def test_seed5_backprojection():
    out = load("seed5_mlp_backprojection").main(verbose=False, max_iter=200)
    assert out["accuracy_identity"] > 0.9
    far = out["far"]
    assert far.success.all() and np.all(far.confidence >= 0.99)
    assert out["images"].shape == (4, 8, 8)
    near = out["nearest"]
    assert near.success.all() and np.all(near.extra["code_error"] < 1e-6)
    inv = out["tanh_inverse"]
    # the 8 corner values are clamped at the last layer, and more below (back-projected values
    # of the tanh layers underneath also leave (-1, 1)); the result stays finite
    assert inv.extra["clamped"][0] >= 8 and np.all(np.isfinite(inv.x_adv))


@pytest.mark.slow  # a whole example program (CI runs the slow set)
def test_seed6_linear_vs_rbf_svm(tmp_path):
    out = load("seed6_svm_iris").main(verbose=False, resolution=100, out_dir=tmp_path)
    assert out["accuracy_linear"] > 0.9 and out["accuracy_rbf"] > 0.9
    assert np.all(out["far_confidence"]["linear"] > 0.99)
    assert np.all(out["far_confidence"]["rbf"] < 0.7)  # decays to sigmoid(intercept) far away
    assert (tmp_path / "seed6_rbf_svm.png").stat().st_size > 5000


@pytest.mark.slow  # a whole example program (CI runs the slow set)
def test_seed7_black_box_forest():
    out = load("seed7_blackbox_forest").main(verbose=False, rows=60, max_queries=300)
    res = out["result"]
    assert out["fooled"] > 0.5 and np.all(res.queries <= 300) and np.all(res.linf <= 0.2 + 1e-12)


@pytest.mark.slow
def test_examples_write_their_figures(tmp_path):
    load("seed5_mlp_backprojection").main(verbose=False, max_iter=100, out_dir=tmp_path)
    load("seed3_regularisation").main(verbose=False, Cs=(0.01, 1.0), out_dir=tmp_path)
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == ["seed3_regularisation.png", "seed5_backprojected.png", "seed5_hidden_layer.png",
                     "seed5_nearest.png"]
