"""Streaming from the command line (issue 21, item 4): ``fastfool attack --data X.npy --out
adv.npy`` chunk by chunk equals the in-memory attack bit for bit; Ctrl-C leaves a journal that
``--resume`` continues to the same bits; a previous output stays until the run completes;
mismatched resumes and stale journals are refused; peak memory stays bounded by the chunks."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier

import fastfool as ff
from fastfool import cli


@pytest.fixture(scope="module")
def files(digits, tmp_path_factory):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((20,), activation="tanh", max_iter=60, random_state=0).fit(X, y)
    m = ff.from_sklearn(est)
    d = tmp_path_factory.mktemp("stream")
    ff.save_model(m, d / "m.npz")
    np.save(d / "X.npy", X)
    np.save(d / "y.npy", y)
    return m, X, y, d


def _argv(d, out, *extra):
    return ["attack", "--model", str(d / "m.npz"), "--data", str(d / "X.npy"), "--labels",
            str(d / "y.npy"), "--out", str(out), "--format", "json", *extra]


PGD = ["--attack", "pgd", "--eps", "0.1", "--steps", "4", "--restarts", "2", "--seed", "3"]


@pytest.mark.parametrize("attack, flags, ref", [
    ("pgd", ["--attack", "pgd", "--eps", "0.1", "--steps", "4", "--seed", "3"],
     lambda m, X, y: ff.pgd(m, X, y, eps=0.1, steps=4, seed=3)),
    ("fgsm", ["--attack", "fgsm", "--eps", "0.1", "--target", "random", "--seed", "5",
              "--clip", "0", "1"],
     lambda m, X, y: ff.fgsm(m, X, y, eps=0.1, target="random", seed=5, clip=(0, 1))),
    ("deepfool", ["--attack", "deepfool"], lambda m, X, y: ff.deepfool(m, X, y, norm="inf")),
])
@pytest.mark.parametrize("chunk", ["250", "1000"])
def test_streaming_equals_the_in_memory_attack(files, tmp_path, capsys, attack, flags, ref, chunk):
    m, X, y, d = files
    out = tmp_path / "adv.npy"
    assert cli.main(_argv(d, out, *flags, "--chunk-rows", chunk)) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["chunks"] == -(-len(X) // int(chunk)) and s["rows"] == len(X)
    r = ref(m, X, y)
    np.testing.assert_array_equal(np.load(out), r.x_adv)
    assert s["success_rate"] == pytest.approx(r.success.mean())
    assert not (tmp_path / "adv.npy.partial").exists()
    assert not (tmp_path / "adv.npy.journal.json").exists()


def test_interrupt_then_resume_gives_the_same_bits(files, tmp_path, capsys, monkeypatch):
    m, X, y, d = files
    out = tmp_path / "adv.npy"
    np.save(out, np.zeros(3))  # an older result: it must survive the interrupted run
    before = out.read_bytes()
    flags = ["--attack", "pgd", "--eps", "0.1", "--steps", "4", "--seed", "3",
             "--chunk-rows", "300"]
    real = ff.pgd
    calls = []

    @functools.wraps(real)
    def flaky(*a, **k):
        calls.append(k.get("row_offset"))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ff, "pgd", flaky)
    assert cli.main(_argv(d, out, *flags)) == 130
    err = capsys.readouterr().err
    assert "--resume" in err and "interrupted after row 600" in err
    assert out.read_bytes() == before
    state = json.loads((tmp_path / "adv.npy.journal.json").read_text())
    assert state["done"] == 600
    # a plain rerun refuses to overwrite the waiting run; a changed resume is refused
    assert cli.main(_argv(d, out, *flags)) == 2
    assert "--resume" in capsys.readouterr().err
    changed = [f if f != "0.1" else "0.2" for f in flags]
    assert cli.main(_argv(d, out, *changed, "--resume")) == 2
    assert "different run" in capsys.readouterr().err
    monkeypatch.setattr(ff, "pgd", real)
    assert cli.main(_argv(d, out, *flags, "--resume")) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["resumed_at"] == 600
    whole = ff.pgd(m, X, y, eps=0.1, steps=4, seed=3)
    np.testing.assert_array_equal(np.load(out), whole.x_adv)
    assert s["success_rate"] == pytest.approx(whole.success.mean())
    assert calls == [0, 300, 600]
    assert not (tmp_path / "adv.npy.journal.json").exists()


def test_streaming_refusals(files, tmp_path, capsys):
    m, X, y, d = files
    for extra, msg in ((["--chunk-rows", "10"], "streaming writes x_adv"),
                       (["--resume"], "streaming writes x_adv")):
        assert cli.main(_argv(d, tmp_path / "r.npz", "--attack", "deepfool", *extra)) == 2
        assert msg in capsys.readouterr().err
    assert cli.main(_argv(d, tmp_path / "a.npy", "--attack", "deepfool", "--resume")) == 2
    assert "no interrupted run" in capsys.readouterr().err
    assert cli.main(_argv(d, tmp_path / "a.npy", "--attack", "deepfool", "--chunk-rows", "0")) == 2
    assert "--chunk-rows" in capsys.readouterr().err
    np.save(tmp_path / "F.npy", np.asfortranarray(X))
    argv = _argv(d, tmp_path / "a.npy", "--attack", "deepfool")
    argv[argv.index("--data") + 1] = str(tmp_path / "F.npy")
    assert cli.main(argv) == 2
    assert "Fortran" in capsys.readouterr().err


@pytest.mark.slow
def test_streaming_memory_stays_bounded(files, tmp_path):
    """A file several times the memory budget: the process's peak resident memory grows by a
    few chunks, not by the file (reads and writes are plain file I/O at offsets)."""
    m, X, y, d = files
    rng = np.random.default_rng(0)
    big = np.clip(X[rng.integers(0, len(X), 300_000)] + rng.normal(0, 0.01, (300_000, 64)),
                  0, 1)  # 154 MB
    np.save(tmp_path / "big.npy", big)
    del big
    code = (  # VmHWM / VmRSS: this process's own (ru_maxrss carries the parent's across exec)
        "import sys\n"
        "from fastfool import cli\n"
        "import numpy\n"
        "def vm(key):\n"
        "    return [int(ln.split()[1]) for ln in open('/proc/self/status') if ln.startswith(key)][0]\n"
        "base = vm('VmRSS')\n"
        f"rc = cli.main(['attack', '--model', {str(d / 'm.npz')!r}, '--data', "
        f"{str(tmp_path / 'big.npy')!r}, '--attack', 'fgsm', '--eps', '0.05', '--out', "
        f"{str(tmp_path / 'adv.npy')!r}, '--memory-mb', '16', '--format', 'json'])\n"
        "peak = vm('VmHWM')\n"
        "print('GROWTH_KB', peak - base, rc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("GROWTH_KB")]
    assert line, out.stderr[-2000:]
    growth_kb, rc = int(line[0].split()[1]), int(line[0].split()[2])
    assert rc == 0
    assert growth_kb < 80_000, growth_kb  # well below the 154 MB file
    assert np.load(tmp_path / "adv.npy", mmap_mode="r").shape == (300_000, 64)


def test_zarr_in_and_out_with_a_resume(files, tmp_path, capsys, monkeypatch):
    zarr = pytest.importorskip("zarr")
    m, X, y, d = files
    z = zarr.open_array(store=str(tmp_path / "X.zarr"), mode="w", shape=X.shape, chunks=(500, 64),
                        dtype=X.dtype)
    z[:] = X
    out = tmp_path / "adv.zarr"
    flags = ["--attack", "pgd", "--eps", "0.1", "--steps", "3", "--seed", "1", "--chunk-rows",
             "400"]
    argv = _argv(d, out, *flags)
    argv[argv.index("--data") + 1] = str(tmp_path / "X.zarr")
    real = ff.pgd
    n = []

    @functools.wraps(real)
    def flaky(*a, **k):
        n.append(1)
        if len(n) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ff, "pgd", flaky)
    assert cli.main(argv) == 130
    monkeypatch.setattr(ff, "pgd", real)
    assert cli.main(argv + ["--resume"]) == 0
    capsys.readouterr()
    whole = ff.pgd(m, X, y, eps=0.1, steps=3, seed=1)
    np.testing.assert_array_equal(zarr.open_array(store=str(out), mode="r")[:], whole.x_adv)
    # a second run replaces the store (the old one moved aside, then removed)
    assert cli.main(argv) == 0
    np.testing.assert_array_equal(zarr.open_array(store=str(out), mode="r")[:], whole.x_adv)
    assert not (tmp_path / "adv.zarr.old").exists() and not (tmp_path / "adv.zarr.partial").exists()
