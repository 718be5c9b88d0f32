"""The audit report: its numbers agree with the estimator (the certified curve never above the
attacked one, per-row certified radii below the attack's distances, the fragile rows'
adversarial versions decided otherwise by the estimator's own predict); the HTML is
self-contained (sections, tables, embedded PNGs that decode to real, non-blank figures, no
external references); the JSON holds the same numbers; the CLI writes both."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import warnings
from html.parser import HTMLParser

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC

import fastfool as ff


@pytest.fixture(scope="module")
def split(digits):
    X, y = digits
    tr = np.arange(len(X)) % 3 != 0
    return X[tr], y[tr], X[~tr][:120], y[~tr][:120]


def _fit(kind, Xtr, ytr):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "logreg":
            return LogisticRegression(max_iter=500).fit(Xtr, ytr)
        if kind == "svm":
            return SVC(gamma=2.0, C=10).fit(Xtr, ytr)
        return MLPClassifier((30,), activation="relu", max_iter=150, random_state=0).fit(Xtr, ytr)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.imgs, self.tables, self.external = set(), [], {}, []
        self._table = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "table":
            self._table = a.get("id")
            self.tables[self._table] = 0
        if tag == "tr" and self._table is not None:
            self.tables[self._table] += 1
        for k in ("src", "href"):
            v = a.get(k)
            if v and not v.startswith(("data:", "#")):
                self.external.append(v)


def _check_png(src):
    assert src.startswith("data:image/png;base64,")
    data = base64.b64decode(src.split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    import matplotlib.image as mpimg
    img = mpimg.imread(io.BytesIO(data), format="png")
    assert img.shape[0] >= 200 and img.shape[1] >= 300
    assert float(np.std(img[..., :3])) > 0.02  # drawn on, not blank


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["logreg", "mlp", "svm"])
def test_audit_numbers_agree_with_the_estimator(split, kind):
    Xtr, ytr, X, y = split
    est = _fit(kind, Xtr, ytr)
    eps = [0.02, 0.05, 0.1]
    a = ff.audit(ff.from_sklearn(est), X, y, eps=eps, clip=(0, 1), steps=30, n_fragile=5,
                 figures=False)
    np.testing.assert_array_equal(a.eps, eps)
    assert a.clean_accuracy == pytest.approx(np.mean(est.predict(X) == y))
    np.testing.assert_array_equal(a.pred, est.predict(X))
    assert a.certified is not None
    assert np.all(a.certified <= a.attacked + 1e-12)
    assert np.all(np.diff(a.attacked) <= 1e-12)  # non-increasing in eps
    correct = a.pred == a.y
    assert np.all(a.certified_radius[correct] <= a.attack_distance[correct] * (1 + 1e-9))
    assert not any("INCONSISTENT" in n for n in a.notes)
    # the attacked curve counts rows no attack fooled within eps
    for e, v in zip(a.eps, a.attacked):
        assert v == pytest.approx(np.mean(correct & (a.attack_distance > e)))
    # the fragile rows: the smallest distances, decided otherwise by the estimator itself
    assert len(a.fragile) == 5
    d = np.abs(a.fragile_x_adv - X[a.fragile]).max(axis=1)
    np.testing.assert_allclose(d, a.attack_distance[a.fragile], rtol=1e-9)
    assert np.all(est.predict(a.fragile_x_adv) != y[a.fragile])
    np.testing.assert_array_equal(a.fragile_pred, est.predict(a.fragile_x_adv))
    rest = np.setdiff1d(np.flatnonzero(correct), a.fragile)
    assert a.attack_distance[a.fragile].max() <= a.attack_distance[rest].min()
    assert (a.far is not None) == (kind == "logreg")
    if kind == "logreg":
        assert all(f["found"] and f["confidence"] >= 0.99 for f in a.far)


@pytest.mark.slow
def test_the_html_is_self_contained_and_the_json_holds_the_same_numbers(split, tmp_path):
    Xtr, ytr, X, y = split
    est = _fit("mlp", Xtr, ytr)
    a = ff.audit(ff.from_sklearn(est), X, y, eps=[0.03, 0.06], clip=(0, 1), steps=30)
    paths = a.save(tmp_path / "r.html", tmp_path / "r.json")
    assert len(paths) == 2
    page = _Page()
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    page.feed(text)
    assert {"summary", "robust-accuracy", "radii", "fragile", "fingerprints"} <= page.ids
    assert page.tables["robust-table"] == 1 + 2
    assert page.tables["fragile-table"] == 1 + len(a.fragile)
    assert not page.external  # nothing fetched from the network
    assert len(page.imgs) == 3  # robustness, radii, fragile (8x8 images)
    for src in page.imgs:
        _check_png(src)
    assert a.meta["model_sha256"] in text and a.meta["data_sha256"] in text
    doc = json.loads((tmp_path / "r.json").read_text())
    np.testing.assert_allclose(doc["robust_accuracy_attacked"], a.attacked)
    np.testing.assert_allclose(doc["robust_accuracy_certified"], a.certified)
    assert doc["clean_accuracy"] == pytest.approx(a.clean_accuracy)
    assert doc["meta"]["fastfool_version"] == ff.__version__
    assert len(doc["per_row"]["attack_distance"]) == len(X)

@pytest.mark.slow

def test_fingerprints_follow_the_model_and_the_data(split):
    Xtr, ytr, X, y = split
    m1 = ff.from_sklearn(_fit("logreg", Xtr, ytr))
    m2 = ff.from_sklearn(_fit("logreg", Xtr[:-5], ytr[:-5]))
    kw = dict(eps=[0.05], figures=False, bounds=False, steps=5)
    a, b, c = ff.audit(m1, X, y, **kw), ff.audit(m2, X, y, **kw), ff.audit(m1, X[1:], y[1:], **kw)
    assert a.meta["model_sha256"] != b.meta["model_sha256"]
    assert a.meta["data_sha256"] == b.meta["data_sha256"] != c.meta["data_sha256"]
    assert a.meta["model_sha256"] == ff.audit(m1, X, y, **kw).meta["model_sha256"]
    assert a.certified is None and any("not computed" in n for n in a.notes)


def test_audit_refuses_bad_settings(split):
    Xtr, ytr, X, y = split
    m = ff.from_sklearn(_fit("logreg", Xtr, ytr))
    for eps in ([], [-0.1], [0.0], [np.nan]):
        with pytest.raises(ValueError, match="eps"):
            ff.audit(m, X, y, eps=eps)
    with pytest.raises(ValueError, match="image_shape"):
        ff.audit(m, X, y, eps=[0.1], image_shape=(7, 7))
    with pytest.raises(ValueError, match="clip"):
        ff.audit(m, X * 2, y, eps=[0.1], clip=(0, 1))


@pytest.mark.slow
def test_cli_audit_writes_the_report(split, tmp_path, capsys):
    from fastfool import cli
    Xtr, ytr, X, y = split
    m = ff.from_sklearn(_fit("mlp", Xtr, ytr))
    ff.save_model(m, tmp_path / "m.npz")
    np.save(tmp_path / "X.npy", X[:40])
    np.save(tmp_path / "y.npy", y[:40])
    out = tmp_path / "audit.html"
    argv = ["audit", str(tmp_path / "m.npz"), str(tmp_path / "X.npy"), "--labels",
            str(tmp_path / "y.npy"), "--eps", "0.05", "0.1", "--clip", "0", "1", "--steps",
            "20", "--out", str(out)]
    assert cli.main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    doc = json.loads((tmp_path / "audit.json").read_text())
    assert doc["meta"]["rows"] == 40 and doc["meta"]["model_file"] == "m.npz"
    assert re.search(r"<h1>fastfool robustness audit</h1>", out.read_text())
    before = out.read_bytes()
    bad = argv[:-1] + [str(tmp_path / "missing" / "a.html")]
    assert cli.main(bad) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(argv[:8] + ["-1"] + argv[10:]) == 2
    assert out.read_bytes() == before  # the failed runs left the report alone


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="no headless Chromium here")
def test_the_report_renders_in_a_headless_browser(split, tmp_path):
    Xtr, ytr, X, y = split
    a = ff.audit(ff.from_sklearn(_fit("logreg", Xtr, ytr)), X, y, eps=[0.05], steps=10)
    a.save(tmp_path / "r.html")
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    f"--screenshot={shot}", "--window-size=1000,2400",
                    f"file://{tmp_path / 'r.html'}"], check=True, timeout=120,
                   capture_output=True)
    _check_png("data:image/png;base64," + base64.b64encode(shot.read_bytes()).decode())
