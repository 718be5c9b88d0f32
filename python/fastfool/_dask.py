"""Dask arrays in, Dask arrays out (issue 21, item 2): an attack (or a model's predictions) on a
``dask.array.Array`` chunked by rows runs block by block on whatever scheduler is active -
threads, processes or a ``distributed.Client`` - and returns lazy results.

Each block is attacked as rows ``a:b`` of the whole array (``row_offset=a`` for the attacks
that draw random numbers: fastfool._random keys every draw by the global row), so the result
equals the in-memory run bit for bit for those attacks, whatever the chunking. The model enters
the graph once (one node that every block task reads: a distributed scheduler sends it to each
worker once). Each block runs with one fastfool thread unless ``threads=`` says otherwise (a
Dask worker's threads are the parallelism). Nothing here imports Dask until a Dask array is
seen: the extra is optional (``pip install ".[dask]"``).
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

from ._checks import is_dask  # noqa: F401  (re-exported)

#: Per-row fields of an AttackResult (``correct`` apart: lazy, as in memory).
_FIELDS = ("x_adv", "success", "pred", "confidence", "l2", "linf", "iterations", "queries",
           "y", "target")


def _require():
    try:
        import dask
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - a Dask array implies Dask is installed
        raise ImportError("Dask arrays need dask: pip install 'fastfool[dask]'") from exc
    return dask, da


def rows_of(X, name="X"):
    """X as a 2-D Dask array with one chunk across the columns (rechunked if needed)."""
    if X.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D Dask array (rows, features), got {X.ndim}-D")
    if any(np.isnan(c) for c in X.chunks[0]):
        raise ValueError(f"{name}: the Dask array's row chunks are unknown (call "
                         "X.compute_chunk_sizes() first)")
    return X.rechunk({1: -1}) if X.numblocks[1] != 1 else X


def labels_like(y, X, name="y"):
    """Labels as a 1-D Dask array with X's row chunks (None stays None)."""
    if y is None:
        return None
    _, da = _require()
    if not is_dask(y):
        y = np.asarray(y)
        if y.ndim == 0:
            y = np.full(X.shape[0], y[()], dtype=y.dtype)
        if y.shape != (X.shape[0],):
            raise ValueError(f"{name}: expected {X.shape[0]} labels (one per row), got shape "
                             f"{y.shape}")
        return da.from_array(y, chunks=(X.chunks[0],))
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"{name}: expected {X.shape[0]} labels (one per row), got shape "
                         f"{y.shape}")
    return y.rechunk((X.chunks[0],))


def map_rows(fn, X, cols, dtype, *others, name=None):
    """``fn(block, *other_blocks)`` over X's row blocks: an (N, cols) Dask array (or (N,) with
    cols None). ``others``: 1-D Dask arrays with X's row chunks. ``name``: the output's key
    (default: a token of the arguments, which pickles fn and what it holds)."""
    X = rows_of(X)
    # 1-D arrays as (N, 1) columns: Dask aligns a block's arguments by their trailing axes
    cols_ = [o[:, None] for o in others]
    f = functools.partial(_ravel_others, fn) if others else fn
    kw = {} if name is None else {"name": name}
    if cols is None:
        return X.map_blocks(f, *cols_, drop_axis=1, chunks=(X.chunks[0],), dtype=dtype, **kw)
    return X.map_blocks(f, *cols_, chunks=(X.chunks[0], (cols,)), dtype=dtype, **kw)


def _ravel_others(fn, block, *others):
    return fn(block, *[np.asarray(o).reshape(-1) for o in others])


def _block(fn, model, xb, yb, offset, kwargs, takes_offset):
    """Attack one block (its rows' global offset given); the per-row fields as NumPy arrays."""
    kw = dict(kwargs)
    if takes_offset:
        kw["row_offset"] = offset
    res = fn(model, np.asarray(xb), None if yb is None else np.asarray(yb), **kw)
    out = {f: getattr(res, f) for f in _FIELDS}
    out["extra"] = {k: v for k, v in res.extra.items()
                    if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == res.n}
    out["attack"], out["params"] = res.attack, res.params
    return out


class _Job:
    """One block's attack, ``fn(model, block, labels, **kwargs)`` at the block's row offset:
    the attack, its settings and whether it takes ``row_offset`` held in one object, which a
    Dask graph passes to its task as it is (a settings dict inside a task would be searched for
    keys and tasks)."""

    __slots__ = ("fn", "kwargs", "takes_offset")

    def __init__(self, fn, kwargs, takes_offset):
        self.fn, self.kwargs, self.takes_offset = fn, kwargs, takes_offset

    def __call__(self, model, xb, yb, offset):
        return _block(self.fn, model, xb, yb, offset, self.kwargs, self.takes_offset)

    def __reduce__(self):
        return (_Job, (self.fn, self.kwargs, self.takes_offset))


def attack(fn, model, X, y, kwargs):
    """Run attack ``fn`` block by block over a Dask array X: a lazy AttackResult."""
    dask, da = _require()
    from .result import AttackResult
    X = rows_of(X)
    y = labels_like(y, X)
    kwargs = dict(kwargs)
    params = inspect.signature(fn).parameters
    takes_offset = "row_offset" in params
    base = int(kwargs.pop("row_offset", 0) or 0)
    if base and not takes_offset:
        raise TypeError(f"row_offset: {fn.__name__} takes no row_offset (it draws no random "
                        "numbers: any split of the rows gives the same result)")
    if "threads" in params and kwargs.get("threads") is None:
        kwargs["threads"] = 1  # one fastfool thread per Dask thread
    if "progress" in params:
        kwargs["progress"] = False  # no bars from inside the workers
    N, D = X.shape
    # the result's structure (which fields exist, their dtypes, per-row extras) from a probe
    # run on the first two rows
    k = min(N, 2)
    probe = _block(fn, model, X[:k].compute(), None if y is None else y[:k].compute(), base,
                   kwargs, takes_offset)
    # the graph's keys from one token of the whole call (Dask would otherwise tokenize every
    # task's arguments, the model and the attack included: 10 ms a block, 1.66x the in-memory
    # run at 10k-row blocks); the same call gives the same keys, as with pure=True
    from dask.base import tokenize
    tok = tokenize(fn.__module__, fn.__qualname__, X.name, None if y is None else y.name, base,
                   kwargs, tokenize(model))
    # one graph layer: the model as one node, block i as _Job(model, X block i, y block i,
    # offset i) (the attack, its settings and whether it takes row_offset in one object that
    # Dask passes as it is)
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph
    name = fn.__name__
    pname, mkey = f"fastfool-{name}-{tok}", f"fastfool-model-{tok}"
    xkeys = [k[0] for k in X.__dask_keys__()]
    ykeys = [None] * len(xkeys) if y is None else list(y.__dask_keys__())
    offsets = np.concatenate([[0], np.cumsum(X.chunks[0])]).astype(np.int64)
    job = _Job(fn, kwargs, takes_offset)
    layer = {mkey: model}
    for i, (xk, yk) in enumerate(zip(xkeys, ykeys)):
        layer[(pname, i)] = (job, mkey, xk, yk, int(base + offsets[i]))
    graph = HighLevelGraph.from_collections(pname, layer,
                                            dependencies=[X] if y is None else [X, y])
    parts = [Delayed((pname, i), graph, layer=pname) for i in range(len(xkeys))]

    def lazy(field, get, sample):
        # one graph layer per field: block i is get(part i), keyed like any Dask array's blocks
        if sample is None:
            return None
        sample = np.asarray(sample)
        if not parts:
            return da.from_array(sample[:0])
        key = f"fastfool-{name}-{field}-{tok}"
        tail = (0,) * (sample.ndim - 1)
        flayer = {(key, i) + tail: (get, p.key) for i, p in enumerate(parts)}
        fgraph = HighLevelGraph.from_collections(key, flayer, dependencies=parts[:1])
        return da.Array(fgraph, key, chunks=(X.chunks[0],) + tuple((int(c),) for c in
                                                                 sample.shape[1:]),
                        dtype=sample.dtype)

    fields = {f: lazy(f, functools.partial(_get, f), probe[f]) for f in _FIELDS}
    # correct: computed only when asked for (``result.correct``), as an in-memory result does
    if y is None:
        fields["correct"] = da.ones(N, dtype=bool, chunks=(X.chunks[0],))
    else:
        fields["correct"] = map_rows(functools.partial(_correct_block, model), X, None, bool, y,
                                     name=f"fastfool-{name}-correct-{tok}")
    extra = {e: lazy(f"extra-{e}", functools.partial(_get_extra, e), v)
             for e, v in probe["extra"].items()}
    res = AttackResult(
        x_adv=fields["x_adv"], success=fields["success"], pred=fields["pred"],
        confidence=fields["confidence"], l2=fields["l2"], linf=fields["linf"],
        iterations=fields["iterations"], y=fields["y"], target=fields["target"],
        queries=fields["queries"], _correct=fields["correct"], attack=probe["attack"],
        params={**probe["params"], "row_offset": base,
                "dask_row_chunks": [int(c) for c in X.chunks[0]]},
        elapsed=float("nan"), extra=extra)
    # compute() runs the block tasks themselves and joins their arrays (one concatenation per
    # field, none for one block) instead of going through the per-field Dask arrays
    res._dask_parts = (parts, [f for f in _FIELDS if probe[f] is not None], list(extra))
    return res



def _correct_block(model, xb, yb):
    """Whether the model gives each row of the block its label (predict; the argmax of
    predict_proba for a classifier without predict)."""
    xb = np.asarray(xb)
    if callable(getattr(model, "predict", None)):
        pred = np.asarray(model.predict(xb))
    else:
        pred = np.asarray(model.classes_)[np.argmax(model.predict_proba(xb), axis=1)]
    return pred == np.asarray(yb)


def _get(name, part):
    return part[name]


def _get_extra(name, part):
    return part["extra"][name]


def dask_aware(fn):
    """Decorator for the attacks: a Dask array X goes to :func:`attack` (the labels are the
    third positional argument or ``y=``); anything else runs as before."""
    @functools.wraps(fn)
    def wrapper(model, X, *args, **kwargs):
        if is_dask(X):
            if len(args) > 1:
                raise TypeError(f"{fn.__name__}: pass the settings by name")
            y = args[0] if args else kwargs.pop("y", None)
            # the decorated function itself travels to the workers: pickled by reference (its
            # module's attribute), not by value; it runs fn on the NumPy blocks
            return attack(wrapper, model, X, y, kwargs)
        return fn(model, X, *args, **kwargs)
    wrapper.__wrapped__ = fn
    return wrapper
