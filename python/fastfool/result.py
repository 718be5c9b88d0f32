"""AttackResult: what every attack returns, with a readable summary and .npz round-trip."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

import numpy as np

from ._files import check_npz, decode_labels, encode_labels, save_npz

__all__ = ["AttackResult"]

_ARRAYS = ("x_adv", "success", "pred", "confidence", "l2", "linf", "iterations", "queries",
           "y", "target", "correct")
_FORMAT_VERSION = 1


@dataclass
class AttackResult:
    """Outcome of an attack over N rows.

    Attributes
    ----------
    x_adv : (N, D) adversarial inputs.
    success : (N,) bool: the user's model's decision on the returned ``x_adv`` (as
        :meth:`fastfool.models.Model.predict` and, for ``from_sklearn`` models, the estimator's
        own ``predict`` give it; :mod:`fastfool.verdict`) differs from ``y`` (untargeted) or is
        ``target`` (targeted; never for a row whose target is its own label ``y``).
    pred : (N,) that decision (labels) for ``x_adv``.
    confidence : (N,) the model's probability of ``pred`` at ``x_adv`` (float64 softmax of the
        reference logits).
    l2, linf : (N,) norms of ``x_adv - X`` (the original inputs; NaN where there is none).
    iterations : (N,) gradient steps spent per row (0 for closed-form attacks).
    queries : (N,) model queries per row (black-box attacks), else None.
    y : (N,) the labels attacked (given, or the model's own predictions).
    target : (N,) target labels of a targeted attack, else None.
    correct : (N,) bool, whether the model gave the original input its label ``y`` (all True
        when ``y`` was the model's own predictions); None where there is no original input.
        Computed on first use (one pass of the model over X).
    attack : the attack's name; params : its parameters; elapsed : seconds.
    extra : attack-specific per-row arrays (e.g. ``code_error`` of :func:`fastfool.invert`).
    """

    x_adv: np.ndarray
    success: np.ndarray
    pred: np.ndarray
    confidence: np.ndarray
    l2: np.ndarray
    linf: np.ndarray
    iterations: np.ndarray
    y: np.ndarray | None = None
    target: np.ndarray | None = None
    queries: np.ndarray | None = None
    #: ``correct`` as given: an array, None, or a function computing it on first use (the
    #: attacks pass one: it costs a pass of the model over X that most loops never need)
    _correct: object = field(default=None, repr=False)
    attack: str = ""
    params: dict = field(default_factory=dict)
    elapsed: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def lazy(self) -> bool:
        """True for the result of an attack on a Dask array: its per-row arrays are Dask arrays
        until :meth:`compute`."""
        from ._checks import is_dask
        return any(is_dask(getattr(self, f)) for f in ("x_adv", "success"))

    def compute(self, **kwargs) -> "AttackResult":
        """The result with every Dask array computed (one ``dask.compute`` call for all of them,
        ``kwargs`` passed on: e.g. ``scheduler=``); a NumPy result is returned as it is."""
        if not self.lazy:
            return self
        import time

        import dask
        from ._checks import is_dask
        if getattr(self, "_dask_parts", None) is not None and self._dask_parts[0]:
            t0 = time.perf_counter()
            kw, extra_vals = _compute_parts(self._dask_parts, **kwargs)
            out = {f.name: getattr(self, f.name) for f in fields(self)}
            out.update(kw)
            out["extra"] = {**self.extra, **extra_vals}
            out["elapsed"] = time.perf_counter() - t0
            return AttackResult(**out)
        # ``correct`` stays lazy (computed on first use, as in memory)
        names = [f for f in _ARRAYS if f != "correct" and is_dask(getattr(self, f))]
        keys = [k for k, v in self.extra.items() if is_dask(v)]
        t0 = time.perf_counter()
        vals = dask.compute(*[getattr(self, f) for f in names],
                            *[self.extra[k] for k in keys], **kwargs)
        kw = {f: v for f, v in zip(names, vals[:len(names)])}
        extra = dict(self.extra)
        extra.update(zip(keys, vals[len(names):]))
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(kw)
        out["extra"] = extra
        out["elapsed"] = time.perf_counter() - t0
        return AttackResult(**out)

    @property
    def correct(self) -> np.ndarray | None:
        if hasattr(self._correct, "dask") and hasattr(self._correct, "compute"):  # Dask
            self._correct = np.asarray(self._correct.compute(), dtype=bool)
        if callable(self._correct):
            self._correct = np.asarray(self._correct(), dtype=bool)
        return self._correct

    @property
    def perturbation(self) -> np.ndarray | None:
        """The one perturbation of a universal attack (:func:`fastfool.universal`), shape (D,);
        None for per-row attacks."""
        return self.extra.get("perturbation")

    @property
    def n(self) -> int:
        return int(self.x_adv.shape[0])

    @property
    def rows_per_second(self) -> float:
        return self.n / self.elapsed if self.elapsed > 0 else float("inf")

    @property
    def success_rate(self) -> float:
        """Fraction of all rows with ``success`` (rows the model already got wrong included)."""
        return float(np.mean(self.success)) if self.n else float("nan")

    @property
    def fooled_rate(self) -> float:
        """Fraction of the rows the model classified correctly (``correct``) that the attack
        fooled: the rate :func:`fastfool.transfer` reports. NaN when no row was correct, or when
        ``correct`` is unknown."""
        if self.correct is None:
            return float("nan")
        c = np.asarray(self.correct, dtype=bool)
        return float(np.mean(np.asarray(self.success)[c])) if c.any() else float("nan")

    def _median(self, a, only_success=True):
        a = np.asarray(a, dtype=np.float64)
        if only_success:
            a = a[self.success]
        a = a[np.isfinite(a)]
        return float(np.median(a)) if a.size else float("nan")

    def summary(self) -> dict:
        """Success rate, median norms over successful rows, mean confidence, throughput (a lazy
        result is computed first)."""
        if self.lazy:
            return self.compute().summary()
        out = {
            "attack": self.attack,
            "rows": self.n,
            "success_rate": self.success_rate,
            "fooled_rate": self.fooled_rate,
            "median_l2": self._median(self.l2),
            "median_linf": self._median(self.linf),
            "mean_confidence": float(np.mean(self.confidence)) if self.n else float("nan"),
            "mean_iterations": float(np.mean(self.iterations)) if self.n else float("nan"),
            "elapsed_s": self.elapsed,
            "rows_per_second": self.rows_per_second,
        }
        if self.queries is not None:
            out["mean_queries"] = float(np.mean(self.queries)) if self.n else float("nan")
        if "stage_names" in self.extra:  # an ensemble (fastfool.autoattack): its stage table
            ex = self.extra
            out["clean_accuracy"] = float(ex["clean_accuracy"])
            out["stages"] = [
                {"attack": str(n), "robust_accuracy": float(a), "seconds": float(t),
                 "queries": int(q)}
                for n, a, t, q in zip(ex["stage_names"], ex["stage_robust_accuracy"],
                                      ex["stage_seconds"], ex["stage_queries"])]
            if "certified" in ex:
                out["certified"] = int(np.sum(ex["certified"]))
                out["certify_seconds"] = float(ex["certify_seconds"])
        return out

    def __repr__(self) -> str:
        if self.lazy:  # a repr never runs the attack
            chunks = self.params.get("dask_row_chunks", [])
            return (f"AttackResult({self.attack or 'attack'}: {self.n} rows, lazy (Dask, "
                    f"{len(chunks)} blocks): .compute() runs it)")
        s = self.summary()
        text = (f"AttackResult({s['attack'] or 'attack'}: {s['rows']} rows, success "
                f"{100 * s['success_rate']:.1f}% of all rows, fooled {100 * s['fooled_rate']:.1f}% "
                f"of those correct, median L2 {s['median_l2']:.4g}, median Linf "
                f"{s['median_linf']:.4g}, mean confidence {s['mean_confidence']:.3f}, "
                f"{s['rows_per_second']:,.0f} rows/s")
        if "mean_queries" in s:
            text += f", {s['mean_queries']:.0f} queries/row"
        return text + ")"

    def save(self, path) -> None:
        """Write to ``.npz`` (no pickle: arrays plus a JSON header). A GPU result's ``x_adv``
        (CuPy) is copied to the host for the file. The write is atomic: if it fails (disk full,
        Ctrl-C), a previous file at ``path`` is left as it was. A lazy result is computed
        first."""
        if self.lazy:
            return self.compute().save(path)
        arrays = {k: getattr(self, k) for k in _ARRAYS if getattr(self, k) is not None}  # computes correct
        arrays = {k: v.get() if hasattr(v, "__cuda_array_interface__") else v
                  for k, v in arrays.items()}
        objects = []  # label arrays that were object arrays (restored as such by load)
        for k in ("y", "target", "pred"):
            if k in arrays:
                arrays[k], was = encode_labels(arrays[k], k)
                if was:
                    objects.append(k)
        for k, v in self.extra.items():
            v = np.asarray(v)
            if v.dtype == object:  # no pickle in the file: encodable values only
                v, was = encode_labels(v, f"extra[{k!r}]")
                if was:
                    objects.append(f"extra_{k}")
            arrays[f"extra_{k}"] = v
        header = {"format": "fastfool.AttackResult", "version": _FORMAT_VERSION,
                  "attack": self.attack, "params": self.params, "elapsed": self.elapsed,
                  "object_arrays": objects}
        save_npz(path, {"_header": np.array(json.dumps(header, default=_jsonable)), **arrays})

    @classmethod
    def load(cls, path) -> "AttackResult":
        """Read a file written by :meth:`save` (``allow_pickle=False``); raises ``ValueError``
        naming the file for anything that is not such a file (``FileNotFoundError`` when it is
        missing)."""
        try:
            return cls._load(path)
        except (FileNotFoundError, IsADirectoryError):
            raise
        except ValueError as exc:
            if str(exc).startswith(str(path)):
                raise
            raise ValueError(f"{path}: not a readable fastfool AttackResult file ({exc})") from exc
        except Exception as exc:  # BadZipFile, JSONDecodeError, KeyError, IndexError, OSError...
            raise ValueError(f"{path}: not a readable fastfool AttackResult file "
                             f"({type(exc).__name__}: {exc})") from exc

    @classmethod
    def _load(cls, path) -> "AttackResult":
        # our own handle: np.load leaks the file it opened when the zip is unreadable
        with open(path, "rb") as fh:
            check_npz(fh, path)
            return cls._read(fh, path)

    @classmethod
    def _read(cls, fh, path) -> "AttackResult":
        with np.load(fh, allow_pickle=False) as f:
            if "_header" not in f:
                raise ValueError(f"{path}: not a fastfool AttackResult file (no header)")
            header = json.loads(str(f["_header"]))
            if header.get("format") != "fastfool.AttackResult":
                raise ValueError(f"{path}: not a fastfool AttackResult file")
            if header.get("version", 0) > _FORMAT_VERSION:
                raise ValueError(f"{path}: written by a newer fastfool (format {header['version']})")
            objects = set(header.get("object_arrays", []))
            kw = {k: decode_labels(f[k], k in objects) for k in _ARRAYS if k in f}
            if "correct" in kw:
                kw["_correct"] = kw.pop("correct")
            extra = {k[len("extra_"):]: decode_labels(f[k], k in objects)
                     for k in f.files if k.startswith("extra_")}
        missing = [fd.name for fd in fields(cls) if fd.name in _ARRAYS and fd.default is not None
                   and fd.name not in kw and fd.name not in ("queries", "correct")]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}")
        return cls(attack=header.get("attack", ""), params=header.get("params", {}),
                   elapsed=float(header.get("elapsed", 0.0)), extra=extra, **kw)


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist() if o.size <= 64 else f"<array {o.shape}>"
    return repr(o)


def _compute_parts(dask_parts, **kwargs):
    """The per-row fields and extras of a lazy result (fastfool._dask) from its block tasks:
    one ``dask.compute`` of the blocks, then one concatenation per field (none for one block)."""
    import dask
    parts, names, extras = dask_parts
    vals = dask.compute(*parts, **kwargs)

    def join(get):
        arrs = [get(v) for v in vals]
        return arrs[0] if len(arrs) == 1 else np.concatenate(arrs)

    fields_ = {f: join(lambda v, f=f: v[f]) for f in names} if vals else {}
    extra = {e: join(lambda v, e=e: v["extra"][e]) for e in extras} if vals else {}
    return fields_, extra
