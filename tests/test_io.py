"""Model files (save/load, malformed files), data loading (IDX, CSV, npz) and `fastfool attack`."""

from __future__ import annotations

import gzip
import warnings
import pickle
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC

import fastfool as ff
from fastfool.datasets import load_array, load_idx


@pytest.fixture(scope="module")
def models():
    X, y = load_digits(return_X_y=True)
    X = X / 16
    names = np.array(list("abcdefghij"))[y]
    keep = y < 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: fit quality is not under test
        return X, y, [
            ff.from_sklearn(LogisticRegression(max_iter=300).fit(X, names)),
            ff.from_sklearn(LogisticRegression(max_iter=300).fit(X[keep], y[keep]), dtype=np.float32),
            ff.from_sklearn(MLPClassifier((7, 5), activation="tanh", max_iter=50, random_state=0).fit(X, y)),
            ff.from_sklearn(SVC(kernel="poly", coef0=1).fit(X[keep], y[keep])),
        ]


def test_save_load_roundtrip(tmp_path, models):
    X, _, ms = models
    for i, m in enumerate(ms):
        path = tmp_path / f"m{i}.npz"
        ff.save_model(m, path)
        back = ff.load_model(path)
        assert type(back) is type(m) and back.dtype == m.dtype
        np.testing.assert_array_equal(back.classes_, m.classes_)
        np.testing.assert_array_equal(back.predict_proba(X), m.predict_proba(X))
        with np.load(path, allow_pickle=False) as f:  # loads without pickle
            assert str(f["format"]) == "fastfool.model" and int(f["version"]) == 1


def _write(path, **fields):
    np.savez(path, **fields)
    return path


def test_malformed_model_files_are_rejected(tmp_path, models):
    good = dict(format=np.array("fastfool.model"), version=np.array(1), dtype=np.array("float64"),
                classes=np.arange(3), kind=np.array("linear"), W=np.ones((3, 4)), b=np.zeros(3))
    cases = {
        "no format": ({k: v for k, v in good.items() if k != "format"}, "missing field 'format'"),
        "wrong format": ({**good, "format": np.array("other")}, "not a fastfool model"),
        "future version": ({**good, "version": np.array(99)}, "unsupported model format version 99"),
        "bad dtype": ({**good, "dtype": np.array("float16")}, "float32 or float64"),
        "bad kind": ({**good, "kind": np.array("forest")}, "unknown model kind 'forest'"),
        "shape mismatch": ({**good, "b": np.zeros(5)}, r"b: expected shape \(3,\)"),
        "nan weights": ({**good, "W": np.full((3, 4), np.nan)}, "W: contains NaN"),
        "classes mismatch": ({**good, "classes": np.arange(2)}, "classes: expected 3 labels"),
        "object array": ({**good, "W": np.array([object()] * 4, dtype=object)}, "without pickle"),
        "bad activation": (dict(format=np.array("fastfool.model"), version=np.array(1),
                                dtype=np.array("float64"), classes=np.arange(2), kind=np.array("mlp"),
                                n_layers=np.array(2), W0=np.ones((4, 3)), b0=np.zeros(3),
                                W1=np.ones((3, 2)), b1=np.zeros(2), activations=np.array(["gelu"])),
                           "unknown 'gelu'"),
        "missing layer": (dict(format=np.array("fastfool.model"), version=np.array(1),
                               dtype=np.array("float64"), classes=np.arange(2), kind=np.array("mlp"),
                               n_layers=np.array(3), W0=np.ones((4, 3)), b0=np.zeros(3),
                               W1=np.ones((3, 2)), b1=np.zeros(2), activations=np.array(["relu"])),
                          "missing field 'W2'"),
    }
    for name, (fields, msg) in cases.items():
        path = _write(tmp_path / f"{name.replace(' ', '_')}.npz", **fields)
        with pytest.raises(ValueError, match=msg):
            ff.load_model(path)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="not a"):
        ff.load_model(junk)
    with pytest.raises(FileNotFoundError):
        ff.load_model(tmp_path / "missing.npz")


def _write_idx(path, arr, code):
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def test_idx_csv_npz_loading(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    _write_idx(tmp_path / "images-idx3-ubyte", imgs, 0x08)
    np.testing.assert_array_equal(load_idx(tmp_path / "images-idx3-ubyte"), imgs)
    _write_idx(tmp_path / "f-idx2.gz", imgs[:, 0, :].astype(np.float32), 0x0D)
    np.testing.assert_array_equal(load_idx(tmp_path / "f-idx2.gz"), imgs[:, 0, :].astype(np.float32))
    bad = tmp_path / "bad-idx"
    bad.write_bytes(bytes([0, 0, 8, 2, 0, 0, 0, 5, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(ValueError, match="data bytes"):
        load_idx(bad)
    (tmp_path / "x.csv").write_text("1,2,3\n4,5,6\n")
    np.testing.assert_array_equal(load_array(tmp_path / "x.csv"), [[1, 2, 3], [4, 5, 6]])
    np.savez(tmp_path / "d.npz", X=np.ones((2, 2)), y=np.zeros(2))
    assert load_array(tmp_path / "d.npz").shape == (2, 2)
    assert load_array(tmp_path / "d.npz", name="y").shape == (2,)
    with pytest.raises(ValueError, match="unknown data format"):
        (tmp_path / "x.txt").write_text("1")
        load_array(tmp_path / "x.txt")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "fastfool", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_cli_attack_end_to_end(tmp_path, models):
    X, y, ms = models
    m = ms[2]  # the MLP
    ff.save_model(m, tmp_path / "m.npz")
    np.save(tmp_path / "X.npy", X[:100])
    np.save(tmp_path / "y.npy", y[:100])
    r = cli("attack", "--model", tmp_path / "m.npz", "--data", tmp_path / "X.npy", "--labels",
            tmp_path / "y.npy", "--attack", "pgd", "--eps", "0.1", "--clip", "0", "1", "--out",
            tmp_path / "adv.npz", "--format", "json")
    assert r.returncode == 0, r.stderr
    import json
    summary = json.loads(r.stdout)
    res = ff.AttackResult.load(tmp_path / "adv.npz")
    assert summary["rows"] == 100 and summary["success_rate"] == pytest.approx(res.success.mean())
    np.testing.assert_array_equal(res.pred, m.predict(res.x_adv))
    assert np.all(res.linf <= 0.1 + 1e-12)


@pytest.mark.slow
def test_cli_attack_refuses_pickles_and_bad_shapes(tmp_path, models):
    X, y, _ = models
    est = LogisticRegression(max_iter=200).fit(X, y)
    with open(tmp_path / "clf.pkl", "wb") as f:
        pickle.dump(est, f)
    np.save(tmp_path / "X.npy", X[:20])
    r = cli("attack", "--model", tmp_path / "clf.pkl", "--data", tmp_path / "X.npy", "--attack", "deepfool")
    assert r.returncode == 2 and "--trust-pickle" in r.stderr and "Traceback" not in r.stderr
    r = cli("attack", "--model", tmp_path / "clf.pkl", "--trust-pickle", "--data", tmp_path / "X.npy",
            "--attack", "deepfool")
    assert r.returncode == 0, r.stderr
    np.save(tmp_path / "X5.npy", X[:20, :5])
    r = cli("attack", "--model", tmp_path / "clf.pkl", "--trust-pickle", "--data", tmp_path / "X5.npy",
            "--attack", "fgsm", "--eps", "0.1")
    assert r.returncode == 2 and "expects 64" in r.stderr
    r = cli("attack", "--model", tmp_path / "nope.npz", "--data", tmp_path / "X.npy", "--attack", "fgsm")
    assert r.returncode == 2 and r.stderr.startswith("fastfool: error:")


def test_a_float32_model_keeps_its_float64_reference_through_a_file(tmp_path):
    """The verdict's reference (the float64 originals) survives save / load: same weights
    there, same float32 model, same decisions."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    X, y = load_digits(return_X_y=True)
    X = X / 16
    est = LogisticRegression(max_iter=300).fit(X[:800], y[:800])
    m = ff.from_sklearn(est, dtype=np.float32)
    ff.save_model(m, tmp_path / "m.npz")
    back = ff.load_model(tmp_path / "m.npz")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back._reference().coef_, est.coef_)
    np.testing.assert_array_equal(back.coef_, m.coef_)
    np.testing.assert_array_equal(back.predict(X), est.predict(X))


def _label_sets(rng):
    """Generated label sets of every kind scikit-learn or a fastfool model keeps in classes_."""
    k = int(rng.integers(2, 5))
    ints = rng.choice(np.arange(-50, 50), k, replace=False)
    yield np.array([True, False])
    for dt in (np.int8, np.int16, np.int64, np.uint8, np.uint32):
        yield np.sort(np.abs(ints) if np.dtype(dt).kind == "u" else ints).astype(dt)
    yield np.sort(rng.standard_normal(k))
    yield np.array(sorted(f"c{v}" for v in ints))
    yield np.array([int(v) for v in np.sort(ints)], dtype=object)
    yield np.array(sorted(f"label {v}" for v in ints), dtype=object)
    yield np.array([False, True], dtype=object)
    yield np.array([2**70, 2**71], dtype=object)  # beyond int64: refused (a float would lose them)


def test_every_label_kind_round_trips(tmp_path):
    """classes_ of every kind (bool, signed / unsigned ints, floats, strings, object arrays of
    Python ints / strings / bools) come back with the same values, dtype and Python types, in
    model files and in AttackResult files (y, pred, target, object arrays in extra)."""
    rng = np.random.default_rng(3)
    X = rng.uniform(0, 1, (25, 4))
    n_ok = 0
    for rep in range(3):
        for cls in _label_sets(rng):
            m = ff.LinearModel(rng.standard_normal((len(cls) if len(cls) > 2 else 1, 4)), classes=cls)
            path = tmp_path / f"m{rep}.npz"
            if cls.dtype == object and isinstance(cls[0], int) and cls[0] > 2**63:
                with pytest.raises(TypeError, match="classes: labels of types"):
                    ff.save_model(m, path)
                continue
            ff.save_model(m, path)
            back = ff.load_model(path).classes_
            assert back.dtype == cls.dtype and back.tolist() == cls.tolist(), (cls, back)
            assert [type(v) for v in back.tolist()] == [type(v) for v in cls.tolist()]
            res = ff.fgsm(m, X, eps=0.2, target="random", seed=rep)
            res.extra["tags"] = np.array([str(v) for v in range(len(X))], dtype=object)
            res.save(tmp_path / "r.npz")
            r2 = ff.AttackResult.load(tmp_path / "r.npz")
            for k in ("y", "pred", "target"):
                a, b = getattr(res, k), getattr(r2, k)
                assert a.dtype == b.dtype and a.tolist() == b.tolist(), (k, cls)
            assert r2.extra["tags"].dtype == object and r2.extra["tags"].tolist() == res.extra["tags"].tolist()
            n_ok += 1
    assert n_ok == 3 * 11


def test_unsaveable_values_are_refused_before_writing(tmp_path):
    rng = np.random.default_rng(4)
    m = ff.LinearModel(rng.standard_normal((3, 4)))
    res = ff.fgsm(m, rng.uniform(0, 1, (5, 4)), eps=0.1)
    res.save(tmp_path / "r.npz")
    before = (tmp_path / "r.npz").read_bytes()
    res.extra["bad"] = np.array([(1, 2), "x", None, 3.5, 4, 5], dtype=object)[:5]
    with pytest.raises(TypeError, match=r"extra\['bad'\]: labels of types"):
        res.save(tmp_path / "r.npz")
    assert (tmp_path / "r.npz").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.npz"]
