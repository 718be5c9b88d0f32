"""The CUDA backend.

Three layers of checks:
- always: the build/availability report and the errors a user without a GPU gets;
- always, on an emulated device (tests/fake_gpu.py: NumPy stand-ins for CuPy and for the launch
  functions): fastfool.cuda's orchestration, Model.to("cuda") and the GPU attack loops give the
  CPU results - this checks the host-side logic, not the CUDA kernels;
- on a real GPU only (skipped otherwise): every CUDA kernel and the GPU attacks against the
  NumPy references and the CPU results, both dtypes, odd sizes, large N.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastfool as ff
from fastfool import cuda
from fastfool import kernels as K

import reference as ref

GPU = cuda.available()
needs_gpu = pytest.mark.skipif(not GPU, reason="no usable GPU (CuPy + a CUDA device)")


# ---- always ---------------------------------------------------------------------------------------
def test_report_is_consistent():
    assert isinstance(cuda.info(), str) and cuda.info()
    n = cuda.device_count()
    assert n >= 0
    if not cuda.built():
        assert n == 0 and not cuda.available()


@pytest.mark.skipif(GPU, reason="checks the errors of a machine without a GPU")
def test_without_a_gpu_the_errors_are_clear():
    m = ff.LinearModel(np.eye(3, 4))
    with pytest.raises((RuntimeError, ImportError), match="CUDA"):
        m.to("cuda")
    with pytest.raises(ValueError, match="device"):
        m.to("tpu")
    assert m.to("cpu") is m


def test_gpu_array_into_a_cpu_model_is_refused():
    class DeviceArray:  # anything exposing __cuda_array_interface__ (CuPy, Numba, torch)
        __cuda_array_interface__ = {"shape": (2, 4), "typestr": "<f4", "data": (0, False),
                                    "version": 3}

    m = ff.LinearModel(np.eye(3, 4))
    with pytest.raises(TypeError, match="one device"):
        m.predict(DeviceArray())


# ---- the binding's DeviceView checks (the compiled module itself; no GPU needed) ----------------
needs_module = pytest.mark.skipif(not cuda.built(), reason="built without the CUDA module")


class _Stream:
    ptr = 0


def _dev(shape, dtype=np.float32):
    import fake_gpu  # host memory exposing __cuda_array_interface__ (the checks only read it)
    return np.zeros(shape, dtype).view(fake_gpu.FakeArray)


def _calls(M=3, K=4, N=5, dt=np.float32):
    """Each binding with valid arguments: name -> (function name, kwargs, output argument names)."""
    d = lambda *s, dtype=dt: _dev(s, dtype)
    return {
        "gemm": ("gemm", dict(A=d(M, K), B=d(K, N), C=d(M, N), trans_b=False, bias=d(N)), ["C"]),
        "gemm_step": ("gemm", dict(A=d(M, K), B=d(N, K), C=d(M, N), trans_b=True, mode=2, X=d(M, N),
                                   X0=d(M, N), lo=d(N), hi=d(N)), ["C"]),
        "gemm_deriv": ("gemm", dict(A=d(M, K), B=d(K, N), C=d(M, N), trans_b=False, mode=1, act=2,
                                    H=d(M, N)), ["C"]),
        "row_softmax": ("row_softmax", dict(S=d(M, N), mode=1), ["S"]),
        "ce_rows": ("ce_rows", dict(S=d(M, N), y=d(M, dtype=np.int64), loss=d(M), prob=d(M, N)),
                    ["S", "loss", "prob"]),
        "inverse_act": ("inverse_act", dict(H=d(M, K), Z=d(M, K), bias=d(K), act=2, margin=1e-6,
                                            counter=d(1, dtype=np.uint64)), ["Z", "counter"]),
        "fused_update": ("fused_update", dict(X=d(M, K), G=d(M, K), X0=d(M, K), out=d(M, K), l2=True,
                                              alpha=0.1, eps=1.0, lo=d(K), hi=d(K)), ["out"]),
        "diff_norms": ("diff_norms", dict(A=d(M, K), B=d(M, K), l2=d(M), linf=d(M)), ["l2", "linf"]),
    }


def _run(fn, kw):
    from fastfool import _cuda
    return getattr(_cuda, fn)(**kw, device=0, stream=_Stream())


@needs_module
def test_device_view_reads_the_interface():
    from fastfool import _cuda
    for shape, dt in [((3, 4), np.float32), ((0, 7), np.float64), ((5,), np.int64), ((1, 1), np.uint64)]:
        a = _dev(shape, dt)
        info = _cuda.view_info(a)
        assert info["shape"] == shape and info["typestr"] == np.dtype(dt).str
        assert info["ptr"] == a.__array_interface__["data"][0] and info["readonly"] is False
    assert _cuda.view_info(None) is None
    with pytest.raises(TypeError, match="C-contiguous"):
        _cuda.view_info(_dev((4, 6))[:, ::2])
    with pytest.raises(TypeError, match="__cuda_array_interface__"):
        _cuda.view_info(np.zeros((2, 2), np.float32))  # host NumPy: no interface

    class Masked:
        __cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (64, False), "version": 3,
                                    "mask": object()}

    class Null:
        __cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (0, False), "version": 3}

    class Broken:
        __cuda_array_interface__ = {"shape": "nope", "typestr": "<f4", "data": (64, False)}

    for obj, msg in [(Masked(), "masked"), (Null(), "null data pointer"), (Broken(), "unreadable")]:
        with pytest.raises(TypeError, match=msg):
            _cuda.view_info(obj)


@needs_module
@pytest.mark.skipif(GPU, reason="valid host-memory views reach the launch only without a GPU")
@pytest.mark.parametrize("case", list(_calls()))
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_every_binding_checks_every_array_before_the_launch(case, dt):
    """Generated mutations of each argument (wrong dtype, wrong shape, not contiguous, read-only
    output, missing, not a CUDA array): each raises an error naming that argument; the valid call
    gets as far as the launch (no GPU here: RuntimeError)."""
    fn, kw, outs = _calls(dt=dt)[case]
    shape_leaders = {"A", "B"} if fn == "gemm" else set()  # B fixes a product's output width
    with pytest.raises(RuntimeError, match="no usable GPU"):
        _run(fn, kw)
    arrays = [k for k, v in kw.items() if isinstance(v, np.ndarray)]
    for name in arrays:
        a = kw[name]
        other = np.float64 if a.dtype == np.float32 else np.float32
        bigger = _dev(a.shape[:-1] + (a.shape[-1] + 1,), a.dtype)
        strided = _dev(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)[..., ::2]
        mutants = [(a.astype(other).view(type(a)), TypeError, "dtype|float32 or float64"),
                   (bigger, ValueError, "shape"),
                   (strided, TypeError, "C-contiguous"),
                   (np.asarray(a).copy(), TypeError, "CUDA array")]
        if name in outs:
            ro = a.copy()
            ro.flags.writeable = False
            mutants.append((ro, ValueError, "read-only"))
        for k, (bad, err, msg) in enumerate(mutants):
            if bad is strided and a.shape[-1] == 1:
                continue  # a strided view of one element is contiguous
            if k < 2 and len(arrays) == 1:
                continue  # a lone array's dtype and extents are free
            with pytest.raises(err, match=msg) as info:
                _run(fn, {**kw, name: bad})
            # the first array fixes the dtype and extents: changing those makes another mismatch
            leads = name == arrays[0] if k == 0 else (name == arrays[0] or name in shape_leaders)
            named = arrays if (k < 2 and leads) else [name]
            assert str(info.value).split(":")[0] in named, (name, info.value)
    with pytest.raises(TypeError, match="stream"):
        from fastfool import _cuda
        getattr(_cuda, fn)(**kw, device=0, stream=0)  # a bare integer is not a stream


@needs_gpu
def test_host_memory_posing_as_device_memory_is_refused():
    import cupy as cp
    from fastfool import _cuda
    A, C = cp.zeros((3, 4), cp.float32), cp.zeros((3, 5), cp.float32)
    s = cp.cuda.get_current_stream()
    with pytest.raises(ValueError, match="B: is not CUDA device memory"):
        _cuda.gemm(A, _dev((4, 5)), C, trans_b=False, device=A.device.id, stream=s)
    _cuda.gemm(A, cp.ones((4, 5), cp.float32), C, trans_b=False, device=A.device.id, stream=s)
    assert float(C.sum()) == 0.0


# ---- emulated device ------------------------------------------------------------------------------
@pytest.fixture
def fake(monkeypatch):
    import fake_gpu
    return fake_gpu.install(monkeypatch)


def _mlp(dtype, act="tanh", sizes=(7, 9, 5, 4)):
    rng = np.random.default_rng(3)
    Ws = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype) for a, b in zip(sizes, sizes[1:])]
    bs = [rng.standard_normal(b).astype(dtype) * 0.1 for b in sizes[1:]]
    return ff.MLP(Ws, bs, activation=act, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_emulated_kernels_match_the_cpu(fake, dtype):
    cp, dev = fake
    rng = np.random.default_rng(0)
    X = rng.standard_normal((13, 7)).astype(dtype)
    W = rng.standard_normal((5, 7)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    y = rng.integers(0, 5, 13)
    g = cp.asarray
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for ep in (None, "softmax", "log_softmax"):
        S = K.scores(g(X), g(W), g(b), epilogue=ep)
        assert type(S).__module__.startswith("cupy")
        np.testing.assert_allclose(S.get(), K.scores(X, W, b, epilogue=ep), **tol)
    G, loss, P = K.ce_grad_linear(g(X), g(W), g(b), y, return_prob=True)
    G0, loss0, P0 = K.ce_grad_linear(X, W, b, y, return_prob=True)
    for a, a0 in ((G, G0), (loss, loss0), (P, P0)):
        np.testing.assert_allclose(a.get(), a0, **tol)
    m = _mlp(dtype)
    Ws, bs = m.coefs_, m.intercepts_
    acts = ["tanh", "relu", "identity"]
    np.testing.assert_allclose(K.mlp_forward(g(X), [g(w) for w in Ws], [g(v) for v in bs], acts).get(),
                               K.mlp_forward(X, Ws, bs, acts), **tol)
    o = cp.asarray(np.zeros((13, 4), dtype))
    r = K.mlp_forward(g(X), [g(w) for w in Ws], [g(v) for v in bs], acts, epilogue="softmax", out=o)
    assert r is o  # written in place by the last layer's product
    np.testing.assert_allclose(o.get(), K.mlp_forward(X, Ws, bs, acts, epilogue="softmax"), **tol)
    yy = rng.integers(0, 4, 13)
    G, loss = K.ce_grad_mlp(g(X), [g(w) for w in Ws], [g(v) for v in bs], acts, yy)
    G0, loss0 = K.ce_grad_mlp(X, Ws, bs, acts, yy)
    np.testing.assert_allclose(G.get(), G0, **tol)
    np.testing.assert_allclose(loss.get(), loss0, **tol)
    for norm in ("inf", 2):
        for q in (0.0, 0.01):
            kw = dict(step=0.05, eps=0.1, norm=norm, clip=(-1.0, 1.5), quantum=q)
            X0 = np.clip(X, -1, 1.5)
            out = K.ce_step_mlp(g(X0), [g(w) for w in Ws], [g(v) for v in bs], acts, yy, g(X0), **kw)
            np.testing.assert_allclose(out.get(), K.ce_step_mlp(X0, Ws, bs, acts, yy, X0, **kw), **tol)
            out = K.ce_step_linear(g(X0), g(W), g(b), y, g(X0), **kw)
            np.testing.assert_allclose(out.get(), K.ce_step_linear(X0, W, b, y, X0, **kw), **tol)
    # the L-inf step is fused into the last product's epilogue; L2 takes the update kernel
    dev.calls.clear()
    K.ce_step_linear(g(X), g(W), g(b), y, g(X), step=0.1, eps=0.2)
    assert ("gemm", 2, False) in dev.calls and not any(c[0] == "update" for c in dev.calls)
    dev.calls.clear()
    K.ce_step_linear(g(X), g(W), g(b), y, g(X), step=0.1, eps=0.2, norm=2)
    assert ("update", True) in dev.calls
    l2, linf = K.diff_norms(g(X), g(X * 0.5))
    l2c, linfc = K.diff_norms(X, X * 0.5)
    np.testing.assert_allclose(l2.get(), l2c, **tol)
    np.testing.assert_allclose(linf.get(), linfc, **tol)
    Xt = X.copy()
    Xt[2, 3] = Xt[2].max()  # a tie: the first column wins on both
    idx, val = K.argmax_rows(g(Xt))
    idx0, val0 = K.argmax_rows(Xt)
    np.testing.assert_array_equal(np.asarray(idx.get()), idx0)
    np.testing.assert_array_equal(np.asarray(val.get()), val0)


def test_emulated_kernel_svm_stays_on_the_cpu(fake):
    from sklearn.datasets import load_iris
    from sklearn.svm import SVC
    X, y = load_iris(return_X_y=True)
    keep = y > 0
    svm = ff.from_sklearn(SVC(kernel="rbf").fit(X[keep], y[keep]))
    with pytest.raises(NotImplementedError, match="CPU only"):
        svm.to("cuda")


def test_emulated_mixed_inputs_are_refused(fake):
    cp, _ = fake
    X = np.ones((3, 4))
    with pytest.raises(TypeError, match="CuPy"):
        K.scores(cp.asarray(X), np.ones((2, 4)))
    with pytest.raises(TypeError, match="dtype"):
        K.scores(cp.asarray(X), cp.asarray(np.ones((2, 4), np.float32)))
    with pytest.raises(ValueError, match="y"):
        K.ce_grad_linear(cp.asarray(X), cp.asarray(np.ones((2, 4))), None, np.array([0, 1, 2]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_emulated_gpu_model_matches_the_cpu_model(fake, dtype, tmp_path):
    cp, _ = fake
    rng = np.random.default_rng(1)
    X = rng.standard_normal((11, 7)).astype(dtype)
    y = rng.integers(0, 4, 11)
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-12)
    binary = ff.LinearModel(rng.standard_normal((1, 7)), 0.3, classes=["no", "yes"], dtype=dtype)
    for m in (_mlp(dtype), ff.LinearModel(rng.standard_normal((4, 7)), dtype=dtype), binary):
        gm = m.to("cuda")
        assert gm.device == "cuda" and m.device == "cpu" and gm.to("cpu") is m
        Xg = cp.asarray(X)
        np.testing.assert_allclose(gm.predict_proba(Xg).get(), m.predict_proba(X), **tol)
        np.testing.assert_allclose(gm.predict_log_proba(Xg).get(), m.predict_log_proba(X), **tol)
        np.testing.assert_array_equal(np.asarray(gm.predict(Xg)), m.predict(X))
        yl = m.classes_[y % m.n_classes]
        np.testing.assert_allclose(gm.loss_gradient(Xg, yl).get(), m.loss_gradient(X, yl), **tol)
        with pytest.raises(TypeError, match="CuPy"):
            gm.predict(X)  # NumPy into a GPU model
        with pytest.raises(ValueError, match="NaN"):
            gm.predict(cp.asarray(np.full((2, 7), np.nan, dtype)))
        with pytest.raises(NotImplementedError, match="to\\('cpu'\\)"):
            ff.minimal(gm, Xg)  # an attack still CPU-only
    m = _mlp(dtype, act="tanh")
    gm = m.to("cuda")
    ff.save_model(gm, tmp_path / "gm.npz")  # written from the CPU copy
    np.testing.assert_array_equal(ff.load_model(tmp_path / "gm.npz").coefs_[0], m.coefs_[0])
    H = np.clip(m.hidden(X, -1), -0.99, 0.99)
    xb, n = gm.backproject(cp.asarray(H), -1, return_clamped=True)
    xc, nc = m.backproject(H, -1, return_clamped=True)
    np.testing.assert_allclose(xb.get(), xc, **tol)
    assert n == nc


@pytest.mark.parametrize("norm", ["inf", 2])
def test_emulated_gpu_attacks_match_the_cpu(fake, norm):
    cp, _ = fake
    rng = np.random.default_rng(2)
    m = _mlp(np.float64)
    X = rng.uniform(0, 1, (40, 7))
    gm, Xg = m.to("cuda"), cp.asarray(X)
    cases = [
        (ff.fgsm, dict(eps=0.3, norm=norm)),
        (ff.fgsm, dict(eps=0.3, norm=norm, target=2, clip=(0, 1))),
        (ff.fgsm, dict(eps=0.3, norm=norm, quantize=1 / 255, clip=(0, 1))),
        (ff.pgd, dict(eps=0.3, norm=norm, steps=5, random_start=False)),
        (ff.pgd, dict(eps=0.3, norm=norm, steps=5, random_start=False, early_stop=True)),
        (ff.pgd, dict(eps=0.3, norm=norm, steps=4, random_start=False, target="least_likely",
                      clip=(0, 1))),
    ]
    for attack, kw in cases:
        r_gpu, r_cpu = attack(gm, Xg, **kw), attack(m, X, **kw)
        assert type(r_gpu.x_adv).__module__.startswith("cupy")
        np.testing.assert_allclose(r_gpu.x_adv.get(), r_cpu.x_adv, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(r_gpu.success, r_cpu.success)
        np.testing.assert_array_equal(r_gpu.iterations, r_cpu.iterations)
        np.testing.assert_allclose(r_gpu.l2, r_cpu.l2, rtol=1e-9, atol=1e-12)
        assert r_gpu.summary()["success_rate"] == r_cpu.summary()["success_rate"]
    # written once for both devices: every target kind, the same rows as the CPU
    for attack, kw in [(ff.fgsm, dict(eps=0.3, norm=norm, target="all")),
                       (ff.pgd, dict(eps=0.3, norm=norm, steps=3, random_start=False, target="all")),
                       (ff.pgd, dict(eps=0.3, norm=norm, steps=3, random_start=False,
                                     target="random", seed=5))]:
        r_gpu, r_cpu = attack(gm, Xg, **kw), attack(m, X, **kw)
        np.testing.assert_allclose(r_gpu.x_adv.get(), r_cpu.x_adv, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(r_gpu.target, r_cpu.target)
        np.testing.assert_array_equal(r_gpu.success, r_cpu.success)
        assert r_gpu.extra["device"] == "cuda:0"
    # random starts and restarts: different generators than the CPU, same guarantees
    r = ff.pgd(gm, Xg, eps=0.2, norm=norm, steps=3, restarts=2, seed=0, clip=(0, 1))
    lim = r.linf if norm == "inf" else r.l2
    assert np.all(lim <= 0.2 * (1 + 1e-9)) and np.all((r.x_adv.get() >= 0) & (r.x_adv.get() <= 1))
    with pytest.raises(ValueError, match="clip"):
        ff.fgsm(gm, cp.asarray(X + 2), eps=0.1, clip=(0, 1))


@pytest.mark.parametrize("norm", ["inf", 2])
def test_emulated_gpu_apgd_matches_the_cpu(fake, norm):
    """APGD written once for both devices: on the emulated device the same iterates, verdicts
    and iterations as on the CPU (CE and DLR, untargeted and APGD-T, random restarts, a box),
    x_adv stays on the device; L1 and quantize= too."""
    cp, _ = fake
    rng = np.random.default_rng(7)
    m = _mlp(np.float64)
    X = rng.uniform(0, 1, (30, 7))
    gm, Xg = m.to("cuda"), cp.asarray(X)
    for kw in (dict(eps=0.3, loss="ce", steps=12), dict(eps=0.3, loss="dlr", steps=12),
               dict(eps=0.2, loss="ce", steps=10, target=3, clip=(0, 1)),
               dict(eps=0.2, loss="dlr", steps=10, target="top-2", clip=(0, 1)),
               dict(eps=0.25, loss="ce", steps=8, restarts=2, seed=4, clip=(0, 1))):
        r_gpu, r_cpu = ff.apgd(gm, Xg, norm=norm, **kw), ff.apgd(m, X, norm=norm, **kw)
        assert type(r_gpu.x_adv).__module__.startswith("cupy"), kw
        xg = r_gpu.x_adv.get()
        np.testing.assert_array_equal(r_gpu.iterations, r_cpu.iterations)
        np.testing.assert_array_equal(r_gpu.pred, m.predict(xg))
        if kw["loss"] == "ce":  # the same fused gradient on both: the same iterates
            np.testing.assert_allclose(xg, r_cpu.x_adv, rtol=1e-9, atol=1e-12, err_msg=str(kw))
            np.testing.assert_array_equal(r_gpu.success, r_cpu.success)
        else:  # DLR's cotangent in array code on the device, one pass in C++ on the CPU: a
            # coordinate whose gradient is ~0 may take the other sign on a row now and then
            same = np.all(np.abs(xg - r_cpu.x_adv) <= 1e-9, axis=1)
            assert same.mean() >= 0.9, (kw, same.mean())
            np.testing.assert_array_equal(r_gpu.success[same], r_cpu.success[same])
    assert r_cpu.success.any() and not r_cpu.success.all()
    kw = dict(eps=0.3, steps=8, quantize=1 / 16, clip=(0, 1), norm=norm)
    Xq = np.round(X * 16) / 16  # on the grid
    r_gpu, r_cpu = ff.apgd(gm, cp.asarray(Xq), **kw), ff.apgd(m, Xq, **kw)
    xg = r_gpu.x_adv.get()
    np.testing.assert_array_equal(xg, r_cpu.x_adv)
    np.testing.assert_array_equal(np.round(xg * 16) / 16, xg)
    np.testing.assert_array_equal(r_gpu.pred, m.predict(xg))
    for kw in (dict(eps=1.0, steps=10, norm=1), dict(eps=0.8, steps=10, norm=1, clip=(0, 1)),
               dict(eps=0.8, steps=8, norm=1, clip=(0, 1), restarts=2, seed=1, target=2)):
        r_gpu, r_cpu = ff.apgd(gm, Xg, **kw), ff.apgd(m, X, **kw)  # L1 (Croce & Hein 2021)
        np.testing.assert_allclose(r_gpu.x_adv.get(), r_cpu.x_adv, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(r_gpu.success, r_cpu.success)
        assert r_cpu.success.any(), kw


#: the attacks written once for both devices beyond fgsm / pgd / apgd, with settings to compare
DEVICE_CASES = {
    "ddn": (ff.ddn, [dict(steps=15), dict(steps=12, target=2, clip=(0, 1)),
                     dict(steps=10, init_eps=0.5, clip=(0, 1), quantize=1 / 16)]),
    "cw": (ff.cw, [dict(steps=30, binary_search_steps=3, initial_const=1.0),
                   dict(steps=25, binary_search_steps=2, initial_const=1.0, target=1, clip=(0, 1),
                        learning_rate=0.05),
                   dict(steps=20, binary_search_steps=2, initial_const=10.0, clip=(0, 1),
                        confidence=0.5, learning_rate=0.1, quantize=1 / 16)]),
    "fmn": (ff.fmn, [dict(steps=15), dict(steps=12, norm="inf", clip=(0, 1)),
                     dict(steps=12, norm=1, clip=(0, 1)), dict(steps=12, norm=0, clip=(0, 1)),
                     dict(steps=10, target=1, clip=(0, 1)),
                     dict(steps=10, init="deepfool", clip=(0, 1), binary_search_steps=4),
                     dict(steps=8, init="ddn", norm=0, clip=(0, 1), binary_search_steps=4),
                     dict(steps=10, clip=(0, 1), quantize=1 / 16)]),
    "square": (ff.square, [dict(eps=0.3, max_queries=250), dict(eps=0.2, max_queries=120, clip=(0, 1)),
                           dict(eps=1.0, norm=2, max_queries=80, clip=(0, 1), seed=3),
                           dict(eps=0.25, max_queries=60, clip=(0, 1), quantize=1 / 16),
                           dict(eps=0.3, max_queries=150, image_shape=(1, 16)),
                           dict(eps=0.2, max_queries=120, clip=(0, 1), windows="per-row", seed=4)]),
    "fab": (ff.fab, [dict(steps=10), dict(steps=10, norm=2, clip=(0, 1)),
                     dict(steps=8, norm=1, clip=(0, 1)),
                     dict(steps=8, n_targets=2, eps=0.3, clip=(0, 1)),
                     dict(steps=8, target=1, clip=(0, 1)),
                     dict(steps=6, restarts=2, seed=3, clip=(0, 1)),
                     dict(steps=8, clip=(0, 1), quantize=1 / 16)]),
    "autoattack": (ff.autoattack, [
        dict(eps=0.1, steps=10, square_queries=100, clip=(0, 1)),
        dict(eps=0.3, norm=2, steps=10, square_queries=50, clip=(0, 1), skip_certified=False),
        dict(eps=0.1, version="rand", steps=8, clip=(0, 1)),
        dict(eps=0.125, steps=8, square_queries=50, clip=(0, 1), quantize=1 / 16),
        dict(eps=0.1, version="custom", attacks=["square", "apgd-t", "fab-t"], steps=8,
             square_queries=60, clip=(0, 1))]),
    "deepfool": (ff.deepfool, [dict(), dict(norm="inf", clip=(0, 1)), dict(clip=(0, 1), candidates=2),
                               dict(overshoot=0.1, max_iter=3), dict(clip=(0, 1), quantize=1 / 16)]),
    "universal": (ff.universal, [dict(eps=0.3), dict(eps=0.6, norm=2, clip=(0, 1), batch=7, seed=2),
                                 dict(eps=0.25, clip=(0, 1), quantize=1 / 16, max_passes=3)]),
    "score_attack": (ff.score_attack, [dict(eps=0.3, max_queries=60),
                                       dict(eps=0.5, norm=2, clip=(0, 1), max_queries=300),
                                       dict(eps=0.25, max_queries=50, clip=(0, 1), target=1),
                                       dict(eps=0.25, max_queries=50, clip=(0, 1), quantize=1 / 16)]),
    "hop_skip_jump": (ff.hop_skip_jump, [dict(max_queries=300, clip=(0, 1)),
                                         dict(max_queries=300, norm="inf", clip=(0, 1), seed=2),
                                         dict(max_queries=200, clip=(0, 1), target=1),
                                         dict(max_queries=200, clip=(0, 1), quantize=1 / 16)]),
}


@pytest.mark.parametrize("name", sorted(DEVICE_CASES))
def test_emulated_gpu_attack_matches_the_cpu(fake, name):
    """Each attack written once for both devices: on the emulated device the same x_adv,
    verdicts and iterations as on the CPU (untargeted, targeted, a box, quantize=); x_adv stays
    on the device and its verdicts are the model's own on it."""
    cp, _ = fake
    rng = np.random.default_rng(17)
    D = 16 if name == "square" else 7  # a 4 x 4 image for the Square windows
    m = _mlp(np.float64, sizes=(D, 9, 5, 4))
    X = np.round(rng.uniform(0, 1, (30, D)) * 16) / 16  # on quantize's grid
    gm, Xg = m.to("cuda"), cp.asarray(X)
    attack, cases = DEVICE_CASES[name]
    for kw in cases:
        r_gpu, r_cpu = attack(gm, Xg, **kw), attack(m, X, **kw)
        assert type(r_gpu.x_adv).__module__.startswith("cupy"), kw
        xg = r_gpu.x_adv.get()
        np.testing.assert_array_equal(r_gpu.iterations, r_cpu.iterations)
        same = np.all(np.abs(xg - r_cpu.x_adv) <= 1e-9 * (1 + np.abs(xg)), axis=1)
        if name == "fmn":
            # FMN keeps its smallest adversarial iterate, and its iterates approach the boundary
            # from both sides: the emulated device's products (float64 sums in another order)
            # change eps by ~1e-16, which can flip which of two near-tie iterates is kept
            assert same.mean() >= 0.85, (kw, same.mean())
            both = r_gpu.success & r_cpu.success
            np.testing.assert_allclose(r_gpu.l2[both], r_cpu.l2[both], rtol=5e-3)
            np.testing.assert_array_equal(r_gpu.success[same], r_cpu.success[same])
        else:
            assert same.all(), (kw, np.flatnonzero(~same))
            np.testing.assert_array_equal(r_gpu.success, r_cpu.success)
        np.testing.assert_array_equal(r_gpu.pred, m.predict(xg))
        assert r_cpu.success.any(), kw
        assert r_gpu.extra["device"] == "cuda:0"
        if r_cpu.queries is not None:
            np.testing.assert_array_equal(r_gpu.queries, r_cpu.queries)
        for key, v in r_cpu.extra.items():
            if isinstance(v, np.ndarray) and "seconds" not in key and v.dtype.kind in "fiub":
                np.testing.assert_allclose(np.asarray(r_gpu.extra[key]), v, rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip", [None, (0.0, 1.0)])
def test_emulated_gpu_verdicts_are_the_estimators(fake, dtype, clip):
    """Every attack on a GPU copy of a scikit-learn MLP: pred is the estimator's own predict on
    the returned points and success follows it, in both dtypes, with and without a box."""
    from sklearn.datasets import load_iris
    from sklearn.neural_network import MLPClassifier
    cp, _ = fake
    Xi, yi = load_iris(return_X_y=True)
    Xi = (Xi - Xi.min(0)) / (Xi.max(0) - Xi.min(0))
    with warnings.catch_warnings():  # (convergence is not the point)
        warnings.simplefilter("ignore")
        clf = MLPClassifier((12,), activation="tanh", max_iter=300, random_state=0).fit(Xi, yi)
    X = Xi[::5].astype(dtype)
    y = clf.predict(X)
    gm = ff.from_sklearn(clf, dtype=dtype).to("cuda")
    kw = {} if clip is None else {"clip": clip}
    runs = [(ff.ddn, dict(steps=20)), (ff.cw, dict(steps=20, binary_search_steps=2)),
            (ff.fmn, dict(steps=20)), (ff.fab, dict(steps=10)), (ff.deepfool, {}),
            (ff.apgd, dict(eps=0.2, steps=10)), (ff.square, dict(eps=0.2, max_queries=50)),
            (ff.autoattack, dict(eps=0.2, steps=5, square_queries=20)),
            (ff.universal, dict(eps=0.3, max_passes=2)),
            (ff.score_attack, dict(eps=0.2, max_queries=30)),
            (ff.hop_skip_jump, dict(max_queries=60, clip=(0.0, 1.0)))]
    fooled = 0
    for attack, extra in runs:
        r = attack(gm, cp.asarray(X), y, **{**kw, **extra})
        xa = r.x_adv.get()
        assert xa.dtype == dtype, attack.__name__
        np.testing.assert_array_equal(r.pred, clf.predict(xa), err_msg=attack.__name__)
        np.testing.assert_array_equal(r.success, clf.predict(xa) != y, err_msg=attack.__name__)
        if clip is not None:
            assert xa.min() >= 0 and xa.max() <= 1, attack.__name__
        fooled += int(r.success.sum())
    assert fooled > 0


@pytest.mark.parametrize("spelling", ["L2", "l2", 2, 2.0, "2", "inf", "Linf", np.inf, float("inf")])
def test_one_norm_parser_on_both_devices(fake, spelling):
    cp, _ = fake
    rng = np.random.default_rng(8)
    x, g = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    ref = K.fused_update(x, g, x, step=0.1, eps=0.2, norm=2 if str(spelling).lower() in ("l2", "2", "2.0")
                         else "inf")
    a = K.fused_update(x, g, x, step=0.1, eps=0.2, norm=spelling)
    b = K.fused_update(cp.asarray(x), cp.asarray(g), cp.asarray(x), step=0.1, eps=0.2, norm=spelling)
    np.testing.assert_array_equal(a, ref)
    np.testing.assert_allclose(b.get(), ref, rtol=1e-12)
    m = _mlp(np.float64)
    r1 = ff.pgd(m, rng.uniform(0, 1, (6, 7)), eps=0.1, steps=2, norm=spelling, random_start=False)
    assert r1.params["norm"] in ("inf", "2")


def test_the_same_mistake_raises_the_same_error_on_both_devices(fake):
    cp, _ = fake
    rng = np.random.default_rng(9)
    X, W = rng.standard_normal((6, 4)), rng.standard_normal((3, 4))
    cases = [dict(out=np.empty((6, 3), np.float32)), dict(out=np.empty((6, 2))),
             dict(b=np.ones(2)), dict(epilogue="sigmoid"), dict(W=np.ones((3, 5)))]
    for kw in cases:
        errs = []
        for dev in (np.asarray, cp.asarray):
            args = {"X": dev(X), "W": dev(kw.get("W", W))}
            extra = {k: (dev(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items() if k != "W"}
            with pytest.raises((TypeError, ValueError)) as info:
                K.scores(args["X"], args["W"], **extra)
            errs.append((type(info.value), str(info.value).split(":")[0]))
        assert errs[0] == errs[1], (kw, errs)
    with pytest.raises(TypeError, match="mixing NumPy and CuPy"):
        K.scores(cp.asarray(X), W)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_emulated_mlp_vjp_matches_the_cpu(fake, dtype):
    """The device's vector-Jacobian product (the cross-entropy backward pass started from the
    cotangent V) against the CPU kernel, one layer and three, with and without the logits."""
    cp, _ = fake
    rng = np.random.default_rng(4)
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for sizes, acts in (((7, 4), ["identity"]), ((7, 9, 5, 4), ["tanh", "relu", "identity"])):
        Ws = [rng.standard_normal((a, b)).astype(dtype) for a, b in zip(sizes, sizes[1:])]
        bs = [rng.standard_normal(b).astype(dtype) for b in sizes[1:]]
        X = rng.standard_normal((11, 7)).astype(dtype)
        V = rng.standard_normal((11, 4)).astype(dtype)
        G0, L0 = K.mlp_vjp(X, Ws, bs, acts, V, return_logits=True)
        dev = [cp.asarray(w) for w in Ws], [cp.asarray(b) for b in bs]
        G, L = K.mlp_vjp(cp.asarray(X), *dev, acts, cp.asarray(V), return_logits=True)
        assert type(G).__module__.startswith("cupy")
        np.testing.assert_allclose(G.get(), G0, **tol)
        np.testing.assert_allclose(L.get(), L0, **tol)
        np.testing.assert_allclose(K.mlp_vjp(cp.asarray(X), *dev, acts, cp.asarray(V)).get(), G0, **tol)
    # finite differences of sum(V * logits) on the float64 model: the CPU kernel is the reference
    if dtype == np.float64:
        f = lambda Z: float(np.sum(V * K.mlp_forward(Z, Ws, bs, acts)))  # noqa: E731
        h = 1e-6
        fd = np.array([[(f(X + h * np.eye(7)[j][None] * (np.arange(11) == i)[:, None])
                         - f(X - h * np.eye(7)[j][None] * (np.arange(11) == i)[:, None])) / (2 * h)
                        for j in range(7)] for i in range(3)])
        np.testing.assert_allclose(G0[:3], fd, rtol=1e-5, atol=1e-7)


def test_device_clip_bounds_are_checked_like_host_ones(fake):
    """Bounds a user passes as device arrays get the host's checks (NaN, lo > hi, shape)."""
    cp, _ = fake
    x = np.zeros((3, 4))
    for lo, hi, msg in [(np.full(4, np.nan), np.ones(4), "NaN"), (np.ones(4), np.zeros(4), "lo must"),
                        (np.zeros(5), np.ones(5), "shape")]:
        for dev in (np.asarray, cp.asarray):
            with pytest.raises(ValueError, match=msg):
                K.fused_update(dev(x), dev(x), dev(x), step=0.1, eps=1.0, clip=(dev(lo), dev(hi)))


def test_emulated_attack_loops_make_no_host_round_trips(fake):
    """The copies between host and device of a fixed-step PGD run do not grow with its steps;
    with early stopping, a step copies only when some row may be fooled (its candidates go to
    the host for the verdict), a bounded number per step."""
    import fake_gpu
    cp, _ = fake
    rng = np.random.default_rng(4)
    gm = _mlp(np.float32).to("cuda")
    X = cp.asarray(rng.uniform(0, 1, (30, 7)).astype(np.float32))
    y = rng.integers(0, 4, 30)
    counts, early = [], []
    for steps in (2, 9):
        for key in fake_gpu.TRANSFERS:
            fake_gpu.TRANSFERS[key] = 0
        ff.pgd(gm, X, y, eps=0.1, steps=steps, clip=(0, 1), seed=0)
        ff.pgd(gm, X, y, eps=0.1, steps=steps, clip=(0, 1), norm=2, quantize=0.01, seed=0)
        counts.append(dict(fake_gpu.TRANSFERS))
        for key in fake_gpu.TRANSFERS:
            fake_gpu.TRANSFERS[key] = 0
        ff.pgd(gm, X, y, eps=0.1, steps=steps, clip=(0, 1), early_stop=True, seed=0)
        early.append(sum(fake_gpu.TRANSFERS.values()))
    assert counts[0] == counts[1], counts
    # the minimum-norm loops copy per chunk (cw: at its ten checks per round), not per step
    for attack, kw, steps_pair in [(ff.ddn, dict(clip=(0, 1)), (2, 9)),
                                   (ff.fmn, dict(clip=(0, 1), norm=1), (2, 9)),
                                   (ff.cw, dict(clip=(0, 1), binary_search_steps=2), (20, 40))]:
        per = []
        for steps in steps_pair:
            for key in fake_gpu.TRANSFERS:
                fake_gpu.TRANSFERS[key] = 0
            attack(gm, X, y, steps=steps, **kw)
            per.append(dict(fake_gpu.TRANSFERS))
        assert per[0]["to_host"] == per[1]["to_host"], (attack.__name__, per)
        # a check that stops rows uploads their new index list: at most one per check
        extra = 10 * kw["binary_search_steps"] if attack is ff.cw else 0
        assert abs(per[1]["to_device"] - per[0]["to_device"]) <= extra, per
    assert early[1] - early[0] <= 6 * (9 - 2), early  # at most a few small copies per step


# ---- a real GPU ---------------------------------------------------------------------------------
@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,D,C", [(0, 5, 3), (1, 1, 2), (37, 129, 11), (1000, 300, 130),
                                   (5000, 64, 10)])
def test_gpu_kernels_match_the_reference(dtype, N, D, C):
    import cupy as cp
    rng = np.random.default_rng(N + D + C)
    X = rng.standard_normal((N, D)).astype(dtype)
    W = (rng.standard_normal((C, D)) / np.sqrt(D)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    y = rng.integers(0, C, N)
    assert X.dtype == W.dtype == b.dtype == dtype
    rt = 3e-5 if dtype == np.float32 else 1e-12
    X64, W64, b64 = (a.astype(np.float64) for a in (X, W, b))

    def close(got, want):
        want = np.asarray(want, np.float64)
        err = np.abs(np.asarray(cp.asnumpy(got), np.float64) - want)
        assert err.max(initial=0) <= rt * max(1.0, np.abs(want).max(initial=0)) * 10

    close(K.scores(cp.asarray(X), cp.asarray(W), cp.asarray(b)), X64 @ W64.T + b64)
    close(K.scores(cp.asarray(X), cp.asarray(W), cp.asarray(b), epilogue="softmax"),
          ref.softmax(X64 @ W64.T + b64))
    G, loss = K.ce_grad_linear(cp.asarray(X), cp.asarray(W), cp.asarray(b), y)
    G0, loss0, _ = ref.ce_grad_linear(X64, W64, b64, y)
    close(G, G0)
    close(loss, loss0)
    Xs = X[:, ::-1]  # a non-contiguous view is copied on the device
    close(K.scores(cp.asarray(X)[:, ::-1], cp.asarray(W), cp.asarray(b)), Xs.astype(np.float64) @ W64.T + b64)


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N", [0, 1, 333, 20001])
def test_gpu_mlp_backproject_and_update_match_the_reference(dtype, N):
    import cupy as cp
    rng = np.random.default_rng(N)
    sizes = (67, 50, 20, 10)
    Ws = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype) for a, b in zip(sizes, sizes[1:])]
    bs = [rng.standard_normal(b).astype(dtype) * 0.1 for b in sizes[1:]]
    acts = ["tanh", "logistic", "identity"]
    X = rng.standard_normal((N, 67)).astype(dtype)
    y = rng.integers(0, 10, N)
    rt = 1e-4 if dtype == np.float32 else 1e-11
    g = cp.asarray

    def close(got, want):
        want = np.asarray(want, np.float64)
        err = np.abs(np.asarray(cp.asnumpy(got), np.float64) - want)
        assert err.max(initial=0) <= rt * max(1.0, np.abs(want).max(initial=0))

    G, loss = K.ce_grad_mlp(g(X), [g(w) for w in Ws], [g(v) for v in bs], acts, y)
    G0, loss0, _ = ref.ce_grad_mlp(X, Ws, bs, acts, y)
    close(G, G0)
    close(loss, loss0)
    close(K.mlp_forward(g(X), [g(w) for w in Ws], [g(v) for v in bs], acts, epilogue="softmax"),
          ref.mlp_forward(X, Ws, bs, acts, epilogue="softmax"))
    H = rng.uniform(0.05, 0.95, (N, 20)).astype(dtype)  # inside the logistic range
    P1 = np.linalg.pinv(Ws[1].astype(np.float64)).astype(dtype)
    P0 = np.linalg.pinv(Ws[0].astype(np.float64)).astype(dtype)
    # atanh/logit amplify rounding errors near the clamp (~1/(2*margin)): a per-entry bound
    # from the reference's intermediates, not one relative tolerance (the CPU float32 result
    # misses 1e-4 relative on this input too)
    got = K.backproject(g(H), [g(P1), g(P0)], [g(bs[1]), g(bs[0])], ["logistic", "tanh"])
    args = (H, [P1, P0], [bs[1], bs[0]], ["logistic", "tanh"], 1e-6)
    ref.assert_close_rows(cp.asnumpy(got), ref.backproject(*args, dtype=dtype),
                          ref.backproject_error_bound(*args, dtype), dtype, "backproject")
    Gr = rng.standard_normal((N, 67)).astype(dtype)
    for norm in ("inf", 2):
        close(K.fused_update(g(X), g(Gr), g(X), step=0.1, eps=0.25, norm=norm, clip=(-2.0, 2.0)),
              ref.fused_update(X, Gr, X, 0.1, 0.25, norm, -2.0, 2.0))


@needs_gpu
def test_gpu_pgd_agrees_with_the_cpu_on_digits():
    import cupy as cp
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    Xd, yd = load_digits(return_X_y=True)
    Xd = (Xd / 16).astype(np.float32)
    clf = MLPClassifier((50, 20), activation="tanh", max_iter=200, random_state=0).fit(Xd, yd)
    m = ff.from_sklearn(clf, dtype=np.float32)
    kw = dict(eps=0.1, steps=10, random_start=False, clip=(0, 1))
    r_cpu = ff.pgd(m, Xd, yd, **kw)
    r_gpu = ff.pgd(m.to("cuda"), cp.asarray(Xd), yd, **kw)
    # float32 sign steps can differ where a gradient element is ~0; the outcome must agree
    assert abs(r_gpu.success.mean() - r_cpu.success.mean()) < 0.01
    assert np.mean(np.abs(r_gpu.x_adv.get() - r_cpu.x_adv) > 1e-4) < 0.01


@needs_gpu
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_gpu_apgd_and_vjp_agree_with_the_cpu_on_digits(loss):
    """On a real GPU: the device's vector-Jacobian product against the CPU kernel, and APGD
    (CE and DLR, L-inf, 50 steps) with the same outcome as on the CPU."""
    import cupy as cp
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    Xd, yd = load_digits(return_X_y=True)
    Xd = (Xd / 16).astype(np.float32)
    clf = MLPClassifier((50, 20), activation="tanh", max_iter=200, random_state=0).fit(Xd, yd)
    m = ff.from_sklearn(clf, dtype=np.float32)
    gm = m.to("cuda")
    V = np.random.default_rng(0).standard_normal((len(Xd), 10)).astype(np.float32)
    G = gm.vjp(cp.asarray(Xd), cp.asarray(V)).get()
    np.testing.assert_allclose(G, m.vjp(Xd, V), rtol=2e-4, atol=2e-5 * np.abs(G).max())
    kw = dict(eps=0.05, steps=50, loss=loss, clip=(0, 1))
    r_cpu = ff.apgd(m, Xd, yd, **kw)
    r_gpu = ff.apgd(gm, cp.asarray(Xd), yd, **kw)
    assert abs(r_gpu.success.mean() - r_cpu.success.mean()) < 0.01
    np.testing.assert_array_equal(r_gpu.pred, clf.predict(r_gpu.x_adv.get()))
    assert np.abs(r_gpu.x_adv.get() - Xd).max() <= 0.05 * (1 + 1e-6)


@needs_gpu
@pytest.mark.parametrize("name,kw", [
    ("ddn", dict(steps=50, clip=(0, 1))), ("cw", dict(steps=50, binary_search_steps=4, clip=(0, 1))),
    ("fmn", dict(steps=50, clip=(0, 1))), ("fmn", dict(steps=50, norm="inf", clip=(0, 1))),
    ("fab", dict(steps=30, clip=(0, 1))), ("square", dict(eps=0.1, max_queries=300, clip=(0, 1))),
    ("autoattack", dict(eps=0.05, steps=30, square_queries=300, clip=(0, 1)))])
def test_gpu_attacks_agree_with_the_cpu_on_digits(name, kw):
    """On a real GPU: each attack written for both devices against its CPU run on a digits MLP
    (float32): the same success rate within 1%, medians of the norms within 2%, and the
    estimator's own verdicts on the device's points."""
    import cupy as cp
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    Xd, yd = load_digits(return_X_y=True)
    Xd = (Xd[:600] / 16).astype(np.float32)
    clf = MLPClassifier((50, 20), activation="tanh", max_iter=200, random_state=0).fit(
        Xd, yd[:600])
    m = ff.from_sklearn(clf, dtype=np.float32)
    attack = getattr(ff, name)
    r_cpu = attack(m, Xd, **kw)
    r_gpu = attack(m.to("cuda"), cp.asarray(Xd), **kw)
    xg = r_gpu.x_adv.get()
    np.testing.assert_array_equal(r_gpu.pred, clf.predict(xg))
    assert abs(r_gpu.success.mean() - r_cpu.success.mean()) <= 0.01
    if "eps" in kw:
        assert np.abs(xg - Xd).max() <= kw["eps"] * (1 + 1e-6)
    else:
        lim = "linf" if kw.get("norm") == "inf" else "l2"
        a, b = getattr(r_gpu, lim)[r_gpu.success], getattr(r_cpu, lim)[r_cpu.success]
        assert abs(np.median(a) - np.median(b)) <= 0.02 * np.median(b)


def test_emulated_attacks_take_device_labels_targets_and_bounds(fake):
    """The same on the emulated device, whose strict numpy (fake_gpu._strict_numpy) refuses
    np.asarray of a device array as real CuPy does."""
    _device_labels_targets_and_bounds()


@needs_gpu
def test_gpu_attacks_take_device_labels_targets_and_bounds():
    """On a real GPU: CuPy labels, targets and clip bounds give the results of their host
    copies."""
    _device_labels_targets_and_bounds()


def _device_labels_targets_and_bounds():
    import cupy as cp
    rng = np.random.default_rng(21)
    m = _mlp(np.float32)
    X = rng.uniform(0, 1, (40, 7)).astype(np.float32)
    gm, Xg = m.to("cuda"), cp.asarray(X)
    y = m.predict(X)
    t = (y + 1) % 4
    clip_d = (cp.zeros(7, np.float32), cp.ones(7, np.float32))
    for attack, kw in [(ff.ddn, dict(steps=20, target=t)), (ff.cw, dict(steps=20, target=t)),
                       (ff.fmn, dict(steps=20, target=t)), (ff.fab, dict(steps=10, target=t)),
                       (ff.autoattack, dict(eps=0.1, steps=10, square_queries=50)),
                       (ff.hop_skip_jump, dict(max_queries=100)),
                       (ff.score_attack, dict(eps=0.1, max_queries=50))]:
        dev_kw = {k: (cp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
        a = attack(gm, Xg, cp.asarray(y), clip=clip_d, **dev_kw)
        b = attack(gm, Xg, y, clip=(0.0, 1.0), **kw)
        np.testing.assert_array_equal(a.success, b.success)
        np.testing.assert_allclose(cp.asnumpy(a.x_adv), cp.asnumpy(b.x_adv), rtol=1e-6)


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_fused_steps_and_fgsm_match_the_cpu(dtype):
    import cupy as cp
    rng = np.random.default_rng(11)
    N, D, C = 4099, 131, 17
    X = rng.uniform(0, 1, (N, D)).astype(dtype)
    W = (rng.standard_normal((C, D)) / np.sqrt(D)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    y = rng.integers(0, C, N)
    for norm in ("inf", 2):
        kw = dict(step=0.02, eps=0.05, norm=norm, clip=(0.0, 1.0))
        got = K.ce_step_linear(cp.asarray(X), cp.asarray(W), cp.asarray(b), y, cp.asarray(X), **kw)
        want = K.ce_step_linear(X, W, b, y, X, **kw)
        # sign steps can differ only where a gradient element is ~0 in the working precision
        frac = np.mean(np.abs(cp.asnumpy(got) - want) > (1e-5 if dtype == np.float32 else 1e-12))
        assert frac < 1e-3, frac
    m = ff.LinearModel(W, b, dtype=dtype)
    r_gpu = ff.fgsm(m.to("cuda"), cp.asarray(X), y, eps=0.03, clip=(0, 1))
    r_cpu = ff.fgsm(m, X, y, eps=0.03, clip=(0, 1))
    assert abs(r_gpu.success.mean() - r_cpu.success.mean()) < 0.005


def _cli_files(tmp_path):
    m = _mlp(np.float32)
    X = np.random.default_rng(5).uniform(0, 1, (25, 7)).astype(np.float32)
    ff.save_model(m, tmp_path / "m.npz")
    np.save(tmp_path / "X.npy", X)
    return m, X


def test_cli_device_cuda_on_the_emulated_device(fake, tmp_path, capsys):
    from fastfool.cli import main
    m, X = _cli_files(tmp_path)
    out = tmp_path / "adv.npz"
    assert main(["attack", "--model", str(tmp_path / "m.npz"), "--data", str(tmp_path / "X.npy"),
                 "--attack", "pgd", "--eps", "0.1", "--device", "cuda", "--out", str(out)]) == 0
    res = ff.AttackResult.load(out)
    ref = ff.pgd(m, X, eps=0.1, steps=10, seed=0)
    assert res.x_adv.shape == X.shape and np.all(res.linf <= 0.1 + 1e-6)
    assert abs(res.success.mean() - ref.success.mean()) <= 0.2  # different random starts
    # a minimum-norm attack on the device: the CPU's points; a CPU-only attack: refused by name
    assert main(["attack", "--model", str(tmp_path / "m.npz"), "--data", str(tmp_path / "X.npy"),
                 "--attack", "ddn", "--device", "cuda", "--out", str(out)]) == 0
    res, ref = ff.AttackResult.load(out), ff.ddn(m, X)
    np.testing.assert_allclose(res.x_adv, ref.x_adv, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(res.success, ref.success)
    assert main(["attack", "--model", str(tmp_path / "m.npz"), "--data", str(tmp_path / "X.npy"),
                 "--attack", "hop_skip_jump", "--queries", "150", "--clip", "0", "1",
                 "--device", "cuda", "--out", str(out)]) == 0
    res = ff.AttackResult.load(out)
    ref = ff.hop_skip_jump(m, X, max_queries=150, clip=(0, 1), norm="inf")  # the CLI default
    np.testing.assert_allclose(res.x_adv, ref.x_adv, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(res.queries, ref.queries)
    assert main(["attack", "--model", str(tmp_path / "m.npz"), "--data", str(tmp_path / "X.npy"),
                 "--attack", "minimal", "--device", "cuda", "--out", str(out)]) == 2
    assert "minimal runs on the CPU only" in capsys.readouterr().err


@pytest.mark.skipif(GPU, reason="checks the error of a machine without a GPU")
def test_cli_device_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    from fastfool.cli import main
    _cli_files(tmp_path)
    code = main(["attack", "--model", str(tmp_path / "m.npz"), "--data", str(tmp_path / "X.npy"),
                 "--attack", "fgsm", "--eps", "0.1", "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "CUDA" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_diff_norms_match_the_cpu_on_extreme_rows(dtype):
    import cupy as cp
    rng = np.random.default_rng(7)
    big, tiny = (1e30, 1e-42) if dtype == np.float32 else (1e200, 1e-300)
    for D in (0, 1, 31, 33, 784):
        A = rng.standard_normal((9, D)).astype(dtype)
        B = rng.standard_normal((9, D)).astype(dtype)
        if D:
            B[1] = A[1]                         # zero row
            A[2, 0] = np.nan                    # NaN row
            A[3, -1] = np.inf                   # infinite row
            A[4] *= big                         # huge (float: squares overflow float32)
            A[5], B[5] = A[5] * tiny, B[5] * 0  # tiny / subnormal differences
            A[6, 0], B[6] = np.nan, A[6]        # NaN is the only non-zero difference
        l2, linf = K.diff_norms(cp.asarray(A), cp.asarray(B))
        l2c, linfc = K.diff_norms(A, B)
        rt = 1e-6 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(cp.asnumpy(l2), l2c, rtol=rt)
        np.testing.assert_allclose(cp.asnumpy(linf), linfc, rtol=rt)
        if D:
            assert np.isnan(cp.asnumpy(l2)[[2, 6]]).all() and np.isinf(cp.asnumpy(l2)[3])
            assert np.isfinite(cp.asnumpy(l2)[4]) and cp.asnumpy(l2)[5] > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_emulated_multi_step_calls_match_the_cpu(fake, dtype):
    """steps=k on the GPU: k fused steps, the later in place on the first one's output (no
    host copy in between), as the CPU's one-call multi-step."""
    cp, dev = fake
    rng = np.random.default_rng(5)
    m = _mlp(dtype)
    X = rng.uniform(-1, 1, (11, 7)).astype(dtype)
    y = rng.integers(0, 4, 11)
    kw = dict(step=0.05, eps=0.1, clip=(-1.0, 1.0), steps=3, return_loss=True)
    acts = ["tanh", "relu", "identity"]
    g = cp.asarray
    out, loss = K.ce_step_mlp(g(X), [g(w) for w in m.coefs_], [g(v) for v in m.intercepts_], acts,
                              y, g(X), **kw)
    out0, loss0 = K.ce_step_mlp(X, m.coefs_, m.intercepts_, acts, y, X, **kw)
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.get(), out0, **tol)
    np.testing.assert_allclose(loss.get(), loss0, **tol)
    out, loss, final = K.ce_step_mlp(g(X), [g(w) for w in m.coefs_], [g(v) for v in m.intercepts_],
                                     acts, y, g(X), return_final_prob=True, **kw)
    _, _, final0 = K.ce_step_mlp(X, m.coefs_, m.intercepts_, acts, y, X, return_final_prob=True, **kw)
    assert ff.cuda.is_device_array(final)  # computed on the device, after the steps
    np.testing.assert_allclose(final.get(), final0, **tol)
    W, b = m.coefs_[0].T.copy(), m.intercepts_[0]
    out = K.ce_step_linear(g(X), g(W), g(b), y % 5, g(X), step=0.05, eps=0.1, steps=2)
    np.testing.assert_allclose(out.get(), K.ce_step_linear(X, W, b, y % 5, X, step=0.05, eps=0.1,
                                                           steps=2), **tol)
    with pytest.raises(ValueError, match="steps"):
        K.ce_step_linear(g(X), g(W), g(b), y % 5, g(X), step=0.05, steps=0)
