"""Helpers shared by the bench/ scripts: the checkout's commit and an atomic JSON write."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def commit() -> str:
    """The checkout's short git commit ('unknown' outside one)."""
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                           cwd=HERE)
    except OSError:
        return "unknown"
    return r.stdout.strip() or "unknown"


def header(**extra) -> dict:
    """Date (UTC), machine, CPU count and commit for a results document."""
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "commit": commit(), **extra}


def write_json(path: str, doc: dict) -> None:
    """Write doc to path through a temporary file: a failed write leaves the old file whole."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=2, default=str)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {path}")


def median_time(fn, repeat):
    """(median seconds of ``repeat`` calls of fn after one warm-up call, the last output)."""
    import statistics
    import time
    fn()
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def digits_tanh_mlp():
    """digits scaled to [0, 1] (X, y) and an MLPClassifier 64-50-20-10 tanh fitted on all of it
    (the model of the scale-out benchmarks)."""
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((50, 20), activation="tanh", max_iter=300, random_state=0).fit(X, y)
    return X, y, est


def resampled_rows(X, y, n, rng):
    """n rows drawn from (X, y) with a little Gaussian noise, clipped to [0, 1]."""
    import numpy as np
    idx = rng.integers(0, len(X), n)
    return np.clip(X[idx] + rng.normal(0, 0.02, (n, X.shape[1])), 0, 1), y[idx]

