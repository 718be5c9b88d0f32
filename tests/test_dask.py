"""Attacks over Dask arrays (issue 21): lazy results equal to the in-memory run bit for bit
for several chunkings, on the threads scheduler and on a real two-process
``distributed.LocalCluster`` on loopback (started and closed by the test)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier

import fastfool as ff

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")


@pytest.fixture(scope="module")
def data(digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((20,), activation="tanh", max_iter=60, random_state=0).fit(X, y)
    rng = np.random.default_rng(0)  # 5000 rows: several blocks of 1000 and of 3333
    idx = rng.integers(0, len(X), 5000)
    Xb = np.clip(X[idx] + rng.normal(0, 0.02, (5000, X.shape[1])), 0, 1)
    return ff.from_sklearn(est), Xb, y[idx]


ATTACKS = {
    "pgd": lambda m, X, y: ff.pgd(m, X, y, eps=0.08, steps=4, restarts=2, seed=3, clip=(0, 1)),
    "fgsm": lambda m, X, y: ff.fgsm(m, X, y, eps=0.1, clip=(0, 1)),
    "deepfool": lambda m, X, y: ff.deepfool(m, X, y, max_iter=10),
    "score_attack": lambda m, X, y: ff.score_attack(m, X, y, eps=0.2, max_queries=60, seed=1),
}


def _same(lazy, ref):
    assert lazy.lazy and not ref.lazy
    res = lazy.compute()
    assert not res.lazy and res.n == ref.n
    for f in ("x_adv", "success", "pred", "confidence", "l2", "linf", "iterations", "queries",
              "y", "correct"):
        a, b = getattr(res, f), getattr(ref, f)
        assert (a is None) == (b is None), f
        if a is not None:
            np.testing.assert_array_equal(a, b, err_msg=f)
    return res


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_dask_attacks_equal_the_in_memory_run(data, name):
    m, X, y = data
    ref = ATTACKS[name](m, X, y)
    with dask.config.set(scheduler="threads"):
        for chunk in (1000, 3333):
            lazy = ATTACKS[name](m, da.from_array(X, chunks=(chunk, 16)), y)
            assert "lazy" in repr(lazy)
            res = _same(lazy, ref)
            assert res.params["dask_row_chunks"][0] == chunk
    # labels as a Dask array too, chunked differently from X
    with dask.config.set(scheduler="threads"):
        lazy = ATTACKS[name](m, da.from_array(X, chunks=(1000, 64)), da.from_array(y, chunks=777))
        _same(lazy, ref)


def test_dask_model_methods_and_refusals(data):
    m, X, y = data
    Xd = da.from_array(X, chunks=(1200, 64))
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(m.predict_proba(Xd).compute(), m.predict_proba(X))
        np.testing.assert_array_equal(m.predict(Xd).compute(), m.predict(X))
        G, L = m.loss_gradient(Xd, y, return_loss=True)
        G0, L0 = m.loss_gradient(X, y, return_loss=True)
        np.testing.assert_array_equal(G.compute(), G0)
        np.testing.assert_array_equal(L.compute(), L0)
        # a slice attacked as part of the whole array
        part = ff.pgd(m, Xd[1000:2500], y[1000:2500], eps=0.08, steps=3, seed=2,
                      row_offset=1000).compute()
        whole = ff.pgd(m, X, y, eps=0.08, steps=3, seed=2)
        np.testing.assert_array_equal(part.x_adv, whole.x_adv[1000:2500])
        # every field is a Dask array of its own too, block by block the in-memory result;
        # the graph's keys are the call's: the same call, the same keys, any other, new ones
        lazy = ff.pgd(m, Xd, y, eps=0.08, steps=3, seed=2)
        for f in ("x_adv", "success", "pred", "confidence", "l2", "linf", "iterations"):
            arr = getattr(lazy, f)
            assert arr.chunks[0] == Xd.chunks[0]
            np.testing.assert_array_equal(arr.compute(), getattr(whole, f), err_msg=f)
        assert ff.pgd(m, Xd, y, eps=0.08, steps=3, seed=2).x_adv.name == lazy.x_adv.name
        names = {ff.pgd(m, Xd, y, eps=0.08, steps=3, seed=3).x_adv.name,
                 ff.pgd(m, Xd, y, eps=0.09, steps=3, seed=2).x_adv.name,
                 ff.pgd(m, Xd[:, ::-1], y, eps=0.08, steps=3, seed=2).x_adv.name,
                 ff.fgsm(m, Xd, y, eps=0.08).x_adv.name, lazy.x_adv.name}
        assert len(names) == 5
    with pytest.raises(TypeError, match="universal"):
        ff.universal(m, Xd, y, eps=0.1)
    with pytest.raises(TypeError, match="row_offset"):
        ff.deepfool(m, Xd, y, row_offset=5)
    with pytest.raises(ValueError, match="labels"):
        ff.fgsm(m, Xd, y[:10], eps=0.1)


@pytest.mark.slow
def test_attacks_on_a_two_process_local_cluster(data, tmp_path):
    distributed = pytest.importorskip("distributed")
    m, X, y = data
    refs = {name: f(m, X, y) for name, f in ATTACKS.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cluster's own notices (ports, memory)
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None,
                                      local_directory=str(tmp_path)) as cluster, \
                distributed.Client(cluster) as client:
            assert len(client.scheduler_info()["workers"]) == 2
            for chunk in (1000, 3333):
                Xd = da.from_array(X, chunks=(chunk, 64))
                for name, f in ATTACKS.items():
                    _same(f(m, Xd, y), refs[name])
