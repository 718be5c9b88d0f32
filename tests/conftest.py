"""Shared fixtures: SIMD paths, thread counts, array layouts, Hypothesis profiles.

Profiles (HYPOTHESIS_PROFILE): "default" keeps the README's command near a minute on 2 cores,
"ci" runs more examples, "dev" is a quick smoke.
"""

from __future__ import annotations

import contextlib
import os
import sys

# NumPy's OpenBLAS threads spin after every product (scikit-learn's fits and predictions here)
# and take the two cores from fastfool's own thread pool for a while (README's note): one
# OpenBLAS thread for the test process (29.7 -> 19.6 s for test_models + test_verdicts). Set
# before NumPy loads; fastfool's kernels keep their own threads (the `config` fixture).
if "numpy" not in sys.modules:
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # not OMP_NUM_THREADS: fastfool reads it
        os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import fastfool as ff
from fastfool import _core

# The config fixture (SIMD path, threads) is meant to hold for all examples of a test.
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
settings.register_profile("default", max_examples=10, deadline=None,
                          suppress_health_check=_SUPPRESS)
settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=_SUPPRESS)
settings.register_profile("dev", max_examples=8, deadline=None,
                          suppress_health_check=_SUPPRESS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits scaled to [0, 1]: (X (1797, 64), y)."""
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


@pytest.fixture(scope="session")
def digits_logreg(digits):
    """LogisticRegression(max_iter=500) on all of digits, fitted once for the whole run (treat
    it as read-only: several modules share it)."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence: the fit quality is not under test
        return LogisticRegression(max_iter=500).fit(X, y)


# Every path up to the detected one in CI (an AVX-512 CPU runs the AVX2 tables too); the
# README's command runs the portable path and the detected one (the AVX2 tables on an AVX-512
# CPU are also compared bit for bit with the AVX-512 ones in tests/test_avx512.py).
_ALL_PATHS = ["generic", "avx2", "avx512"]
SIMD_PATHS = AVAILABLE_PATHS = _ALL_PATHS[: _ALL_PATHS.index(_core.detected_simd()) + 1]
_FULL = os.environ.get("HYPOTHESIS_PROFILE", "default") == "ci"
if not _FULL and len(SIMD_PATHS) > 2:
    SIMD_PATHS = [SIMD_PATHS[0], SIMD_PATHS[-1]]
# In CI every kernel test runs on each SIMD path with 1 and 2 threads; the README's command
# runs the portable path on 1 thread and the detected one on 1 and 2 (the row split into
# blocks is the same code on every path).
CONFIGS = [(s, t) for s in SIMD_PATHS for t in (1, 2) if _FULL or s != "generic" or t == 1]
DTYPES = [np.float32, np.float64]


@contextlib.contextmanager
def simd(path):
    prev = ff.get_simd()
    ff.set_simd(path)
    try:
        yield
    finally:
        ff.set_simd(prev)


@pytest.fixture(params=CONFIGS, ids=[f"{s}-t{t}" for s, t in CONFIGS])
def config(request):
    """(simd path, threads); the path is active for the duration of the test."""
    path, threads = request.param
    with simd(path):
        yield path, threads


LAYOUTS = ["c", "f", "strided", "negative"]


def with_layout(a: np.ndarray, kind: str) -> np.ndarray:
    """The same values as `a` in another memory layout (a view the kernels read in place)."""
    if kind == "c":
        return np.ascontiguousarray(a)
    if kind == "f":
        return np.asfortranarray(a)
    if kind == "strided":
        big = np.zeros(tuple(2 * s + 1 for s in a.shape), dtype=a.dtype)
        sl = tuple(slice(1, None, 2) for _ in a.shape)
        big[sl] = a
        return big[sl]
    if kind == "negative":
        rev = tuple(slice(None, None, -1) for _ in a.shape)
        return np.ascontiguousarray(a[rev])[rev]
    raise ValueError(kind)


@st.composite
def arrays(draw, shape, dtype, scale=1.0):
    """Random normal values (seeded by Hypothesis) with a random layout."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(shape) * scale).astype(dtype)
    return with_layout(a, draw(st.sampled_from(LAYOUTS)))


# Sizes: 0, 1, odd sizes around the SIMD tiles (4, 6, 8, 16) and cache blocks (96 rows, 256 deep).
N_SIZES = st.one_of(st.sampled_from([0, 1, 5, 7, 95, 96, 97, 193]), st.integers(0, 300))
D_SIZES = st.one_of(st.sampled_from([1, 3, 17, 255, 256, 257, 1001]), st.integers(1, 2000))
C_SIZES = st.one_of(st.sampled_from([1, 2, 5, 15, 16, 17, 33]), st.integers(1, 50))
