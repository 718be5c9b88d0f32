"""The ``fastfool`` command line (also ``python -m fastfool``).

    fastfool demo          train digits classifiers and run the attack suite on them (default)
    fastfool attack        run one attack on your model and data, save the adversarial inputs
    fastfool info          version, SIMD path, threads
    fastfool bench         the micro-benchmarks (see ``fastfool bench --help``)

User mistakes end in one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

EXAMPLES = """examples:
  fastfool demo                 fool digits classifiers with every attack and print a table
  fastfool demo --threads 1     the same on one thread
  fastfool attack --model m.npz --data X.npy --labels y.npy --attack pgd --eps 0.03 --out adv.npz
  fastfool attack --model clf.joblib --trust-pickle --data X.csv --attack deepfool --format json
  fastfool attack --model m.onnx --data X.npy --labels y.npy --attack autoattack --eps 0.03 --clip 0 1
  fastfool info                 what the kernels run on
  fastfool bench --quick        a quick run of the micro-benchmarks
"""


def _info(args) -> int:
    import fastfool as ff

    info = ff.simd_info()
    print(f"fastfool {ff.__version__}")
    print(f"simd: {info['active']} (detected {info['detected']}); threads: {info['threads']}")
    print(f"micro-kernel tiles (mr, nr, kc, mc): float32 {info['tile_float32']}, "
          f"float64 {info['tile_float64']}")
    from fastfool import cuda
    print(f"cuda: {cuda.info()}; GPU path {'available' if cuda.available() else 'not available'}")
    return 0


def _bench(args) -> int:
    from . import bench

    return bench.run(args)


def _demo(args) -> int:
    import numpy as np

    import fastfool as ff

    if args.out:
        _check_folder_arg(args.out)
    if args.threads is not None:
        ff.set_threads(args.threads)
    try:
        from sklearn.datasets import load_digits
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        raise SystemExit("fastfool: error: the demo needs scikit-learn (pip install scikit-learn)")
    t_start = time.perf_counter()
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if not args.quiet else (lambda msg: None)
    say("training LogisticRegression, MLPClassifier (tanh; identity 50-20-2 on digits 0-3), "
        "RandomForest on scikit-learn's digits ...")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr = LogisticRegression(max_iter=2000).fit(X, y)
        mlp = MLPClassifier((50, 20), activation="tanh", max_iter=300, random_state=0).fit(X, y)
        keep = y < 4
        ident = MLPClassifier((50, 20, 2), activation="identity", max_iter=300,
                              random_state=21).fit(X[keep], y[keep])
        rf = RandomForestClassifier(100, random_state=0).fit(X, y)
    m_lr = ff.from_sklearn(lr, dtype=np.float32)
    m_mlp = ff.from_sklearn(mlp, dtype=np.float32)
    m_id = ff.from_sklearn(ident, dtype=np.float32)
    clip = (0.0, 1.0)
    codes = m_id.hidden(X[keep], -1)[:200] * 5
    jobs = [
        ("fgsm Linf 0.1", "logreg", lambda: ff.fgsm(m_lr, X, y, eps=0.1, clip=clip)),
        ("pgd-10 Linf 0.1", "logreg", lambda: ff.pgd(m_lr, X, y, eps=0.1, seed=0, clip=clip)),
        ("minimal L2 (exact)", "logreg", lambda: ff.minimal(m_lr, X, y)),
        ("template from noise", "logreg", lambda: ff.template(m_lr, None, target=np.tile(np.arange(10), 5),
                                                              start="noise", n=50, seed=0)),
        ("far points p>=0.99", "logreg", lambda: ff.far_points(m_lr, X)),
        ("fgsm Linf 0.1", "mlp tanh", lambda: ff.fgsm(m_mlp, X, y, eps=0.1, clip=clip)),
        ("pgd-10 Linf 0.1", "mlp tanh", lambda: ff.pgd(m_mlp, X, y, eps=0.1, seed=0, clip=clip)),
        ("deepfool L2", "mlp tanh", lambda: ff.deepfool(m_mlp, X, y, clip=clip)),
        ("pseudo-inverse", "mlp identity", lambda: ff.invert(m_id, codes, layer=-1)),
        ("far points (2-unit layer)", "mlp identity", lambda: ff.far_points(m_id, X[keep], layer=-1)),
        ("score attack Linf 0.2", "random forest", lambda: ff.score_attack(rf, X[:200], y[:200], eps=0.2,
                                                                           max_queries=300, clip=clip)),
    ]
    rows, results = [], {}
    for i, (name, model, fn) in enumerate(jobs):
        say(f"[{i + 1}/{len(jobs)}] {name} on {model} ...")
        res = fn()
        results[(name, model)] = res
        rows.append((name, model, res.summary()))
    print(f"{'attack':<26}{'model':<15}{'success':>8}{'fooled':>8}{'med L2':>9}{'med Linf':>9}"
          f"{'conf':>7}{'rows/s':>12}")
    for name, model, s in rows:
        l2 = "-" if s["median_l2"] != s["median_l2"] else f"{s['median_l2']:.3f}"
        li = "-" if s["median_linf"] != s["median_linf"] else f"{s['median_linf']:.3f}"
        fo = "-" if s["fooled_rate"] != s["fooled_rate"] else f"{100 * s['fooled_rate']:.1f}%"
        print(f"{name:<26}{model:<15}{100 * s['success_rate']:>7.1f}%{fo:>8}{l2:>9}{li:>9}"
              f"{s['mean_confidence']:>7.3f}{s['rows_per_second']:>12,.0f}")
    if args.out:
        written = _demo_figures(args.out, X, y, keep, m_lr, m_mlp, m_id, results)
        say(f"figures: {', '.join(written)}" if written else
            "figures skipped: matplotlib is not installed (pip install 'fastfool[plot]')")
    say(f"done in {time.perf_counter() - t_start:.1f} s (success: the estimator's own decision on "
        "the returned inputs, over all rows; fooled: over the rows it classified correctly; "
        "medians over successful rows)")
    return 0


def _demo_figures(out, X, y, keep, m_lr, m_mlp, m_id, results):
    import os

    import numpy as np

    import fastfool as ff

    from . import plot  # imports matplotlib lazily, inside each figure function

    try:
        import matplotlib  # noqa: F401  (only probing that it is installed)
    except ImportError:
        return []
    os.makedirs(out, exist_ok=True)
    paths = []

    def save(name, fig):
        path = os.path.join(out, name)
        fig.savefig(path, dpi=100)
        paths.append(path)

    save("templates.png", plot.templates(m_lr, (8, 8)))
    pg = results[("pgd-10 Linf 0.1", "mlp tanh")]
    fooled = np.flatnonzero(pg.success)[:8]
    sub = ff.AttackResult(pg.x_adv[fooled], pg.success[fooled], pg.pred[fooled],
                          pg.confidence[fooled], pg.l2[fooled], pg.linf[fooled],
                          pg.iterations[fooled], y=pg.y[fooled], attack="pgd-10 (tanh MLP)")
    save("pgd_mlp_grid.png", plot.adversarial_grid(X[fooled], sub, (8, 8)))
    H = m_id.hidden(X[keep], -1)
    lim = float(np.abs(H).max()) * 12
    cmap = ff.confidence_map(m_id, (-lim, lim), (-lim, lim), resolution=400, layer=-1)
    far = results[("far points (2-unit layer)", "mlp identity")]
    save("hidden_layer_map.png", plot.confidence_map(
        cmap, X=H, y=y[keep], far=m_id.hidden(far.x_adv, -1),
        title="2-unit hidden layer of the identity MLP (digits 0-3); stars: far points"))
    save("backprojected_digits.png", plot.images(
        far.x_adv, (8, 8), titles=[f"{p} ({c:.3f})" for p, c in zip(far.pred, far.confidence)],
        title="far points of the 2-unit layer, back-projected (label, probability)"))
    grid = [0, 0.02, 0.05, 0.1, 0.2]
    curves = {"pgd L-inf, logreg": ff.robustness_curve(m_lr, X[:400], y[:400], grid, steps=10, seed=0),
              "pgd L-inf, tanh MLP": ff.robustness_curve(m_mlp, X[:400], y[:400], grid, steps=10, seed=0)}
    save("robustness.png", plot.robustness_curves(curves, xlabel="epsilon (L-inf)"))
    return paths


_ATTACKS = ("fgsm", "pgd", "apgd", "autoattack", "square", "fmn", "fab", "ddn", "cw", "deepfool",
            "minimal", "template", "hop_skip_jump", "score_attack", "universal")
#: attacks that query only predict / predict_proba: any scikit-learn estimator will do
_BLACK_BOX = ("hop_skip_jump", "score_attack")


def _check_folder_arg(out) -> None:
    """demo --out: a folder that exists or can be made (checked before any work)."""
    import os
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out}: exists and is not a folder (the demo writes its figures "
                         "into a folder)")
    parent = os.path.dirname(os.path.abspath(out))
    target = out if os.path.isdir(out) else parent
    if not os.path.isdir(target):
        raise ValueError(f"--out {out}: the folder {parent} does not exist")
    if not os.access(target, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: cannot write into {target} (permission denied)")


def _out_file_arg(out) -> str:
    """attack --out: the .npz file AttackResult.save will write, checked before any work (a
    folder, a missing or read-only folder are refused then, not after the attack ran)."""
    import os

    from ._files import writable_file
    p = writable_file(out, "--out", "adv.npz")
    final = p if p.endswith(".npz") else p + ".npz"
    if os.path.isdir(final):
        raise ValueError(f"--out {p}: {final} is a folder")
    return final


def _norm_arg(value: str) -> str:
    from ._checks import norm_name
    if value.strip().lower() in ("1", "l1"):
        return "1"  # fmn, fab and apgd only (checked with the attack)
    if value.strip().lower() in ("0", "l0"):
        return "0"  # fmn only (checked with the attack)
    try:
        return norm_name(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected inf (linf), 2 (l2), 1 (l1: fmn, fab, apgd) or 0 (l0: fmn), got {value!r}"
        ) from None


def _target_arg(target, model):
    """--target: 'random', 'least_likely', 'all' or one of the model's classes, written as
    the class prints (7, 1.5, True, cat); anything else is refused naming the classes."""
    import numpy as np
    if target is None or target in ("random", "least_likely", "all"):
        return target
    cls = model.classes_
    for i, c in enumerate(cls):
        if str(c) == target:
            return cls[i]
    if cls.dtype.kind in "iuf":
        try:
            v = float(target)
        except ValueError:
            v = None
        if v is not None:
            hit = np.flatnonzero(cls.astype(np.float64) == v)
            if hit.size:
                return cls[hit[0]]
    shown = ", ".join(map(str, cls[:20])) + (", ..." if len(cls) > 20 else "")
    raise ValueError(f"--target {target!r}: not one of the model's classes ({shown}), nor "
                     "'random', 'least_likely' or 'all'")


def _data_arg(X, path, dtype):
    """The CLI's data as the model's float dtype (:func:`fastfool.datasets.as_float`)."""
    from .datasets import as_float
    return as_float(X, path, dtype)


def _load_skops(path):
    """A .skops file with skops.io.load, trusting only scikit-learn / NumPy / SciPy types (any
    other type the file names is refused, by name)."""
    try:
        import skops.io as sio
    except ImportError:
        raise ValueError(f"{path}: a .skops model needs skops (pip install skops)") from None
    import os
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise ValueError(f"{path}: not a skops file ({type(exc).__name__}: {exc})") from exc
    ok = ("sklearn.", "numpy.", "scipy.", "builtins.")
    bad = [t for t in untrusted if not t.startswith(ok)]
    if bad:
        raise ValueError(f"{path}: the file names types fastfool does not trust: {', '.join(bad)}; "
                         "only scikit-learn, NumPy and SciPy types load")
    return sio.load(path, trusted=list(untrusted))


def _load_model_arg(path, trust_pickle, black_box=False):
    """The model file as a fastfool model; with ``black_box`` (attacks that only query it), a
    scikit-learn estimator fastfool does not convert (a forest, boosting) comes back as itself."""
    import fastfool as ff

    def convert(est):
        try:
            return ff.from_sklearn(est)
        except (TypeError, ValueError, NotImplementedError):
            if black_box and callable(getattr(est, "predict", None)):
                return est
            raise

    import os
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix == ".npz":
        return ff.load_model(path)
    if suffix == ".onnx":
        return ff.from_onnx(path)
    if suffix == ".skops":
        return convert(_load_skops(path))
    if suffix in (".pt", ".pth") and not trust_pickle:
        try:
            import torch
        except ImportError:
            raise ValueError(f"{path}: a .pt model needs PyTorch (pip install torch)") from None
        if not os.path.isfile(path):
            raise FileNotFoundError(path)
        import warnings
        try:  # TorchScript: a graph, not pickled Python objects (deprecated in torch 2.13, read)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(path, map_location="cpu")
        except Exception as exc:
            raise ValueError(f"{path}: not a TorchScript archive ({type(exc).__name__}); save with "
                             "torch.jit.save(torch.jit.script(model), path), or pass --trust-pickle "
                             "for a torch.save'd module you trust") from exc
        return ff.from_torch(module)
    if not trust_pickle:
        raise ValueError(f"{path}: this kind of file does not load by default: fastfool loads .npz "
                         "(ff.save_model), .onnx, .skops (scikit-learn types only) and TorchScript "
                         ".pt; a pickle/joblib file (or a torch.save'd module) runs code when "
                         "loaded, so pass --trust-pickle only for files you trust")
    if suffix in (".pt", ".pth"):
        import torch
        return ff.from_torch(torch.load(path, map_location="cpu", weights_only=False))
    import pickle

    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, not a model file")
    try:
        try:
            import joblib
        except ImportError:
            with open(path, "rb") as f:
                est = pickle.load(f)
        else:
            est = joblib.load(path)
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated or foreign files raise anything from EOFError up
        raise ValueError(f"{path}: cannot be loaded as a joblib/pickle model "
                         f"({type(exc).__name__}: {exc})") from exc
    return convert(est)


def _attack(args) -> int:
    if args.norm is None:
        args.norm = "2" if args.attack in ("ddn", "cw") else "inf"
    import json


    import fastfool as ff
    from .datasets import load_array

    stream = bool(args.out) and args.out.rstrip("/").lower().endswith((".npy", ".zarr"))
    if (args.chunk_rows is not None or args.resume) and not stream:
        raise ValueError("--chunk-rows / --resume: streaming writes x_adv to an .npy or .zarr "
                         "--out (e.g. --out adv.npy)")
    if stream:
        from .stream import check_out
        out = check_out(args.out)
    else:
        out = _out_file_arg(args.out) if args.out else None  # before any work
    model = _load_model_arg(args.model, args.trust_pickle, black_box=args.attack in _BLACK_BOX)
    import numpy as np
    clip = None if args.clip is None else tuple(args.clip)
    kw = dict(threads=args.threads)
    if args.norm == "1" and args.attack not in ("fmn", "fab", "apgd"):
        raise ValueError(f"--norm 1: only fmn, fab and apgd take the L1 norm ({args.attack} "
                         "takes inf or 2)")
    if args.norm == "0" and args.attack != "fmn":
        raise ValueError(f"--norm 0: only fmn takes the L0 norm ({args.attack} does not)")
    steps = args.steps
    if args.attack in ("fgsm", "pgd", "apgd") and steps is None:
        steps = 10  # the CLI's historical default for these
    if args.attack in ("fgsm", "pgd"):
        if args.eps is None:
            raise ValueError(f"--eps is required for {args.attack}")
        kw.update(eps=args.eps, norm=args.norm, clip=clip, target=args.target, seed=args.seed)
        if args.attack == "pgd":
            kw.update(steps=steps)
    elif args.attack == "apgd":
        if args.eps is None:
            raise ValueError("--eps is required for apgd")
        k = None if args.target is None else str(args.target)
        if k is not None and not (k[4:] if k.startswith("top-") else k).isdigit():
            raise ValueError(f"--target for apgd: the number of classes to target (k or top-k), "
                             f"got {args.target!r}")
        kw.update(eps=args.eps, norm=1 if args.norm == "1" else args.norm, clip=clip,
                  steps=steps, seed=args.seed, loss=args.loss, target=args.target)
    elif args.attack in ("autoattack", "square"):
        if args.eps is None:
            raise ValueError(f"--eps is required for {args.attack}")
        if args.target is not None:
            raise ValueError(f"--target: {args.attack} is untargeted")
        kw.update(eps=args.eps, norm=args.norm, clip=clip, seed=args.seed)
        if args.attack == "autoattack":
            kw.update(version=args.aa_version, skip_certified=not args.aa_attack_all)
            if steps is not None:
                kw.update(steps=steps)
            if args.queries is not None:
                kw.update(square_queries=args.queries)
        elif args.queries is not None:
            kw.update(max_queries=args.queries)
    elif args.attack == "universal":
        if args.eps is None:
            raise ValueError("--eps is required for universal")
        if args.target is not None:
            raise ValueError("--target: universal is untargeted")
        kw.update(eps=args.eps, norm=args.norm, clip=clip, seed=args.seed)
        if steps is not None:
            kw.update(max_passes=steps)
    elif args.attack in _BLACK_BOX:
        if args.attack == "score_attack" and args.eps is None:
            raise ValueError("--eps is required for score_attack")
        if args.target is not None:
            raise ValueError(f"--target: the CLI runs {args.attack} untargeted")
        kw = dict(norm=args.norm, clip=clip, seed=args.seed)
        if args.queries is not None:
            kw.update(max_queries=args.queries)
        if args.attack == "score_attack":
            kw.update(eps=args.eps)
    elif args.attack in ("fmn", "fab"):
        kw.update(norm=int(args.norm) if args.norm in ("0", "1", "2") else args.norm, clip=clip)
        if args.attack == "fab":
            kw.update(seed=args.seed)
        if steps is not None:
            kw.update(steps=steps)
        if args.target is not None:
            kw.update(target=args.target)
    elif args.attack in ("ddn", "cw"):
        if args.norm != "2":
            raise ValueError(f"--norm: {args.attack} minimises the L2 norm only (--norm 2)")
        kw.update(clip=clip)
        if steps is not None:
            kw.update(steps=steps)
        if args.target is not None:
            kw.update(target=args.target)
    elif args.attack == "deepfool":
        kw.update(norm=args.norm, clip=clip)
    elif args.attack == "minimal":
        kw.update(norm=args.norm, target=args.target)
    elif args.attack == "template":
        if args.target is None:
            raise ValueError("--target is required for template")
        kw.update(target=args.target, clip=clip)
    if args.quantize is not None:
        if args.attack == "template":
            raise ValueError("--quantize: template builds inputs from nothing (no grid to keep)")
        kw["quantize"] = args.quantize
    if "target" in kw and args.attack not in ("apgd", "fmn", "fab", "ddn", "cw"):
        kw["target"] = _target_arg(args.target, model)
    if args.attack in ("fmn", "fab", "ddn", "cw") and "target" in kw:
        t = _target_arg(args.target, model)
        if isinstance(t, str):
            raise ValueError(f"--target for {args.attack}: one of the model's classes")
        kw["target"] = t
    if stream:
        if args.device != "cpu":
            raise ValueError("--out .npy: streaming runs on the CPU")
        from .stream import stream_attack
        return stream_attack(args, model, kw, out)
    X = load_array(args.data)
    if X.ndim > 2:
        X = X.reshape(X.shape[0], -1)
    # raw images (e.g. IDX uint8) become floats; scale them explicitly with --scale
    mdt = np.dtype(getattr(model, "dtype", np.float64))
    X = _data_arg(X, args.data, mdt) * mdt.type(args.scale)
    if X.ndim != 2 or X.shape[1] != getattr(model, "n_features_in_", X.shape[-1]):
        raise ValueError(f"{args.data}: {X.shape[-1] if X.ndim else 0} features per row, but the "
                         f"model expects {model.n_features_in_}")
    y = None if args.labels is None else load_array(args.labels, name="y").reshape(-1)
    if args.device != "cpu":
        from .attacks._common import GPU_ATTACKS
        if args.attack not in GPU_ATTACKS:
            raise ValueError(f"--device {args.device}: {args.attack} runs on the CPU only (on the "
                             f"GPU: {', '.join(GPU_ATTACKS)})")
        model = model.to(args.device)  # raises a one-line reason when no GPU can be used
        import cupy

        with cupy.cuda.Device(model._gpu_id):
            X = cupy.asarray(X)
        kw.pop("threads", None)
    fn = getattr(ff, args.attack)
    res = fn(model, X, **kw) if args.attack == "template" else fn(model, X, y, **kw)
    if out:
        res.save(out)
    s = res.summary()
    if args.format == "json":
        print(json.dumps(s, default=float))
    else:
        print(repr(res))
        if args.out:
            print(f"saved {res.n} rows to {out}")
    return 0


def _report_file_arg(p, what, ext):
    """audit --out / --json: a file in a folder that exists and can be written."""
    from ._files import writable_file
    return writable_file(p, what, "report" + ext)


def _audit(args) -> int:
    import os

    import numpy as np

    import fastfool as ff
    from .datasets import load_array
    out = _report_file_arg(args.out, "--out", ".html")
    js = _report_file_arg(args.json or (os.path.splitext(out)[0] + ".json"), "--json", ".json")
    if args.rows is not None and args.rows < 1:
        raise ValueError(f"--rows: must be at least 1, got {args.rows}")
    model = _load_model_arg(args.model, args.trust_pickle)
    X = load_array(args.data)
    if X.ndim > 2:
        X = X.reshape(X.shape[0], -1)
    mdt = np.dtype(getattr(model, "dtype", np.float64))
    X = _data_arg(X, args.data, mdt) * mdt.type(args.scale)
    y = None if args.labels is None else load_array(args.labels, name="y").reshape(-1)
    if args.rows is not None:
        X = X[:args.rows]
        y = None if y is None else y[:args.rows]
    clip = None if args.clip is None else tuple(args.clip)
    rep = ff.audit(model, X, y, eps=args.eps, norm=args.norm, clip=clip, seed=args.seed,
                   steps=args.steps, image_shape=args.image_shape, bounds=not args.no_bounds,
                   threads=args.threads, model_file=args.model, data_file=args.data)
    paths = rep.save(out, js)
    if not args.quiet:
        print(repr(rep))
        for p in paths:
            print(f"wrote {p}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fastfool", description=__doc__, epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__
    ap.add_argument("--version", action="version", version=f"fastfool {__version__}")
    sub = ap.add_subparsers(dest="command")
    p = sub.add_parser("demo", help="run the attack suite on digits classifiers (default)",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="kernel threads (default: all CPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--out", default="fastfool-demo",
                   help="folder for the figures (needs matplotlib; '' to skip; default fastfool-demo)")
    p.set_defaults(func=_demo)
    p = sub.add_parser("attack", help="run one attack on a model and data",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="a model: .npz (ff.save_model), .onnx, .skops (scikit-learn types only), "
                        "TorchScript .pt; or, with --trust-pickle, a joblib/pickle "
                        "scikit-learn estimator)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow loading pickle/joblib models (they run code when loaded)")
    p.add_argument("--data", required=True, help="inputs: .npy, .npz, .csv or IDX (MNIST)")
    p.add_argument("--labels", default=None, help="labels (same formats); default: the model's predictions")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the data by this (e.g. 1/255)")
    p.add_argument("--attack", required=True, choices=_ATTACKS)
    p.add_argument("--eps", type=float, default=None)
    p.add_argument("--steps", type=int, default=None,
                   help="iterations (default 10 for pgd / apgd, the attack's own otherwise; "
                        "universal: passes)")
    p.add_argument("--loss", default="ce", choices=["ce", "dlr"], help="apgd's loss (default ce)")
    p.add_argument("--queries", type=int, default=None,
                   help="queries per row: square (and autoattack's Square stage; default 5000), "
                        "hop_skip_jump (5000), score_attack (1000)")
    p.add_argument("--aa-version", dest="aa_version", default="standard",
                   choices=["standard", "rand"], help="autoattack's ensemble (default standard)")
    p.add_argument("--aa-attack-all", dest="aa_attack_all", action="store_true",
                   help="autoattack: run every stage on every row still robust (default: rows "
                        "CROWN proves robust after the first stage skip the others; the same "
                        "results, less work)")
    p.add_argument("--norm", default=None, type=_norm_arg,
                   help="inf (linf, the default), 2 (l2; the default and only norm of ddn and cw); "
                        "1 for fmn, fab and apgd; 0 (the count of changed features) for fmn")
    p.add_argument("--target", default=None, help="a label, 'random', 'least_likely' or 'all'")
    p.add_argument("--clip", type=float, nargs=2, metavar=("LO", "HI"), default=None)
    p.add_argument("--quantize", type=float, default=None, metavar="Q",
                   help="keep x_adv on the inputs' grid of step Q (e.g. 0.00392156862745098 = "
                        "1/255 for 8-bit images after --scale); every attack but template")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu",
                   help="cpu (default) or cuda[:N]: every attack but minimal and template runs "
                        "on the GPU (needs CuPy)")
    p.add_argument("--out", default=None,
                   help="save the AttackResult here (.npz); or stream: an .npy --out gets x_adv "
                        "chunk by chunk from an .npy --data read through a memory map")
    p.add_argument("--chunk-rows", dest="chunk_rows", type=int, default=None,
                   help="streaming: rows per chunk (default: sized to --memory-mb)")
    p.add_argument("--memory-mb", dest="memory_mb", type=float, default=256.0,
                   help="streaming: the memory budget the default chunk is sized to (256)")
    p.add_argument("--resume", action="store_true",
                   help="streaming: continue an interrupted run from its last finished chunk")
    p.add_argument("--format", default="table", choices=["table", "json"])
    p.set_defaults(func=_attack)
    p = sub.add_parser("audit", help="write a robustness report (HTML and JSON) for a model",
                       description="Clean accuracy, robust accuracy against eps bracketed by "
                       "attacks (upper) and certified bounds (lower), per-row radii, the most "
                       "fragile rows, far points (affine models) and fingerprints, in one "
                       "self-contained HTML page and a JSON of the same numbers.")
    p.add_argument("model", help="the model file (as for attack --model)")
    p.add_argument("data", help="inputs: .npy, .npz, .csv or IDX")
    p.add_argument("--eps", type=float, nargs="+", required=True, help="radii for the table")
    p.add_argument("--labels", default=None, help="labels (default: the model's predictions)")
    p.add_argument("--norm", default="inf", type=_norm_arg, help="inf (default), 2 or 1")
    p.add_argument("--clip", type=float, nargs=2, metavar=("LO", "HI"), default=None)
    p.add_argument("--scale", type=float, default=1.0, help="multiply the data by this")
    p.add_argument("--steps", type=int, default=100, help="attack iterations (default 100)")
    p.add_argument("--rows", type=int, default=None, help="audit the first ROWS rows only")
    p.add_argument("--image-shape", type=int, nargs="+", default=None, metavar="N",
                   help="show rows as images of this shape (default: 8 8, 28 28, 32 32 3 or "
                        "64 64 3 when the feature count matches)")
    p.add_argument("--no-bounds", action="store_true", help="skip the certified radii")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow loading pickle/joblib models (they run code when loaded)")
    p.add_argument("--out", default="fastfool-audit.html", help="the HTML report "
                   "(default fastfool-audit.html; the JSON goes beside it, .json)")
    p.add_argument("--json", default=None, help="the JSON (default: --out with .json)")
    p.add_argument("--quiet", action="store_true", help="no summary on stdout")
    p.set_defaults(func=_audit)
    p = sub.add_parser("info", help="version, SIMD path, threads")
    p.set_defaults(func=_info)
    from .bench import add_arguments

    p = sub.add_parser("bench", help="micro-benchmarks against NumPy (and PyTorch when installed)",
                       description="Prints a table and, with --json, writes the results.")
    add_arguments(p)
    p.set_defaults(func=_bench)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.command is None:
        args = ap.parse_args(["demo"] + list(argv or []))
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, ImportError) as exc:
        print(f"fastfool: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastfool: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
