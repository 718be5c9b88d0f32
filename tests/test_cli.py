"""The command line: subcommands run, user mistakes give one line and exit code 2."""

from __future__ import annotations

import subprocess
import sys

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
