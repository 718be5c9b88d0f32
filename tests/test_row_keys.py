"""Row-keyed randomness (issue 21, item 1): every random draw is a function of (seed, stream,
global row), so attacking rows in pieces with ``row_offset=`` - or with other internal row
chunks - gives bit-identical results to one call on all rows."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.neural_network import MLPClassifier

import fastfool as ff
from fastfool import _random
from fastfool.attacks import _common


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**63), start=st.integers(0, 10**12), n=st.integers(0, 40),
       cols=st.integers(0, 9), dtype=st.sampled_from([np.float64, np.float32]))
def test_draws_of_a_row_do_not_depend_on_the_others(seed, start, n, cols, dtype):
    k = _random.key(seed, "test", 3)
    rows = np.arange(start, start + n)
    u = _random.uniform(k, rows, cols, dtype)
    assert u.dtype == dtype and u.shape == (n, cols)
    assert np.all((u >= 0) & (u < 1))
    for i in range(n):  # each row alone: the same bits
        np.testing.assert_array_equal(_random.uniform(k, rows[i:i + 1], cols, dtype), u[i:i + 1])
    if n > 3:
        np.testing.assert_array_equal(_random.uniform(k, rows[::-1], cols, dtype), u[::-1])


def test_draws_look_uniform_and_normal():
    k = _random.key(0, "stats")
    u = _random.uniform(k, np.arange(2000), 100)
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    # neighbouring rows and columns are not correlated
    assert abs(np.corrcoef(u[:-1].ravel(), u[1:].ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1]) < 0.01
    z = _random.normal(k, np.arange(2000), 100)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.mean(np.abs(z) > 1.96) - 0.05) < 0.004
    f = _random.uniform(k, np.arange(1000), 100, np.float32)
    assert f.max() < 1 and f.min() >= 0
    t = _random.integers(k, np.arange(30000), 7)
    np.testing.assert_allclose(np.bincount(t, minlength=7) / 30000, 1 / 7, atol=0.01)
    assert _random.key(1, "a") != _random.key(2, "a") != _random.key(1, "b")
    assert _random.key(None, "a") != _random.key(None, "a")  # fresh entropy each time


def test_row_offset_is_checked():
    for bad, err in ((-1, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError)):
        with pytest.raises(err, match="row_offset"):
            _random.check_offset(bad)


@pytest.fixture(scope="module")
def net(digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((20,), activation="tanh", max_iter=60, random_state=0).fit(X, y)
    return ff.from_sklearn(est), X[:150], y[:150]


ATTACKS = {
    "pgd-linf": lambda m, X, y, **k: ff.pgd(m, X, y, eps=0.1, steps=4, restarts=3, seed=5,
                                            clip=(0, 1), **k),
    "pgd-l2": lambda m, X, y, **k: ff.pgd(m, X, y, eps=0.8, norm=2, steps=4, restarts=2,
                                          seed=5, **k),
    "pgd-random-target": lambda m, X, y, **k: ff.pgd(m, X, y, eps=0.2, steps=3, seed=9,
                                                     target="random", clip=(0, 1), **k),
    "fgsm-random-target": lambda m, X, y, **k: ff.fgsm(m, X, y, eps=0.2, seed=9,
                                                       target="random", **k),
    "apgd": lambda m, X, y, **k: ff.apgd(m, X, y, eps=0.05, steps=8, restarts=2, seed=2,
                                         clip=(0, 1), **k),
    "apgd-t": lambda m, X, y, **k: ff.apgd(m, X, y, eps=0.05, steps=6, restarts=2, target=2,
                                           seed=2, clip=(0, 1), **k),
    "fab": lambda m, X, y, **k: ff.fab(m, X, y, steps=6, restarts=2, seed=4, clip=(0, 1), **k),
    "score_attack": lambda m, X, y, **k: ff.score_attack(m, X, y, eps=0.2, max_queries=150,
                                                         seed=3, **k),
    "hop_skip_jump": lambda m, X, y, **k: ff.hop_skip_jump(m, X, y, max_queries=200, seed=3,
                                                           clip=(0, 1), **k),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_pieces_with_row_offset_equal_the_whole_run(net, name):
    m, X, y = net
    whole = ATTACKS[name](m, X, y)
    cuts = [0, 1, 37, 100, len(X)]
    parts = [ATTACKS[name](m, X[a:b], y[a:b], row_offset=a) for a, b in zip(cuts, cuts[1:])]
    np.testing.assert_array_equal(np.vstack([p.x_adv for p in parts]), whole.x_adv)
    np.testing.assert_array_equal(np.concatenate([p.success for p in parts]), whole.success)
    np.testing.assert_array_equal(np.concatenate([p.iterations for p in parts]),
                                  whole.iterations)
    if whole.queries is not None:
        np.testing.assert_array_equal(np.concatenate([p.queries for p in parts]), whole.queries)
    # and without row_offset the pieces are different draws (the offset matters)
    if name not in ("score_attack",):
        shifted = ATTACKS[name](m, X[37:100], y[37:100])
        assert not np.array_equal(shifted.x_adv, whole.x_adv[37:100]) or name == "fab"


@pytest.mark.parametrize("name", ["pgd-linf", "apgd", "fab"])
def test_internal_row_chunks_do_not_change_results(net, name, monkeypatch):
    m, X, y = net
    whole = ATTACKS[name](m, X, y)
    monkeypatch.setattr(_common, "CHUNK_ELEMENTS", 64 * 23)  # 23-row chunks
    for mod in ("gradient", "apgd", "fab"):
        import importlib
        monkeypatch.setattr(importlib.import_module(f"fastfool.attacks.{mod}"),
                            "row_chunks", _common.row_chunks, raising=False)
    small = ATTACKS[name](m, X, y)
    np.testing.assert_array_equal(small.x_adv, whole.x_adv)
    np.testing.assert_array_equal(small.success, whole.success)


def test_template_default_step_is_per_row(net):
    m, X, _ = net
    whole = ff.template(m, X[:30], target=3, confidence=0.9, steps=20)
    parts = np.vstack([ff.template(m, X[a:a + 10], target=3, confidence=0.9, steps=20).x_adv
                       for a in (0, 10, 20)])
    np.testing.assert_array_equal(parts, whole.x_adv)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n, cols", [(0, 3), (1, 1), (7, 5000), (40000, 3), (3000, 64)])
def test_the_blocked_numpy_path_gives_the_generic_bits(dtype, n, cols):
    """uniform()'s in-place NumPy path (blocks of 32k elements) against the array-API formula
    the CuPy path uses (bits(), then the top 53 or 24 bits)."""
    k = _random.key(11, "blocked")
    rows = np.arange(1000, 1000 + n)
    b = _random.bits(k, rows, cols)
    want = (b >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24) if dtype == np.float32 \
        else (b >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    got = _random.uniform(k, rows, cols, dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)
