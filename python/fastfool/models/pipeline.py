"""scikit-learn pipelines folded into one dense model, in the user's raw feature space.

An affine preprocessing step maps a row ``x`` to ``z = (x - m) @ A + c`` (a scaler: ``A``
diagonal; PCA / TruncatedSVD: dense; a ColumnTransformer: a block of those over column
subsets). A chain of them is one affine map ``z = x @ A_t + c_t``, and a dense classifier's
first layer ``z @ W1 + b1`` becomes ``x @ (A_t @ W1) + (c_t @ W1 + b1)``: the kernels see one
dense model, and attacks, ``eps``, clip bounds and ``x_adv`` are in the units of the data the
user feeds the pipeline. A linear model after affine steps is still affine, so the exact
minimal perturbations and certificates stay exact.

Verdicts stay the pipeline's (:mod:`fastfool.verdict`). Folding rounds (``A_t @ W1`` in
float64), and scikit-learn evaluates the steps one by one (in float32 for float32 inputs:
scalers keep the input's dtype), so the rounding bound of every verdict is widened by

- the fold's own rounding, carried to the logits (``|W1' - exact| <= gamma_n |A_t| |W1| +
  E_A |W1|``, ``E_A`` the error of ``A_t``; the same for the bias), and
- a bound on scikit-learn's evaluation of the pipeline against the exact one (each step
  ``|z^ - z| <= gamma_{n+4} (w (|x| + |m|) + |c|)`` in max-norm, then the classifier's own
  bound on the computed ``z^``, with the input error carried through its layers).

Rows whose margin is not clear of both are decided by ``pipeline.predict`` itself.
"""

from __future__ import annotations

import numpy as np

from .. import verdict

__all__ = ["Affine", "affine_chain", "unwrap_pipeline"]

#: Steps that are affine, and how they are read.
AFFINE_STEPS = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "PCA",
                "TruncatedSVD", "FunctionTransformer", "ColumnTransformer", "Pipeline",
                "'passthrough'")

#: Steps that are not affine, with the reason given to the user.
_NOT_AFFINE = {
    "Normalizer": "it divides each row by its own norm (not affine: the gradient through the "
                  "norm is not folded)",
    "PolynomialFeatures": "it multiplies features together (not affine)",
    "SplineTransformer": "it maps features through splines (not affine)",
    "QuantileTransformer": "it maps each feature through its empirical CDF (piecewise, with "
                           "zero gradient outside the training range)",
    "PowerTransformer": "Yeo-Johnson / Box-Cox are not affine",
    "KBinsDiscretizer": "its output is piecewise constant (zero gradient)",
    "Binarizer": "its output is piecewise constant (zero gradient)",
    "OneHotEncoder": "its output is piecewise constant (zero gradient)",
    "OrdinalEncoder": "its output is piecewise constant",
    "TargetEncoder": "its output is piecewise constant",
    "SimpleImputer": "imputation only acts on missing values, which attacks never produce; "
                     "fit the pipeline without it, or drop it before converting",
    "KNNImputer": "imputation is not affine",
    "IterativeImputer": "imputation is not affine",
    "SelectKBest": "use the columns it keeps (select them before the pipeline)",
    "VarianceThreshold": "use the columns it keeps (select them before the pipeline)",
}


class Affine:
    """One affine map ``z = (x - m) @ A + c`` as scikit-learn evaluates it: ``m`` (D_in,) or
    None, ``A`` (D_in,) diagonal or (D_in, D_out) dense, ``c`` (D_out,) or None, all float64;
    ``A_err``: a bound on ``|A - exact|`` (elementwise; the stored reciprocal of a scale is
    rounded); ``n``: the fan-in of one output (1 for a diagonal)."""

    def __init__(self, name, m, A, c=None, A_err=0.0, n=1):
        self.name = name
        self.m = None if m is None else np.asarray(m, np.float64).reshape(-1)
        self.A = np.asarray(A, np.float64)
        self.c = None if c is None else np.asarray(c, np.float64).reshape(-1)
        self.A_err = A_err
        self.n = n

    @property
    def diagonal(self) -> bool:
        return self.A.ndim == 1

    @property
    def d_in(self) -> int:
        return self.A.shape[0]

    @property
    def d_out(self) -> int:
        return self.A.shape[0] if self.diagonal else self.A.shape[1]

    def dense(self):
        return np.diag(self.A) if self.diagonal else self.A

    def transform(self, X):
        """z in float64 (tests: the reference of the folded map)."""
        X = np.asarray(X, np.float64)
        Z = X - self.m if self.m is not None else X
        Z = Z * self.A if self.diagonal else Z @ self.A
        return Z + self.c if self.c is not None else Z

    def constants(self):
        """(w, b, n) of verdict.layer_error_bound for scikit-learn's evaluation of this step:
        w the max column 1-norm of |A|, b = w max|m| + max|c| (the centring's magnitude
        enters before the product), n the fan-in plus the extra roundings of the step."""
        aA = np.abs(self.A)
        w = float(aA.max()) if self.diagonal else float(aA.sum(axis=0).max())
        mm = float(np.abs(self.m).max()) if self.m is not None and self.m.size else 0.0
        cm = float(np.abs(self.c).max()) if self.c is not None and self.c.size else 0.0
        return w * (1 + 1e-12), w * mm + cm, self.n + 4


def _vec(a, D, name):
    a = np.asarray(a, np.float64).reshape(-1)
    if a.size == 1 and D != 1:
        a = np.full(D, float(a[0]))
    if a.shape != (D,):
        raise ValueError(f"from_sklearn: {name} has shape {a.shape}, expected ({D},)")
    return a


def _recip(scale):
    """1/scale as scikit-learn divides by it: the reciprocal, rounded once (A_err = u |A|)."""
    r = 1.0 / np.asarray(scale, np.float64)
    return r, np.abs(r) * verdict.U64


def _n_in(step):
    n = getattr(step, "n_features_in_", None)
    if n is None:
        raise ValueError(f"from_sklearn: the step {type(step).__name__} is not fitted "
                         "(no n_features_in_)")
    return int(n)


def step_maps(step, where: str) -> list[Affine]:
    """The affine maps of one fitted preprocessing step (a list: a nested pipeline gives
    several); refuses steps that are not affine, naming them and why."""
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return []
    name = type(step).__name__
    if name == "Pipeline":
        out = []
        for sname, s in step.steps:
            out += step_maps(s, f"{where} > {sname}")
        return out
    if name == "FunctionTransformer":
        if step.func is not None:
            raise ValueError(f"from_sklearn: the step {where!r} (FunctionTransformer with "
                             f"func={getattr(step.func, '__name__', step.func)!r}) is an arbitrary "
                             "function; only FunctionTransformer(func=None) (the identity) folds")
        return []
    if name in _NOT_AFFINE:
        raise ValueError(f"from_sklearn: the step {where!r} ({name}) cannot be folded: "
                         f"{_NOT_AFFINE[name]}. Affine steps fold exactly: "
                         f"{', '.join(AFFINE_STEPS)}")
    if getattr(step, "clip", False):
        raise ValueError(f"from_sklearn: the step {where!r} ({name}(clip=True)) clips its output, "
                         "which is not affine; refit with clip=False")
    D = _n_in(step) if name != "ColumnTransformer" else None
    if name == "StandardScaler":
        m = _vec(step.mean_, D, "StandardScaler.mean_") if step.with_mean else None
        if step.with_std:
            A, err = _recip(_vec(step.scale_, D, "StandardScaler.scale_"))
        else:
            A, err = np.ones(D), 0.0
        return [Affine(f"{where} (StandardScaler)", m, A, None, err)]
    if name == "RobustScaler":
        m = _vec(step.center_, D, "RobustScaler.center_") if step.with_centering else None
        if step.with_scaling:
            A, err = _recip(_vec(step.scale_, D, "RobustScaler.scale_"))
        else:
            A, err = np.ones(D), 0.0
        return [Affine(f"{where} (RobustScaler)", m, A, None, err)]
    if name == "MaxAbsScaler":
        A, err = _recip(_vec(step.scale_, D, "MaxAbsScaler.scale_"))
        return [Affine(f"{where} (MaxAbsScaler)", None, A, None, err)]
    if name == "MinMaxScaler":  # X * scale_ + min_: exact as stored
        return [Affine(f"{where} (MinMaxScaler)", None, _vec(step.scale_, D, "MinMaxScaler.scale_"),
                       _vec(step.min_, D, "MinMaxScaler.min_"), 0.0)]
    if name == "PCA":
        C = np.asarray(step.components_, np.float64)
        A = C.T.copy()
        err = 0.0
        if step.whiten:  # divided by max(sqrt(explained_variance_), eps) (scikit-learn's floor)
            scale = np.sqrt(np.asarray(step.explained_variance_, np.float64))
            scale = np.maximum(scale, np.finfo(scale.dtype).eps)
            A = A / scale
            err = np.abs(A) * (3 * verdict.U64)
        m = _vec(step.mean_, D, "PCA.mean_")
        return [Affine(f"{where} (PCA)", m, A, None, err, n=D)]
    if name == "TruncatedSVD":
        A = np.asarray(step.components_, np.float64).T.copy()
        return [Affine(f"{where} (TruncatedSVD)", None, A, None, 0.0, n=D)]
    if name == "ColumnTransformer":
        return [_column_transformer(step, where)]
    raise ValueError(f"from_sklearn: the step {where!r} ({name}) is not a supported preprocessing "
                     f"step. Affine steps fold exactly: {', '.join(AFFINE_STEPS)}; for other "
                     "models use ff.score_attack (black box) on the pipeline's predict_proba")


def _columns(cols, D, where, tname):
    """Integer positions of a ColumnTransformer's column selection (no names: fastfool's
    inputs are arrays)."""
    idx = np.arange(D)
    if isinstance(cols, slice):
        return idx[cols]
    a = np.asarray(cols)
    if a.dtype == bool:
        if a.shape != (D,):
            raise ValueError(f"from_sklearn: {where} > {tname}: a boolean column mask of shape "
                             f"{a.shape}, expected ({D},)")
        return idx[a]
    if a.dtype.kind in "iu" or (a.ndim == 0 and isinstance(cols, (int, np.integer))):
        return idx[a.reshape(-1)]
    raise ValueError(f"from_sklearn: {where} > {tname} selects columns by name ({cols!r}); "
                     "fastfool attacks arrays, so select columns by position (integers, a slice "
                     "or a boolean mask)")


def _column_transformer(ct, where) -> Affine:
    """A ColumnTransformer of affine transformers as one dense map (its output columns in the
    order scikit-learn stacks them)."""
    D = _n_in(ct)
    if getattr(ct, "sparse_output_", False):
        raise ValueError(f"from_sklearn: {where} (ColumnTransformer) produces sparse output")
    blocks = []  # (input columns, chain of maps on them)
    for tname, trans, cols in ct.transformers_:
        if isinstance(trans, str) and trans == "drop":
            continue
        idx = _columns(cols, D, where, tname)
        if idx.size == 0:
            continue
        chain = step_maps(trans, f"{where} > {tname}") if not (
            isinstance(trans, str) and trans == "passthrough") else []
        blocks.append((idx, chain))
    outs = []
    for idx, chain in blocks:
        A, c, E, Ec = compose(chain, idx.size)
        if A.ndim == 1:
            A, E = np.diag(A), np.diag(E)
        outs.append((idx, A, c, E, Ec))
    d_out = sum(A.shape[1] for _, A, _, _, _ in outs)
    A_all = np.zeros((D, d_out))
    E_all = np.zeros((D, d_out))
    c_all = np.zeros(d_out)
    Ec_all = np.zeros(d_out)
    j = 0
    for idx, A, c, E, Ec in outs:
        k = A.shape[1]
        A_all[idx, j:j + k] = A
        E_all[idx, j:j + k] = E
        c_all[j:j + k], Ec_all[j:j + k] = c, Ec
        j += k
    fan = max([max(1, max((s.n for s in ch), default=1)) for _, ch in blocks], default=1)
    aff = Affine(f"{where} (ColumnTransformer)", None, A_all, c_all, E_all, n=fan)
    aff.c_err = Ec_all
    # scikit-learn evaluates each block's own chain: their bounds (per block, the worst)
    aff.chains = [ch for _, ch in blocks]
    aff.blocks = blocks  # (input columns, chain): for the per-feature bound
    return aff


def compose(chain: list[Affine], D: int):
    """The chain as one map ``x @ A + c`` in float64 - ``A`` (D,) diagonal while every step is
    (scalers: no D x D matrix), else (D, D_out) - with elementwise bounds ``E`` on
    ``|A - exact|`` and ``Ec`` on ``|c - exact|``. Per step ``(y - m) S + c_s``: the centre
    joins the offset (one rounding), then ``|fl(A S) - A_x S_x| <= E |S| + (|A| + E) E_S +
    gamma_n |A| |S|`` (n = 1 for a diagonal: u), the same for the offset."""
    u = verdict.U64
    A, E = np.ones(D), np.zeros(D)
    c, Ec = np.zeros(D), np.zeros(D)
    for s in chain:
        width = A.shape[0] if A.ndim == 1 else A.shape[1]
        if s.d_in != width:
            raise ValueError(f"from_sklearn: {s.name} expects {s.d_in} features, the steps before "
                             f"it give {width}")
        if s.m is not None:
            c = c - s.m
            Ec = Ec + np.abs(c) * u
        sE = s.A_err
        aS = np.abs(s.A)
        if s.diagonal:
            sE = np.broadcast_to(np.asarray(sE, np.float64), aS.shape)
            E = E * aS + (np.abs(A) + E) * sE + u * np.abs(A * s.A)
            Ec = Ec * aS + (np.abs(c) + Ec) * sE + u * np.abs(c * s.A)
            A, c = A * s.A, c * s.A
        else:
            sE = np.broadcast_to(np.asarray(sE, np.float64), aS.shape)
            if A.ndim == 1:  # a diagonal so far: scale the rows of S (one rounding each)
                E = E[:, None] * aS + (np.abs(A) + E)[:, None] * sE + u * np.abs(A[:, None] * s.A)
                A = A[:, None] * s.A
            else:
                g = verdict.gamma(A.shape[1])
                E = E @ aS + (np.abs(A) + E) @ sE + g * (np.abs(A) @ aS)
                A = A @ s.A
            g = verdict.gamma(c.shape[0])
            Ec = Ec @ aS + (np.abs(c) + Ec) @ sE + g * (np.abs(c) @ aS)
            c = c @ s.A
        cm = getattr(s, "c_err", 0.0)
        if s.c is not None:
            c = c + s.c
            Ec = Ec + np.abs(c) * u
        Ec = (Ec + cm) * (1 + 1e-12)
        E = E * (1 + 1e-12)
    return A, c, E, Ec


def affine_chain(steps) -> list[Affine]:
    """The affine maps of a pipeline's preprocessing steps ((name, step) pairs), in order."""
    out = []
    for name, s in steps:
        out += step_maps(s, name)
    return out


def unwrap_pipeline(est):
    """(chain of affine maps, final estimator, the step names) of a fitted Pipeline."""
    steps = list(est.steps)
    if not steps:
        raise ValueError("from_sklearn: an empty Pipeline")
    final_name, final = steps[-1]
    if final is None or (isinstance(final, str) and final == "passthrough"):
        raise ValueError("from_sklearn: the Pipeline has no final estimator (its last step is "
                         "'passthrough')")
    return affine_chain(steps[:-1]), final, final_name


def pipeline_error_constants(chain: list[Affine]):
    """verdict.layer_error_bound constants of scikit-learn's evaluation of the chain (a
    ColumnTransformer: its blocks' chains evaluated side by side, the worst of them)."""
    consts = []
    for s in chain:
        if hasattr(s, "chains"):
            # side-by-side blocks: per stage, the worst constants among the blocks (shorter
            # blocks pass their values through: identity constants)
            depth = max((len(ch) for ch in s.chains), default=0)
            for k in range(depth):
                ws, bs, ns = [1.0], [0.0], [1]
                for ch in s.chains:
                    if k < len(ch):
                        w, b, n = ch[k].constants()
                        ws.append(w)
                        bs.append(b)
                        ns.append(n)
                consts.append((max(ws), max(bs), max(ns)))
        else:
            consts.append(s.constants())
    return consts


def chain_error(chain, X64, u):
    """Per row and output feature: (e, a), a bound on |scikit-learn's z - exact z| when it
    evaluates the steps in unit roundoff u, and a bound on |exact z|. Per feature, not in
    max-norm: a scaler divides each feature by its own scale, so the error of a feature
    with a large range does not spread to the others (on raw breast-cancer data the max-norm
    bound was 10^5 times larger)."""
    a = np.abs(np.asarray(X64, np.float64))
    e = np.zeros_like(a)
    return _chain_error(chain, e, a, u)


def _chain_error(chain, e, a, u):
    for s in chain:
        if hasattr(s, "blocks"):  # a ColumnTransformer: each block's chain on its columns
            outs = [_chain_error(ch, e[:, idx], a[:, idx], u) for idx, ch in s.blocks]
            e = np.hstack([o[0] for o in outs]) if outs else np.zeros((e.shape[0], 0))
            a = np.hstack([o[1] for o in outs]) if outs else np.zeros((a.shape[0], 0))
            continue
        m = 0.0 if s.m is None else np.abs(s.m)
        c = 0.0 if s.c is None else np.abs(s.c)
        aA = np.abs(s.A)
        g = verdict.gamma(s.n + 4, u)
        if s.diagonal:
            mag = (a + e + m) * aA + c
            e = aA * e + g * mag
            a = (a + m) * aA + c
        else:
            mag = (a + e + m) @ aA + c
            e = e @ aA + g * mag
            a = (a + m) @ aA + c
    return e, a


class Fold:
    """What folding a chain into a dense model's first layer adds to its rounding bounds (see
    the module docstring). ``E1`` (D_raw, out1) and ``Eb1`` (out1,): bounds on the folded
    first layer's weights and bias against the exact composition; ``pre``: constants of
    scikit-learn's evaluation of the chain; ``inner``: layer constants of the classifier as
    fitted; ``acts``: the classifier's activations; ``u_pre``: the unit roundoff of the
    steps' arithmetic (float32 for a float32 model: scikit-learn's scalers keep float32
    inputs in float32); ``u_src``: the classifier's."""

    def __init__(self, chain, E1, Eb1, inner_consts, acts, u_pre, u_src, W1=None, b1=None):
        self.chain = chain
        self.W1 = None if W1 is None else np.abs(np.asarray(W1, np.float64))
        self.b1 = None if b1 is None else np.abs(np.asarray(b1, np.float64))
        self.names = [s.name for s in chain]
        aE = np.abs(E1)
        self.w1 = float(aE.sum(axis=0).max()) if aE.size else 0.0
        self.eb1 = float(np.abs(Eb1).max()) if np.size(Eb1) else 0.0
        self.E1 = E1
        self.pre = pipeline_error_constants(chain)
        self.inner = inner_consts
        self.acts = list(acts)
        self.u_pre, self.u_src = u_pre, u_src

    def error(self, xinf, X64=None):
        """Per row (float64): |folded exact - pipeline exact| + |scikit-learn's evaluation -
        pipeline exact|, on the logits; per feature through the first layer when the rows
        ``X64`` are given, else in max-norm from ``xinf``."""
        xinf = np.asarray(xinf, np.float64)
        # the fold: the first layer's pre-activations, carried through the rest (1-Lipschitz
        # activations; logistic 1/4), with no rounding of their own (u = 0)
        e = self.w1 * xinf + self.eb1
        if self.acts[0] == "logistic":
            e = 0.25 * e
        if len(self.inner) > 1:
            e = verdict.layer_error_bound(np.zeros_like(xinf), self.inner[1:], self.acts[1:], 0.0,
                                          act_err=0, e0=e)
        if X64 is not None and self.W1 is not None:
            return e + self._sklearn_error(np.asarray(X64, np.float64))
        # scikit-learn: the steps in u_pre, then the classifier on the computed z
        a = xinf
        ez = np.zeros_like(xinf)
        for w, b, n in self.pre:
            mz = w * a + b
            ez = w * ez + verdict.gamma(n, self.u_pre) * mz
            a = mz
        a = a + ez  # |z^| <= |z| + its error
        return e + verdict.layer_error_bound(a, self.inner, self.acts, self.u_src, e0=ez)

    def _sklearn_error(self, X64):
        """scikit-learn's evaluation, per feature through the steps and the first layer, then
        in max-norm through the rest (verdict.layer_error_bound's propagation)."""
        ez, az = chain_error(self.chain, X64, self.u_pre)
        n = self.W1.shape[0]
        mz = (az + ez) @ self.W1 + self.b1  # |first-layer pre-activation| of z^
        e1 = ez @ self.W1 + verdict.gamma(n, self.u_src) * mz
        e, a = e1.max(axis=1), mz.max(axis=1)
        act = self.acts[0]
        if act == "tanh":
            a, e = np.minimum(a, 1.0), e + 2 * self.u_src
        elif act == "logistic":
            a, e = np.ones_like(a), 0.25 * e + 2 * self.u_src
        if len(self.inner) == 1:
            return e
        return verdict.layer_error_bound(a, self.inner[1:], self.acts[1:], self.u_src, e0=e)

    def affine_error(self, Ws_view):
        """(C, D_raw) bound the fold adds to the affine map's A: E1 through |W_2| ... |W_L|
        of the softmax view (a one-layer binary model: E1 in the view's score column)."""
        E = np.abs(self.E1)
        if len(Ws_view) == 1:
            if Ws_view[0].shape[1] != E.shape[1]:  # binary [0, s]
                E = np.hstack([np.zeros_like(E), E])
        else:
            for W in Ws_view[1:]:
                E = E @ np.abs(np.asarray(W, np.float64))
        return np.ascontiguousarray(E.T) * (1 + 1e-9)


def fold_first_layer(chain, W1, b1, D):
    """(W1', b1', E1, Eb1): the chain folded into ``z @ W1 + b1`` (float64), with bounds on
    the folded weights and bias against the exact composition."""
    A, c, E, Ec = compose(chain, D)
    aW = np.abs(W1)
    u = verdict.U64
    if A.ndim == 1:
        Wf = A[:, None] * W1
        E1 = E[:, None] * aW + u * np.abs(Wf)
    else:
        Wf = A @ W1
        E1 = E @ aW + verdict.gamma(A.shape[1]) * (np.abs(A) @ aW)
    bf = c @ W1 + b1
    Eb1 = Ec @ aW + verdict.gamma(c.shape[0] + 1) * (np.abs(c) @ aW + np.abs(b1))
    return Wf, bf, E1 * (1 + 1e-12), Eb1 * (1 + 1e-12)


class InputMap:
    """A chain kept in front of a kernel SVM (no first layer to fold into): the kernel sees
    ``z = x @ A + c`` (computed in float64 from the composed map), gradients go back through
    ``A``, and :meth:`radius` bounds, per row in L2, how far both our computed z and
    scikit-learn's own evaluation of the steps are from the exact z: the kernel SVM widens its
    kernel-value bounds by the kernel's Lipschitz constant times that radius."""

    def __init__(self, chain, D, u_pre):
        self.chain = chain
        self.A, self.c, self.E, self.Ec = compose(chain, D)
        self.diag = self.A.ndim == 1
        self.d_in = D
        self.d_out = self.A.shape[0] if self.diag else self.A.shape[1]
        self.pre = pipeline_error_constants(chain)
        self.u_pre = u_pre

    def apply(self, X64):
        Z = X64 * self.A if self.diag else X64 @ self.A
        return Z + self.c

    def back(self, G):
        return G * self.A if self.diag else G @ self.A.T

    def radius(self, X64):
        """(N,) L2 bound on |z computed here - exact| + |scikit-learn's z - exact|."""
        u = verdict.U64
        ax = np.abs(X64)
        aA, ac = np.abs(self.A), np.abs(self.c)
        if self.diag:  # fl(fl(x a) + c): two roundings, plus the map's own error
            e = ax * self.E + self.Ec + 2 * u * (ax * aA + ac)
        else:
            g = verdict.gamma(self.A.shape[0] + 1)
            e = ax @ self.E + self.Ec + g * (ax @ aA + ac)
        ours = np.sqrt(np.einsum("ij,ij->i", e, e)) * (1 + 1e-9)
        ez, _ = chain_error(self.chain, X64, self.u_pre)  # scikit-learn's steps, per feature
        return ours + np.sqrt(np.einsum("ij,ij->i", ez, ez)) * (1 + 1e-9)
