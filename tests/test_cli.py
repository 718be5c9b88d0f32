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
