"""An audit of one model on one data set: clean accuracy, robust accuracy against the radius
bracketed from both sides (attacked: an upper bound; certified: a lower bound), per-row radii,
the most fragile rows with their adversarial versions, far high-confidence points for affine
models, and fingerprints of what was audited. :func:`audit` computes it; :class:`Audit` writes
it as a self-contained HTML page (figures embedded as PNG, no network needed) and as JSON with
the same numbers (``fastfool audit MODEL DATA --eps ...`` on the command line).

What the curves are:

- attacked (upper) at eps: the fraction of rows the model gets right that no attack fooled
  within eps: a minimum-norm attack's distance per row (``ff.minimal``, exact, for affine models;
  otherwise the smaller of FMN's and DeepFool's) and APGD-CE at each requested eps. Every
  fooled row is the model's own decision on the returned point.
- certified (lower) at eps: the fraction of rows the model gets right whose certified radius
  (``ff.certify``: exact for affine models; CROWN for MLPs; interval and first-order bounds for
  kernel SVMs) is at least eps. Models ``certify`` does not cover (forests, ONNX, torch
  modules) get no lower curve, and the report says so.

The true robust accuracy lies between the curves; the shaded gap is what neither side settles.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import html
import io
import json
import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np

from . import verdict
from ._checks import clip_bounds, norm_name
from ._files import sha256_file
from ._typing import ArrayLike, Clip, Norm

__all__ = ["Audit", "audit", "IMAGE_SHAPES"]

#: Feature counts shown as images, and the shape they are shown in.
IMAGE_SHAPES = {64: (8, 8), 784: (28, 28), 3072: (32, 32, 3), 12288: (64, 64, 3)}


def _sha256_arrays(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def model_fingerprint(model) -> str:
    """sha256 of the model's type, dtype and every array it holds (weights, biases, support
    vectors, coefficients; sorted by attribute name)."""
    arrays = [np.frombuffer(f"{type(model).__name__} {model.dtype}".encode(), np.uint8)]
    for name in sorted(vars(model)):
        v = getattr(model, name)
        if isinstance(v, np.ndarray) and v.dtype.kind in "fiub":
            arrays.append(v)
        elif isinstance(v, (list, tuple)) and v and all(isinstance(w, np.ndarray) for w in v):
            arrays.extend(w for w in v if w.dtype.kind in "fiub")
    return _sha256_arrays(arrays)


@dataclass
class Audit:
    """The audit's numbers (see the module docstring); ``to_html`` / ``save`` write it.

    Attributes
    ----------
    eps : the requested radii. attacked, certified : robust accuracy at each (certified None
        when no bound covers the model). clean_accuracy : on ``y``.
    attack_distance : (N,) the smallest adversarial distance found per row (0 for rows the
        model already gets wrong, inf where none was found). certified_radius : (N,) or None.
    fragile : indices of the most fragile rows (smallest distance), fragile_x_adv their
        adversarial versions. far : far-point summary (affine models) or None.
    meta : versions, fingerprints, settings, times. notes : what the reader should know.
    figures : name -> PNG bytes (empty without matplotlib).
    """

    eps: np.ndarray
    clean_accuracy: float
    attacked: np.ndarray
    certified: np.ndarray | None
    attack_distance: np.ndarray
    certified_radius: np.ndarray | None
    y: np.ndarray
    pred: np.ndarray
    fragile: np.ndarray
    fragile_x: np.ndarray
    fragile_x_adv: np.ndarray
    fragile_pred: np.ndarray
    far: list | None
    meta: dict
    notes: list = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    # -- numbers -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Everything but the figures, as JSON-ready Python values (inf written as null)."""
        def num(v):
            v = float(v)
            return v if np.isfinite(v) else None

        def arr(a):
            return None if a is None else [num(v) for v in np.asarray(a, np.float64)]

        return {
            "meta": self.meta, "notes": list(self.notes),
            "clean_accuracy": num(self.clean_accuracy),
            "eps": arr(self.eps), "robust_accuracy_attacked": arr(self.attacked),
            "robust_accuracy_certified": arr(self.certified),
            "per_row": {"y": [_plain(v) for v in self.y], "pred": [_plain(v) for v in self.pred],
                        "attack_distance": arr(self.attack_distance),
                        "certified_radius": arr(self.certified_radius)},
            "median_attack_distance": num(_median(self.attack_distance, self.y == self.pred)),
            "median_certified_radius": None if self.certified_radius is None else
            num(_median(self.certified_radius, self.y == self.pred)),
            "fragile_rows": [int(i) for i in self.fragile],
            "far_points": self.far,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_html(self) -> str:
        return _render(self)

    def save(self, html_path=None, json_path=None) -> list:
        """Write the HTML page and / or the JSON (each atomically: a failed write leaves the old
        file); returns the paths written."""
        from ._files import save_bytes
        out = []
        if html_path is not None:
            out.append(save_bytes(html_path, self.to_html().encode("utf-8")))
        if json_path is not None:
            out.append(save_bytes(json_path, self.to_json().encode("utf-8")))
        return out

    def __repr__(self) -> str:
        cert = "none" if self.certified is None else \
            ", ".join(f"{v:.3f}" for v in self.certified)
        return (f"Audit({len(self.y)} rows, clean {self.clean_accuracy:.3f}, eps "
                f"{[float(e) for e in self.eps]}: attacked "
                f"{', '.join(f'{v:.3f}' for v in self.attacked)}; certified {cert})")


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _median(a, mask):
    a = np.asarray(a, np.float64)[mask]
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else float("nan")


def audit(model, X: ArrayLike, y=None, *, eps, norm: Norm = "inf", clip: Clip = None,
          seed: int = 0, steps: int = 100, image_shape=None, n_fragile: int = 8,
          bounds: bool = True, figures: bool = True, threads: int | None = None,
          progress: bool = False, model_file: str | None = None,
          data_file: str | None = None) -> Audit:
    """Audit a model on rows X (see the module docstring).

    Parameters
    ----------
    model : a fastfool model (``ff.from_sklearn(est)``, ``ff.load_model``, ...).
    X : (N, D) rows; y : labels (default: the model's own predictions, so that the clean
        accuracy is 1 and the curves measure stability of its decisions).
    eps : one or more radii for the table and APGD-CE (at least one > 0).
    norm : "inf" (default), 2 or 1. clip : optional (lo, hi) box for attacks and bounds.
    seed : APGD's and FMN's draws (default 0). steps : attack iterations (default 100).
    image_shape : how to show a row as an image (default: 8x8, 28x28, 32x32x3 or 64x64x3 when
        the feature count is one of those; None otherwise: a table instead).
    n_fragile : rows shown (default 8). bounds : compute certified radii (default True).
    figures : draw the PNGs (needs matplotlib; default True).
    model_file, data_file : paths whose bytes are fingerprinted too (the CLI passes them).
    """
    from .attacks import _common
    from .attacks.apgd import apgd
    from .attacks.fmn import fmn
    from .attacks.minimal import deepfool, minimal
    from .certify import certify
    t0 = time.perf_counter()
    started = datetime.datetime.now(datetime.timezone.utc)
    model, X, yi, threads = _common.prepare(model, X, y, threads)
    eps = np.atleast_1d(np.asarray(eps, dtype=np.float64)).reshape(-1)
    if eps.size == 0 or not np.all(np.isfinite(eps)) or np.any(eps < 0) or not np.any(eps > 0):
        raise ValueError(f"eps: expected one or more finite radii >= 0 (one > 0), got "
                         f"{eps.tolist()}")
    eps = np.unique(eps)
    nrm = norm_name(norm, l1=True)
    steps = _common.count(steps, "steps")
    n_fragile = _common.count(n_fragile, "n_fragile", lo=0)
    N, D = X.shape
    lo, hi = clip_bounds(clip, D, X.dtype)
    _common.check_inside_clip(X, lo, hi)
    if image_shape is None:
        image_shape = IMAGE_SHAPES.get(D)
    elif int(np.prod(image_shape)) != D:
        raise ValueError(f"image_shape: {tuple(image_shape)} holds {int(np.prod(image_shape))} "
                         f"values, the rows have {D}")
    notes = []
    if y is None:
        notes.append("No labels were given: y is the model's own predictions (clean accuracy 1), "
                     "so the curves measure how stable its decisions are.")
    timing = {}
    # -- clean decisions -----------------------------------------------------------------------
    pred = verdict.decide(model, X, threads)
    correct = pred == yi
    clean = float(correct.mean()) if N else float("nan")
    nn = {"inf": "inf", "2": 2, "1": 1}[nrm]
    # -- minimum-norm attacks: an upper bound on each row's radius ------------------------------
    ts = time.perf_counter()
    affine = True
    try:
        model.affine_map()
    except ValueError:
        affine = False
    dist = np.where(correct, np.inf, 0.0)
    x_best = np.array(X)
    labels = model.classes_[yi]
    rows = np.flatnonzero(correct)
    used = []
    if rows.size:
        runs = []
        if affine and nrm != "1":
            used.append("minimal (exact)")
            runs.append(minimal(model, X[rows], labels[rows], norm=nn, clip=clip, threads=threads))
        else:
            used.append(f"fmn ({steps} steps)")
            runs.append(fmn(model, X[rows], labels[rows], norm=nn, steps=steps, clip=clip,
                            threads=threads, progress=progress))
            if nrm != "1":
                used.append("deepfool")
                runs.append(deepfool(model, X[rows], labels[rows], norm=nn, clip=clip,
                                     threads=threads))
        for res in runs:
            d = _distance(res.x_adv, X[rows], nrm)
            better = res.success & (d < dist[rows])
            dist[rows[better]] = d[better]
            x_best[rows[better]] = res.x_adv[better]
    timing["minimum_norm_attacks"] = time.perf_counter() - ts
    # -- APGD-CE at each radius ------------------------------------------------------------------
    ts = time.perf_counter()
    attacked = np.zeros(eps.size)
    used.append(f"apgd-ce ({steps} steps) at each eps")
    for i, e in enumerate(eps):
        todo = np.flatnonzero(correct & (dist > e))
        if e > 0 and todo.size:
            res = apgd(model, X[todo], labels[todo], eps=float(e), norm=nn, steps=steps,
                       clip=clip, seed=seed, threads=threads)
            d = _distance(res.x_adv, X[todo], nrm)
            hit = res.success & (d <= e * (1 + 1e-9))
            better = hit & (d < dist[todo])
            dist[todo[better]] = d[better]
            x_best[todo[better]] = res.x_adv[better]
        attacked[i] = float(np.mean(correct & (dist > e))) if N else float("nan")
    timing["apgd"] = time.perf_counter() - ts
    # -- certified radii: a lower bound --------------------------------------------------------------
    ts = time.perf_counter()
    radius = certified = None
    bound_method = None
    if bounds:
        try:
            up = np.where(np.isfinite(dist) & (dist > 0), dist, np.nan)
            fallback = np.nanmax(up) if np.any(np.isfinite(up)) else float(eps.max())
            up = np.where(np.isfinite(up), up, max(fallback, float(eps.max())) * 4)
            c = certify(model, X, nrm, clip=clip, upper=up, threads=threads)
            radius = np.where(correct, c.radius, 0.0)
            bound_method = c.method
            certified = np.array([float(np.mean(correct & (radius >= e))) for e in eps]) \
                if N else np.full(eps.size, np.nan)
            over = correct & (radius > dist * (1 + 1e-9))
            if over.any():  # never happens for a sound bound: say so loudly if it does
                notes.append(f"INCONSISTENT: {int(over.sum())} rows have a certified radius "
                             "above an adversarial example's distance; please report this.")
        except (NotImplementedError, ValueError) as exc:
            notes.append(f"No certified lower bound for this model: {exc}")
    else:
        notes.append("Certified radii were not computed (bounds=False).")
    timing["certify"] = time.perf_counter() - ts
    if np.any(correct & ~np.isfinite(dist)):
        notes.append(f"{int(np.sum(correct & ~np.isfinite(dist)))} rows were not fooled by any "
                     "attack at any radius tried: their attacked radius is unbounded here.")
    # -- the most fragile rows ---------------------------------------------------------------------
    cand = np.flatnonzero(correct & np.isfinite(dist))
    fragile = cand[np.argsort(dist[cand], kind="stable")][:n_fragile]
    frag_pred = model.classes_[verdict.decide(model, x_best[fragile], threads)] if fragile.size \
        else model.classes_[:0]
    # -- far points (affine models) --------------------------------------------------------------
    far = None
    if affine and N:
        from .attacks.inversion import far_points
        ts = time.perf_counter()
        fp = far_points(model, X, p=0.99, k=10.0, seed=seed, threads=threads)
        far = [{"class": _plain(t), "found": bool(f), "confidence": float(cf),
                "distance_in_data_radii": float(dd)}
               for t, f, cf, dd in zip(fp.target, fp.success, fp.confidence,
                                       fp.extra["distance"])]
        timing["far_points"] = time.perf_counter() - ts
    timing["total"] = time.perf_counter() - t0
    meta = {
        "fastfool_version": _version(), "date": started.isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.machine()} {platform.processor()}".strip(),
        "python": platform.python_version(), "numpy": np.__version__,
        "model": repr(model), "model_sha256": model_fingerprint(model),
        "data_sha256": _sha256_arrays([np.asarray(X, np.float64)]),
        "labels_sha256": _sha256_arrays([np.asarray(yi)]),
        "rows": int(N), "features": int(D), "classes": [_plain(c) for c in model.classes_],
        "norm": nrm, "clip": None if clip is None else [_plain_clip(v) for v in clip],
        "seed": int(seed), "steps": int(steps), "attacks": used,
        "bound": bound_method, "affine": bool(affine), "seconds": timing,
        "image_shape": None if image_shape is None else [int(v) for v in image_shape],
    }
    for key, path in (("model_file", model_file), ("data_file", data_file)):
        if path is not None:
            meta[key] = os.path.basename(os.fspath(path))
            meta[key + "_sha256"] = sha256_file(path)
    out = Audit(eps=eps, clean_accuracy=clean, attacked=attacked, certified=certified,
                attack_distance=dist, certified_radius=radius, y=labels,
                pred=model.classes_[pred], fragile=fragile, fragile_x=np.asarray(X[fragile]),
                fragile_x_adv=np.asarray(x_best[fragile]), fragile_pred=frag_pred, far=far,
                meta=meta, notes=notes)
    if figures:
        try:
            out.figures = _figures(out, image_shape)
        except ImportError:
            out.notes.append("matplotlib is not installed: the report has no figures "
                             "(pip install 'fastfool[plot]').")
    return out


def _plain_clip(v):
    if v is None:
        return None
    a = np.asarray(v)
    return float(a) if a.ndim == 0 else [float(t) for t in a.reshape(-1)]


def _version() -> str:
    import sys  # the package is loaded whenever this module is (no import cycle)
    return str(getattr(sys.modules.get(__package__), "__version__", "unknown"))


def _distance(x_adv, X, p):
    d = np.asarray(x_adv, np.float64) - np.asarray(X, np.float64)
    if not d.shape[1]:
        return np.zeros(d.shape[0])
    if p == "inf":
        return np.abs(d).max(axis=1)
    if p == "1":
        return np.abs(d).sum(axis=1)
    return np.sqrt(np.einsum("ij,ij->i", d, d))


# -- figures ---------------------------------------------------------------------------------------
def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return buf.getvalue()


def _figures(a: Audit, image_shape) -> dict:
    from .plot import _plt
    plt = _plt()
    out = {}
    correct = a.y == a.pred
    n = len(a.y)
    top = float(a.eps.max()) * 1.25
    finite = a.attack_distance[correct & np.isfinite(a.attack_distance)]
    if finite.size:
        top = max(top, float(np.quantile(finite, 0.9)))
    grid = np.linspace(0, top, 300)
    up = np.array([np.mean(correct & (a.attack_distance > e)) for e in grid]) if n else grid * 0
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(grid, up, color="C3", label="attacked (upper bound)")
    if a.certified_radius is not None:
        low = np.array([np.mean(correct & (a.certified_radius >= e)) for e in grid]) if n \
            else grid * 0
        ax.plot(grid, low, color="C0", label="certified (lower bound)")
        ax.fill_between(grid, low, up, color="0.6", alpha=0.35, label="unresolved gap")
        ax.plot(a.eps, a.certified, "o", color="C0", ms=4)
    ax.plot(a.eps, a.attacked, "s", color="C3", ms=5, label="APGD-CE at the requested eps")
    ax.axhline(a.clean_accuracy, color="0.3", lw=0.8, ls=":", label="clean accuracy")
    ax.set_xlabel(f"eps (L{'∞' if a.meta['norm'] == 'inf' else a.meta['norm']})")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, top)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("Robust accuracy against the radius")
    fig.tight_layout()
    out["robustness"] = _png(fig)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    vals = [finite]
    names = ["attacked distance"]
    if a.certified_radius is not None:
        vals.append(a.certified_radius[correct])
        names.append("certified radius")
    allv = np.concatenate([v for v in vals if v.size]) if any(v.size for v in vals) else \
        np.zeros(1)
    bins = np.linspace(0, max(float(allv.max()), 1e-12), 40)
    for v, name, col in zip(vals, names, ("C3", "C0")):
        if v.size:
            ax.hist(v, bins=bins, alpha=0.55, color=col, label=f"{name} (median "
                    f"{np.median(v):.4g})")
    ax.set_xlabel("per-row radius")
    ax.set_ylabel("rows")
    ax.legend(fontsize=8)
    ax.set_title("Per-row radii (rows the model gets right)")
    fig.tight_layout()
    out["radii"] = _png(fig)
    k = len(a.fragile)
    if image_shape is not None and k:
        fig, axes = plt.subplots(3, k, figsize=(1.5 * k + 0.6, 4.9), squeeze=False)
        for j in range(k):
            x, xa = a.fragile_x[j], a.fragile_x_adv[j]
            for r, (img, title) in enumerate((
                    (x, f"row {a.fragile[j]}\n{a.y[a.fragile[j]]}"),
                    (xa, f"-> {a.fragile_pred[j]}\nd={a.attack_distance[a.fragile[j]]:.3g}"),
                    (xa - x, "difference"))):
                axx = axes[r, j]
                im = np.asarray(img, np.float64).reshape(image_shape)
                if r == 2:
                    m = np.abs(im).max() or 1.0
                    axx.imshow(im if im.ndim == 2 else 0.5 + im / (2 * m), cmap="RdBu_r",
                               vmin=-m, vmax=m)
                else:
                    lo, hi = float(a.fragile_x.min()), float(a.fragile_x.max())
                    if im.ndim == 3:
                        im = np.clip((im - lo) / ((hi - lo) or 1.0), 0, 1)
                        axx.imshow(im)
                    else:
                        axx.imshow(im, cmap="gray", vmin=lo, vmax=hi)
                axx.set_title(title, fontsize=7)
                axx.axis("off")
        fig.suptitle("The most fragile rows: original, adversarial, difference", fontsize=9)
        fig.tight_layout()
        out["fragile"] = _png(fig)
    return out


# -- the page ----------------------------------------------------------------------------------
_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:960px;
margin:2em auto;padding:0 1em;color:#222}h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;
border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid
#ccc;padding:.25em .6em;text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}
td.l,th.l{text-align:left}img{max-width:100%}.note{background:#fff8e0;border-left:4px solid
#e0b000;padding:.4em .8em;margin:.4em 0}.mono{font-family:ui-monospace,monospace;font-size:.85em;
word-break:break-all}"""


def _fmt(v, digits=4):
    if v is None:
        return "&ndash;"
    if isinstance(v, (float, np.floating)):
        return "&infin;" if np.isinf(v) else ("&ndash;" if np.isnan(v) else f"{v:.{digits}g}")
    return html.escape(str(v))


def _img(png: bytes, alt: str) -> str:
    return (f'<img alt="{html.escape(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode("ascii")}">')


def _render(a: Audit) -> str:
    m = a.meta
    e = html.escape
    correct = a.y == a.pred
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>fastfool audit"
             f"</title><style>{_CSS}</style></head><body>",
             "<h1>fastfool robustness audit</h1>",
             f"<p>{e(m['model'])} on {m['rows']} rows of {m['features']} features; norm "
             f"L{'&infin;' if m['norm'] == 'inf' else e(m['norm'])}, clip "
             f"{e(str(m['clip']))}. fastfool {e(m['fastfool_version'])}, {e(m['date'])}, seed "
             f"{m['seed']}, {m['seconds']['total']:.2f} s.</p>"]
    for n in a.notes:
        parts.append(f"<div class='note'>{e(n)}</div>")
    parts.append("<h2 id='summary'>Summary</h2><table id='summary-table'>"
                 f"<tr><th class='l'>clean accuracy</th><td>{_fmt(a.clean_accuracy)}</td></tr>"
                 f"<tr><th class='l'>median attacked distance</th><td>"
                 f"{_fmt(_median(a.attack_distance, correct))}</td></tr>"
                 f"<tr><th class='l'>median certified radius</th><td>"
                 f"{_fmt(None if a.certified_radius is None else _median(a.certified_radius, correct))}"
                 f"</td></tr><tr><th class='l'>attacks</th><td class='l'>"
                 f"{e(', '.join(m['attacks']))}</td></tr><tr><th class='l'>bound</th>"
                 f"<td class='l'>{e(str(m['bound']))}</td></tr></table>")
    parts.append("<h2 id='robust-accuracy'>Robust accuracy</h2><table id='robust-table'>"
                 "<tr><th>eps</th><th>attacked (upper)</th><th>certified (lower)</th>"
                 "<th>gap</th></tr>")
    for i, ev in enumerate(a.eps):
        c = None if a.certified is None else a.certified[i]
        gap = None if c is None else a.attacked[i] - c
        parts.append(f"<tr><td>{_fmt(ev)}</td><td>{_fmt(a.attacked[i])}</td><td>{_fmt(c)}</td>"
                     f"<td>{_fmt(gap)}</td></tr>")
    parts.append("</table>")
    if "robustness" in a.figures:
        parts.append(_img(a.figures["robustness"], "robust accuracy against eps"))
    parts.append("<h2 id='radii'>Per-row radii</h2>")
    if "radii" in a.figures:
        parts.append(_img(a.figures["radii"], "per-row radii"))
    parts.append("<h2 id='fragile'>The most fragile rows</h2>")
    if "fragile" in a.figures:
        parts.append(_img(a.figures["fragile"], "fragile rows"))
    parts.append("<table id='fragile-table'><tr><th>row</th><th>label</th><th>decided after"
                 "</th><th>distance</th><th>certified</th></tr>")
    for j, i in enumerate(a.fragile):
        cr = None if a.certified_radius is None else a.certified_radius[i]
        parts.append(f"<tr><td>{int(i)}</td><td>{_fmt(a.y[i])}</td><td>"
                     f"{_fmt(a.fragile_pred[j])}</td><td>{_fmt(a.attack_distance[i])}</td>"
                     f"<td>{_fmt(cr)}</td></tr>")
    parts.append("</table>")
    if a.far is not None:
        parts.append("<h2 id='far'>Far points (affine model)</h2><p>Points found at least 10 "
                     "data radii from the data's centre that the model assigns a class with "
                     "probability &ge; 0.99: an affine model's decision regions reach "
                     "arbitrarily far.</p><table id='far-table'><tr><th>class</th><th>found</th>"
                     "<th>confidence</th><th>distance (data radii)</th></tr>")
        for f in a.far:
            parts.append(f"<tr><td>{_fmt(f['class'])}</td><td>{'yes' if f['found'] else 'no'}"
                         f"</td><td>{_fmt(f['confidence'])}</td><td>"
                         f"{_fmt(f['distance_in_data_radii'])}</td></tr>")
        parts.append("</table>")
    parts.append("<h2 id='fingerprints'>What was audited</h2><table id='meta-table'>")
    for key in ("fastfool_version", "date", "machine", "python", "numpy", "model",
                "model_sha256", "model_file", "model_file_sha256", "data_file",
                "data_file_sha256", "data_sha256", "labels_sha256", "rows", "features",
                "classes", "norm", "clip", "seed", "steps", "image_shape"):
        if key in m:
            parts.append(f"<tr><th class='l'>{e(key)}</th><td class='l mono'>"
                         f"{e(str(m[key]))}</td></tr>")
    secs = ", ".join(f"{k} {v:.2f} s" for k, v in m["seconds"].items())
    parts.append(f"<tr><th class='l'>seconds</th><td class='l'>{e(secs)}</td></tr></table>")
    parts.append("<h2>How to read this</h2><p>The attacked curve counts rows no attack fooled "
                 "within eps (every fooled row is the model's own decision on the returned "
                 "point); the certified curve counts rows whose certified radius is at least "
                 "eps (a sound lower bound). The true robust accuracy lies between them.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
