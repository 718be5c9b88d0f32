"""The compiled copy of scikit-learn's tree classifiers (fastfool._trees, cpu/forest.cpp)
against scikit-learn's own predict / predict_proba and an independent NumPy walk of the trees,
over generated forests and query points (at the thresholds, next to them, huge, non-finite as
float32), dtypes and layouts; the binding's refusals; HopSkipJump asking the copy instead of
predict takes the same path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

import fastfool as ff
from fastfool import _core
from fastfool._trees import compiled_predict

import reference as R

KINDS = {
    "forest": lambda k, s, d: RandomForestClassifier(k, max_depth=d, random_state=s),
    "extra": lambda k, s, d: ExtraTreesClassifier(k, max_depth=d, random_state=s),
    "tree": lambda k, s, d: DecisionTreeClassifier(max_depth=d, random_state=s),
    "extra-tree": lambda k, s, d: ExtraTreeClassifier(max_depth=d, random_state=s),
    "leaves": lambda k, s, d: RandomForestClassifier(k, max_leaf_nodes=5, random_state=s),
}


def trees_of(est):
    return list(est.estimators_) if hasattr(est, "estimators_") else [est]


def arrays_of(est):
    """The per-tree arrays concatenated, as _trees packs them, for the NumPy reference."""
    parts = [t.tree_ for t in trees_of(est)]
    C = len(est.classes_)
    cat = lambda f: np.concatenate([f(p) for p in parts])  # noqa: E731
    offs = np.concatenate([[0], np.cumsum([p.node_count for p in parts])]).astype(np.int64)
    return (cat(lambda p: p.feature).astype(np.int64), cat(lambda p: p.threshold),
            cat(lambda p: p.children_left).astype(np.int64),
            cat(lambda p: p.children_right).astype(np.int64),
            np.ascontiguousarray(cat(lambda p: p.value[:, 0, :C])), offs)


@st.composite
def fitted(draw):
    kind = draw(st.sampled_from(sorted(KINDS)))
    D = draw(st.integers(1, 7))
    C = draw(st.integers(2, 5))
    n = draw(st.integers(C * 3, 90))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, D)) * draw(st.sampled_from([1.0, 1e-3, 1e4]))
    X = np.round(X, draw(st.sampled_from([1, 3, 8])))  # ties between samples: shared thresholds
    names = draw(st.sampled_from(["int", "sparse", "str"]))
    y = rng.integers(0, C, n)
    y[:C] = np.arange(C)
    if names == "sparse":
        y = np.array([3, 7, 11, 40, 41])[y]
    elif names == "str":
        y = np.array(["ant", "bee", "cat", "dog", "eel"])[y]
    est = KINDS[kind](draw(st.integers(1, 6)), seed, draw(st.sampled_from([None, 1, 3, 8])))
    return est.fit(X, y), X, rng


@st.composite
def queries(draw, X, est, rng):
    N = draw(st.sampled_from([0, 1, 3, 7, 64, 65, 301]))
    D = X.shape[1]
    thr = np.concatenate([t.tree_.threshold[t.tree_.feature >= 0] for t in trees_of(est)])
    how = draw(st.sampled_from(["data", "thresholds", "next-to", "huge", "mixed"]))
    lo, hi = X.min() - 1, X.max() + 1
    Q = rng.uniform(lo, hi, (N, D))
    if thr.size and how in ("thresholds", "next-to", "mixed"):
        Q = thr[rng.integers(0, thr.size, (N, D))]
        if how == "next-to":  # the float32 neighbours of the thresholds
            Q = np.nextafter(Q.astype(np.float32), rng.choice([-np.inf, np.inf], (N, D)).astype(
                np.float32)).astype(np.float64)
    if how in ("huge", "mixed") and N:
        Q.flat[rng.integers(0, Q.size, max(1, Q.size // 7))] = rng.choice(
            [3e38, -3e38, 1e300, -1e300, 1e-310, 0.0], max(1, Q.size // 7))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    with np.errstate(over="ignore"):
        Q = Q.astype(dtype)
    layout = draw(st.sampled_from(["c", "fortran", "reversed", "step"]))
    if layout == "fortran":
        Q = np.asfortranarray(Q)
    elif layout == "reversed":
        Q = Q[::-1]
    elif layout == "step":
        Q = np.repeat(Q, 2, axis=1)[:, ::2]
    return Q


@given(data=st.data())
def test_compiled_trees_decide_as_scikit_learn(data):
    est, X, rng = data.draw(fitted())
    c = compiled_predict(est)
    assert c is not None
    Q = data.draw(queries(X, est, rng))
    with np.errstate(over="ignore", invalid="ignore"):  # scikit-learn: 1e300 to float32, inf sums
        try:
            expect = est.predict(Q)
        except ValueError as e:  # no rows, or past float32's range: the copy asks the estimator
            with pytest.raises(ValueError, match=str(e)[:20]):
                c.predict(Q)
        else:
            np.testing.assert_array_equal(c.predict(Q), expect)
        Q32 = Q.astype(np.float32)
    if len(Q) and np.isfinite(Q32).all():
        idx_ref, proba_ref = R.tree_vote(*arrays_of(est), float(len(trees_of(est))), Q32)
        label, proba = np.empty(len(Q), np.int64), np.empty((len(Q), len(est.classes_)))
        view = Q32 if Q.flags.c_contiguous else np.asarray(Q32, order="F")[::1]
        c.forest.predict(view, label, proba, 2)
        np.testing.assert_array_equal(label, idx_ref)
        np.testing.assert_array_equal(proba, proba_ref)  # the same operations: the same bits
        if hasattr(est, "estimators_"):
            np.testing.assert_array_equal(proba, est.predict_proba(Q))
        for threads in (1, 3):
            l2 = np.empty(len(Q), np.int64)
            c.forest.predict(view, l2, None, threads)
            np.testing.assert_array_equal(l2, label)


def test_compiled_trees_read_strided_float32_in_place(digits):
    X, y = digits
    rf = RandomForestClassifier(7, random_state=0).fit(X[::3], y[::3])
    c = compiled_predict(rf)
    base = np.repeat(X[:101].astype(np.float32), 3, axis=1)[::-1]  # negative rows, step-3 columns
    view = base[:, 1::3]
    assert not view.flags.c_contiguous and not view.flags.f_contiguous
    out = np.empty(len(view), np.int64)
    c.forest.predict(view, out, None, 2)
    np.testing.assert_array_equal(rf.classes_[out], rf.predict(view))
    odd = _misaligned(X[:33].astype(np.float32))  # at an odd byte offset: copied, not misread
    assert not odd.flags.aligned
    np.testing.assert_array_equal(c.predict(odd), rf.predict(odd))


def _misaligned(a):
    """A copy of the float32 array `a` whose data starts one byte past an aligned address."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    out = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    return out


def test_only_the_exact_tree_classifiers_are_compiled(digits):
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = digits
    X, y = X[:200], y[:200]

    class Mine(RandomForestClassifier):
        def predict(self, Z):
            return np.zeros(len(Z), int)

    assert compiled_predict(Mine(3, random_state=0).fit(X, y)) is None  # may override predict
    assert compiled_predict(RandomForestClassifier(3)) is None  # not fitted
    assert compiled_predict(DecisionTreeClassifier()) is None
    assert compiled_predict(RandomForestClassifier(3).fit(X, np.c_[y, y % 2])) is None  # 2 outputs
    assert compiled_predict(GradientBoostingClassifier(n_estimators=2).fit(X, y)) is None
    assert compiled_predict(make_pipeline(StandardScaler(), RandomForestClassifier(3)).fit(X, y)) \
        is None
    assert compiled_predict(ff.LinearModel(np.ones((3, 64)), np.zeros(3))) is None
    c = compiled_predict(RandomForestClassifier(3, random_state=0).fit(X, y))
    # a row that is not finite as float32, and the wrong width: the estimator's own predict
    # (its labels, or its exception)
    for bad in (np.nan, 1e300):
        Z = X[:4].copy()
        Z[1, 5] = bad
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                expect = c.est.predict(Z)
            except ValueError as e:
                with pytest.raises(ValueError, match=str(e)[:20]):
                    c.predict(Z)
            else:
                np.testing.assert_array_equal(c.predict(Z), expect)
    with pytest.raises(ValueError, match="features"):
        c.predict(X[:3, :10])


def _one_tree():
    # root splits feature 1 at 0.5: left leaf (class 0), right leaf (class 1)
    return dict(feature=np.array([1, -2, -2]), threshold=np.array([0.5, -2.0, -2.0]),
                left=np.array([1, -1, -1]), right=np.array([2, -1, -1]),
                value=np.array([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]), offsets=np.array([0, 3]))


def _forest(**change):
    a = _one_tree()
    a.update(change)
    return _core.Forest(a["feature"], a["threshold"], a["left"], a["right"], a["value"],
                        a["offsets"], change.pop("features", 2), change.pop("divisor", 1.0))


def test_the_forest_binding_walks_and_refuses():
    f = _forest()
    assert (f.trees, f.classes, f.features, f.depths) == (1, 2, 2, [1])
    X = np.array([[9, 0.5], [9, np.nextafter(np.float32(0.5), np.float32(1))], [0, -1]],
                 np.float32)
    out = np.empty(3, np.int64)
    f.predict(X, out, None, 1)
    np.testing.assert_array_equal(out, [0, 1, 0])
    bad = [
        (dict(left=np.array([0, -1, -1])), "after their parent"),  # a loop onto itself
        (dict(right=np.array([3, -1, -1])), "after their parent"),  # outside the tree
        (dict(left=np.array([1, 2, -1])), "one child is -1"),
        (dict(feature=np.array([2, -2, -2])), "outside"),
        (dict(threshold=np.array([np.nan, 0, 0])), "NaN"),
        (dict(offsets=np.array([0, 2])), "offsets"),
        (dict(offsets=np.array([0, 0, 3])), "at least one node"),
        (dict(value=np.ones((2, 2))), "rows"),
        (dict(divisor=0.0), "divisor"),
        (dict(divisor=np.inf), "divisor"),
    ]
    for change, msg in bad:
        with pytest.raises(ValueError, match=msg):
            a = _one_tree()
            div = change.pop("divisor", 1.0)
            a.update(change)
            _core.Forest(a["feature"], a["threshold"], a["left"], a["right"], a["value"],
                         a["offsets"], 2, div)
    with pytest.raises(TypeError, match="feature"):
        a = _one_tree()
        _core.Forest(a["feature"].astype(np.int32), a["threshold"], a["left"], a["right"],
                     a["value"], a["offsets"], 2, 1.0)
    with pytest.raises(TypeError, match="X"):
        f.predict(X.astype(np.float64), out, None, 1)
    with pytest.raises(ValueError, match="columns"):
        f.predict(X[:, :1], out, None, 1)
    with pytest.raises(ValueError, match="label"):
        f.predict(X, np.empty(2, np.int64), None, 1)
    with pytest.raises(ValueError, match="proba"):
        f.predict(X, out, np.empty((3, 3)), 1)
    with pytest.raises(ValueError, match="threads"):
        f.predict(X, out, None, 0)
    with pytest.raises(ValueError, match="X: the data is not aligned"):
        f.predict(_misaligned(X), out, None, 1)


class _Predicts:
    """A classifier that only has the forest's predict (so HopSkipJump cannot compile it)."""

    def __init__(self, est):
        self.est = est

    def predict(self, Z):
        return self.est.predict(Z)


@pytest.mark.parametrize("norm", [2, "inf"])
def test_hsj_asks_the_compiled_trees_and_ends_where_predict_does(digits, norm):
    X, y = digits
    rf = ExtraTreesClassifier(15, random_state=1).fit(X[::2], y[::2])
    Xt, yt = X[1::2][:14], y[1::2][:14]
    kw = dict(norm=norm, max_queries=900, clip=(0, 1), seed=5, quantize=1 / 16)
    fast = ff.hop_skip_jump(rf, Xt, yt, **kw)
    slow = ff.hop_skip_jump(_Predicts(rf), Xt, yt, **kw)
    assert fast.extra["queried"] == "compiled trees" and slow.extra["queried"] == "predict"
    np.testing.assert_array_equal(fast.x_adv, slow.x_adv)
    np.testing.assert_array_equal(fast.queries, slow.queries)
    np.testing.assert_array_equal(fast.success, rf.predict(fast.x_adv) != yt)
    np.testing.assert_array_equal(fast.pred, rf.predict(fast.x_adv))
