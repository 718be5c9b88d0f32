"""The command line: subcommands run, user mistakes give one line and exit code 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import fastfool as ff


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "fastfool", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def test_info():
    r = run("info")
    assert r.returncode == 0, r.stderr
    assert f"fastfool {ff.__version__}" in r.stdout and "simd:" in r.stdout


@pytest.mark.slow
def test_demo_prints_the_attack_table_and_writes_figures(tmp_path):
    r = run("demo", "--quiet", "--out", tmp_path / "figs")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].split()[:2] == ["attack", "model"]
    assert len(lines) == 12  # header + 11 attacks
    rates = [float(line.split("%")[0].split()[-1]) for line in lines[1:]]
    assert all(0 <= r <= 100 for r in rates) and max(rates) == 100.0
    pngs = sorted(p.name for p in (tmp_path / "figs").glob("*.png"))
    assert pngs == ["backprojected_digits.png", "hidden_layer_map.png", "pgd_mlp_grid.png",
                    "robustness.png", "templates.png"]
    assert all((tmp_path / "figs" / p).stat().st_size > 5000 for p in pngs)


def test_user_mistakes_are_one_line_with_exit_code_2():
    r = run("demo", "--threads", "0", "--out", "")
    assert r.returncode == 2
    assert r.stderr.strip() == "fastfool: error: threads: must be >= 1, got 0"
    r = run("nonsense")
    assert r.returncode == 2 and "invalid choice" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_bench_quick_runs():
    r = run("bench", "--quick", "--only", "ce_grad_linear", "--repeats", "1")
    assert r.returncode == 0, r.stderr
    assert "ce_grad_linear" in r.stdout and "ceilings:" in r.stdout


@pytest.mark.slow
def test_more_mistakes_are_one_line_and_exit_2(capsys):
    """In-process (no interpreter start per case): --version, bench arguments checked before any
    timing, and the numbers argparse takes."""
    from fastfool import cli
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip().startswith("fastfool ")
    assert cli.main(["bench", "--only", "bogus,scoring"]) == 2
    err = capsys.readouterr()
    assert err.err.strip().startswith("fastfool: error: --only: no workload starts with 'bogus'")
    assert "ceilings" not in err.out  # refused before the timing started
    for bad in (["--repeats", "-3"], ["--repeats", "x"], ["--threads", "99999999999"]):
        with pytest.raises(SystemExit) as e:
            cli.main(["bench", *bad])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "Traceback" not in err and "expected a whole number" in err


def test_saving_and_loading_mistakes_name_the_problem(tmp_path):
    import fastfool as ff
    with pytest.raises(TypeError, match="model: expected a fastfool model"):
        ff.save_model("hello", tmp_path / "x.npz")
    cases = {"junk.npz": b"not a zip at all", "truncated.npz": b"PK\x03\x04\x14\x00garbage"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    np.savez(tmp_path / "badjson.npz", _header=np.array("{not json"))
    np.savez(tmp_path / "noheader.npz", x=np.zeros(3))
    np.savez(tmp_path / "wrongfields.npz", _header=np.array('{"format": "fastfool.AttackResult"}'))
    for name in ["junk.npz", "truncated.npz", "badjson.npz", "noheader.npz", "wrongfields.npz"]:
        with pytest.raises(ValueError) as info:
            ff.AttackResult.load(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name)), info.value
    with pytest.raises(FileNotFoundError):
        ff.AttackResult.load(tmp_path / "missing.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    for name in ["junk.npz", "truncated.npz", "noheader.npz", "single.npy", "."]:
        with pytest.raises(ValueError) as info:
            ff.load_model(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name)), info.value
    with pytest.raises(FileNotFoundError):
        ff.load_model(tmp_path / "missing.npz")


def test_attack_arguments_are_checked_before_work_and_read_like_the_api(tmp_path, capsys):
    """In-process: data paths that are folders or not gzip, --out a folder or in a missing
    folder (refused before the model is even loaded), --target not a class, --norm spelled as
    the API spells it, complex data refused and integer data converted with a note, and a
    truncated joblib with --trust-pickle: one line each, exit 2; the good spellings work."""
    import os
    import fastfool as ff
    from fastfool import cli
    rng = np.random.default_rng(0)
    ff.save_model(ff.LinearModel(rng.standard_normal((3, 4))), tmp_path / "m.npz")
    np.save(tmp_path / "X.npy", rng.uniform(0, 1, (10, 4)))
    np.save(tmp_path / "Xi.npy", (rng.uniform(0, 1, (10, 4)) * 255).astype(np.uint8))
    np.save(tmp_path / "Xc.npy", rng.uniform(0, 1, (10, 4)) + 1j)
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    (tmp_path / "t.joblib").write_bytes(b"\x80\x04\x95garbage")
    os.mkdir(tmp_path / "d.npy")
    base = ["attack", "--model", str(tmp_path / "m.npz"), "--attack", "fgsm", "--eps", "0.1"]
    X = ["--data", str(tmp_path / "X.npy")]
    bad = {
        "is a directory": ["--data", str(tmp_path / "d.npy")],
        "not a readable gzip IDX file": ["--data", str(tmp_path / "bad.gz")],
        "is a folder": X + ["--out", str(tmp_path)],
        "does not exist": X + ["--out", str(tmp_path / "nofolder" / "x.npz")],
        "not one of the model's classes": X + ["--target", "seven"],
        "complex values": ["--data", str(tmp_path / "Xc.npy")],
        "at most 1024 threads": X + ["--threads", "99999999999"],
    }
    for what, args in bad.items():
        assert cli.main(base + args) == 2, what
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and what in err and "Traceback" not in err, (what, err)
    assert cli.main(["attack", "--model", str(tmp_path / "t.joblib"), "--trust-pickle", *X,
                     "--attack", "fgsm", "--eps", "0.1"]) == 2
    assert "cannot be loaded as a joblib/pickle model" in capsys.readouterr().err
    # --out in a missing folder is refused before the model file is read
    assert cli.main(["attack", "--model", str(tmp_path / "missing.npz"), *X, "--attack", "fgsm",
                     "--eps", "0.1", "--out", str(tmp_path / "nofolder" / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    for norm in ("l2", "2", "linf", "inf"):
        assert cli.main(base + X + ["--norm", norm, "--format", "json"]) == 0, norm
        capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.main(base + X + ["--norm", "l7"])
    assert e.value.code == 2 and "expected inf (linf), 2 (l2)" in capsys.readouterr().err
    assert cli.main(base + X + ["--target", "2", "--out", str(tmp_path / "adv")]) == 0
    assert ff.AttackResult.load(tmp_path / "adv.npz").target.tolist() == [2] * 10
    capsys.readouterr()
    assert cli.main(base + ["--data", str(tmp_path / "Xi.npy"), "--scale", str(1 / 255)]) == 0
    assert "uint8 data converted to float64" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert cli.main(["demo", "--out", str(tmp_path / "afile")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_integer_settings_refuse_nan_inf_fractions_and_negatives():
    """steps / max_iter / restarts / sizes of every attack: NaN, inf, fractions, negatives
    and bools are refused naming the setting (before: OverflowError, or accepted)."""
    import fastfool as ff
    m = ff.LinearModel(np.random.default_rng(0).standard_normal((3, 4)))
    X = np.random.default_rng(1).uniform(0, 1, (6, 4))
    calls = {
        "steps": lambda v: ff.pgd(m, X, eps=0.1, steps=v),
        "restarts": lambda v: ff.pgd(m, X, eps=0.1, restarts=v),
        "max_iter": lambda v: ff.deepfool(m, X, max_iter=v),
        "n_per_class": lambda v: ff.far_points(m, X, n_per_class=v),
        "n_directions": lambda v: ff.far_points(m, X, n_directions=v),
        "max_doublings": lambda v: ff.far_points(m, X, max_doublings=v),
        "n": lambda v: ff.template(m, None, target=1, start="noise", n=v),
    }
    for name, call in calls.items():
        for v in (np.nan, np.inf, -np.inf, 2.5, -3, True, 2**40, "7"):
            if name == "max_doublings" and v == -3:
                v = -1
            with pytest.raises((ValueError, TypeError), match=name):
                call(v)
    for name, v in (("max_alpha", -1.0), ("max_alpha", np.nan), ("step_size", np.nan),
                    ("step_size", -1.0)):
        with pytest.raises(ValueError, match=name):
            ff.template(m, X, target=1, **{name: v})
    assert ff.pgd(m, X, eps=0.1, steps=np.int32(3), restarts=2.0).n == 6  # integral values work


class _Untrusted:
    """A type outside scikit-learn / NumPy / SciPy, for the .skops refusal."""


@pytest.mark.slow  # imports skops, onnx and torch: ~6 s
def test_safe_model_files_load_without_trust_pickle(tmp_path, capsys):
    """--model takes .skops (scikit-learn types only: a file naming another type is refused by
    name), .onnx and TorchScript .pt without --trust-pickle, and their verdicts are the saved
    object's; a torch.save'd module needs --trust-pickle."""
    import json
    import warnings
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from fastfool import cli
    X, y = load_iris(return_X_y=True)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    run = ["--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), "--attack",
           "pgd", "--eps", "0.3", "--format", "json", "--out", str(tmp_path / "adv.npz")]
    done = 0
    try:
        import skops.io as sio
    except ImportError:
        sio = None
    if sio is not None:
        sio.dump(est, tmp_path / "m.skops")
        assert cli.main(["attack", "--model", str(tmp_path / "m.skops"), *run]) == 0
        out = json.loads(capsys.readouterr().out)
        import fastfool as ff
        res = ff.AttackResult.load(tmp_path / "adv.npz")
        np.testing.assert_array_equal(res.pred, est.predict(res.x_adv))
        assert out["success_rate"] == pytest.approx(np.mean(est.predict(res.x_adv) != y))
        done += 1
        sio.dump({"est": est, "x": _Untrusted()}, tmp_path / "evil.skops")
        assert cli.main(["attack", "--model", str(tmp_path / "evil.skops"), *run]) == 2
        assert "_Untrusted" in capsys.readouterr().err
    try:
        import onnx  # noqa: F401
        import skl2onnx
    except ImportError:
        skl2onnx = None
    if skl2onnx is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onx = skl2onnx.to_onnx(est, X[:1].astype(np.float32), options={"zipmap": False})
        (tmp_path / "m.onnx").write_bytes(onx.SerializeToString())
        assert cli.main(["attack", "--model", str(tmp_path / "m.onnx"), *run]) == 0
        capsys.readouterr()
        done += 1
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch 2.13: TorchScript is deprecated (still loads)
            torch.jit.save(torch.jit.script(net), str(tmp_path / "m.pt"))
        assert cli.main(["attack", "--model", str(tmp_path / "m.pt"), *run]) == 0
        capsys.readouterr()
        import fastfool as ff
        res = ff.AttackResult.load(tmp_path / "adv.npz")
        with torch.no_grad():
            truth = net(torch.tensor(res.x_adv, dtype=torch.float32)).argmax(1).numpy()
        np.testing.assert_array_equal(res.pred, truth)
        torch.save(net, str(tmp_path / "eager.pt"))
        assert cli.main(["attack", "--model", str(tmp_path / "eager.pt"), *run]) == 2
        assert "TorchScript" in capsys.readouterr().err
        assert cli.main(["attack", "--model", str(tmp_path / "eager.pt"), "--trust-pickle", *run]) == 0
        capsys.readouterr()
        done += 1
    if done == 0:
        pytest.skip("none of skops, onnx + skl2onnx, torch is installed")


def test_cli_runs_apgd(tmp_path, capsys):
    import json
    import fastfool as ff
    from fastfool import cli
    rng = np.random.default_rng(0)
    m = ff.MLP([rng.standard_normal((6, 8)), rng.standard_normal((8, 4))], activation="tanh")
    ff.save_model(m, tmp_path / "m.npz")
    np.save(tmp_path / "X.npy", rng.uniform(0, 1, (30, 6)))
    base = ["attack", "--model", str(tmp_path / "m.npz"), "--data", str(tmp_path / "X.npy"),
            "--attack", "apgd", "--eps", "0.3", "--steps", "20", "--format", "json"]
    for extra in ([], ["--loss", "dlr", "--target", "2"]):
        assert cli.main(base + extra) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["attack"] == "apgd" and 0 <= out["success_rate"] <= 1
    assert cli.main(base + ["--target", "seven"]) == 2
    assert "--target for apgd" in capsys.readouterr().err


def test_cli_runs_autoattack_square_and_fmn(tmp_path, capsys):
    import json
    from fastfool import cli
    rng = np.random.default_rng(1)
    m = ff.MLP([rng.standard_normal((9, 8)), rng.standard_normal((8, 4))], activation="relu")
    ff.save_model(m, tmp_path / "m.npz")
    X = rng.integers(0, 9, (25, 9)) / 8  # on a grid of 1/8 (--quantize 0.125)
    np.save(tmp_path / "X.npy", X)
    base = ["attack", "--model", str(tmp_path / "m.npz"), "--data", str(tmp_path / "X.npy"),
            "--format", "json", "--clip", "0", "1", "--out", str(tmp_path / "r.npz")]
    for extra in (["--attack", "autoattack", "--eps", "0.2", "--steps", "10", "--queries", "50"],
                  ["--attack", "autoattack", "--eps", "0.2", "--aa-version", "rand", "--steps", "5"],
                  ["--attack", "autoattack", "--eps", "0.05", "--steps", "5", "--queries", "20",
                   "--aa-attack-all"],
                  ["--attack", "square", "--eps", "0.2", "--queries", "80"],
                  ["--attack", "fmn", "--norm", "1", "--steps", "20"],
                  ["--attack", "fmn", "--norm", "0", "--steps", "20"],
                  ["--attack", "fmn", "--norm", "2", "--steps", "20", "--target", "1"],
                  ["--attack", "fab", "--norm", "1", "--steps", "15"],
                  ["--attack", "fab", "--steps", "15", "--target", "2"],
                  ["--attack", "ddn", "--steps", "15"],
                  ["--attack", "apgd", "--eps", "0.2", "--norm", "1", "--steps", "10"],
                  ["--attack", "cw", "--norm", "2", "--steps", "15", "--target", "3"],
                  ["--attack", "universal", "--eps", "0.2", "--steps", "2"],
                  ["--attack", "fmn", "--steps", "20", "--quantize", "0.125"],
                  ["--attack", "apgd", "--eps", "0.2", "--steps", "10", "--quantize", "0.125"]):
        assert cli.main(base + extra) == 0, extra
        out = json.loads(capsys.readouterr().out)
        r = ff.AttackResult.load(tmp_path / "r.npz")
        assert out["attack"] == extra[1] and out["rows"] == 25
        assert r.linf.max() <= (0.2 + 1e-6 if extra[1] not in ("fmn", "fab", "ddn", "cw") else 1.0)
        np.testing.assert_array_equal(r.pred, m.predict(r.x_adv))
        if extra[1] == "autoattack" and "--aa-version" not in extra:
            assert r.params["skip_certified"] == ("--aa-attack-all" not in extra)
        if "--quantize" in extra:  # on X's grid of step 1/8
            k = (r.x_adv - X) * 8
            np.testing.assert_allclose(k, np.rint(k), atol=1e-9)
            assert r.params["quantize"] == 0.125
        if extra[1] == "autoattack":
            assert [s["attack"] for s in out["stages"]] == (["apgd-ce", "apgd-t", "fab-t",
                                                              "square"]
                                                            if "rand" not in extra else
                                                            ["apgd-ce", "apgd-dlr"])
    for bad, msg in ((["--attack", "square"], "--eps is required"),
                     (["--attack", "pgd", "--eps", "0.1", "--norm", "1"], "only fmn, fab and apgd"),
                     (["--attack", "fab", "--norm", "0"], "only fmn takes the L0"),
                     (["--attack", "fab", "--target", "random"], "one of the model's classes"),
                     (["--attack", "ddn", "--norm", "inf"], "--norm 2"),
                     (["--attack", "square", "--eps", "0.1", "--target", "1"], "untargeted"),
                     (["--attack", "fmn", "--target", "random"], "one of the model's classes"),
                     (["--attack", "fmn", "--quantize", "0"], "quantize"),
                     (["--attack", "template", "--target", "1", "--quantize", "0.1"], "--quantize")):
        assert cli.main(base + bad) == 2, bad
        assert msg in capsys.readouterr().err


def test_cli_runs_the_black_box_attacks_on_a_forest(tmp_path, capsys):
    """hop_skip_jump and score_attack only query the model: a pickled random forest (which
    from_sklearn does not convert) is attacked as itself; its own predict decides."""
    import json

    import joblib
    from sklearn.ensemble import RandomForestClassifier

    from fastfool import cli
    rng = np.random.default_rng(2)
    X = rng.uniform(0, 1, (60, 5))
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    rf = RandomForestClassifier(10, random_state=0).fit(X, y)
    joblib.dump(rf, tmp_path / "rf.joblib")
    np.save(tmp_path / "X.npy", X[:12])
    base = ["attack", "--model", str(tmp_path / "rf.joblib"), "--trust-pickle", "--data",
            str(tmp_path / "X.npy"), "--format", "json", "--clip", "0", "1",
            "--out", str(tmp_path / "r.npz")]
    for extra in (["--attack", "hop_skip_jump", "--queries", "400", "--norm", "2"],
                  ["--attack", "score_attack", "--eps", "0.3", "--queries", "100"]):
        assert cli.main(base + extra) == 0, extra
        out = json.loads(capsys.readouterr().out)
        r = ff.AttackResult.load(tmp_path / "r.npz")
        assert out["attack"] == extra[1] and r.queries.max() <= int(extra[3] if extra[1] == "hop_skip_jump" else extra[5])
        np.testing.assert_array_equal(r.success, rf.predict(r.x_adv) != rf.predict(X[:12]))
    # a gradient attack still needs a model fastfool converts
    assert cli.main(base + ["--attack", "fgsm", "--eps", "0.1"]) == 2
    assert "RandomForestClassifier" in capsys.readouterr().err
