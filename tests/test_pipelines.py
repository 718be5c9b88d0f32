"""scikit-learn pipelines, search CVs and one-vs-rest models through from_sklearn: every
verdict is the original object's own predict, on generated pipelines (random chains of affine
steps before random classifiers, on digits, iris and breast cancer, both dtypes); the exact
attacks stay exact in raw feature space (an independent solver on the raw-space affine map,
read off the pipeline's own transform); non-affine steps and unsupported models are refused
with the reason."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (FunctionTransformer, MaxAbsScaler, MinMaxScaler, Normalizer,
                                   PolynomialFeatures, RobustScaler, StandardScaler)
from sklearn.svm import SVC, LinearSVC

import fastfool as ff


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence: the fit quality is not under test
        return est.fit(X, y)


@pytest.fixture(scope="module")
def datasets(digits):
    Xd, yd = digits
    Xi, yi = load_iris(return_X_y=True)
    Xb, yb = load_breast_cancer(return_X_y=True)
    # raw units on purpose: cancer's features span 1e-3 .. 4e3, digits 0 .. 16 (the scalers matter)
    return {"digits": (Xd * 16.0, yd), "iris": (Xi, yi), "cancer": (Xb, yb)}


def _step(rng, D, kind):
    """A random affine step on D features (returns the step and its output width)."""
    if kind == "standard":
        return StandardScaler(with_mean=bool(rng.integers(2)), with_std=bool(rng.integers(2)) or True), D
    if kind == "minmax":
        return MinMaxScaler(feature_range=(float(rng.uniform(-2, 0)), float(rng.uniform(0.5, 3)))), D
    if kind == "maxabs":
        return MaxAbsScaler(), D
    if kind == "robust":
        return RobustScaler(with_centering=bool(rng.integers(2))), D
    if kind == "pca":
        k = int(rng.integers(2, max(3, min(D, 20))))
        return PCA(k, whiten=bool(rng.integers(2)), random_state=0), k
    if kind == "svd":
        k = int(rng.integers(2, max(3, min(D - 1, 15))))
        return TruncatedSVD(k, random_state=0), k
    if kind == "identity":
        return (FunctionTransformer(None) if rng.integers(2) else "passthrough"), D
    if kind == "columns":  # scale a block, pass another through, drop none
        cut = int(rng.integers(1, D))
        ct = ColumnTransformer([("a", StandardScaler(), np.arange(cut)),
                                ("b", make_pipeline(MinMaxScaler(), MaxAbsScaler()), slice(cut, D))])
        return ct, D
    raise AssertionError(kind)


KINDS = ["standard", "minmax", "maxabs", "robust", "pca", "svd", "identity", "columns"]
CLASSIFIERS = {
    "logreg": lambda: LogisticRegression(max_iter=300),
    "linsvc": lambda: LinearSVC(max_iter=2000),
    "sgd": lambda: SGDClassifier(random_state=0, max_iter=50),
    "mlp-tanh": lambda: MLPClassifier((16,), activation="tanh", max_iter=60, random_state=0),
    "mlp-relu": lambda: MLPClassifier((12, 6), activation="relu", max_iter=60, random_state=0),
    "mlp-logistic": lambda: MLPClassifier((10,), activation="logistic", max_iter=60, random_state=0),
    "svc-rbf": lambda: SVC(),  # kernel SVMs keep the chain in front of the kernel
    "svc-poly": lambda: SVC(kernel="poly", degree=2, coef0=1.0),
}


def random_pipeline(seed, datasets):
    """A generated pipeline: 1-3 random affine steps (one of them nested at times), a random
    classifier, fitted on a random data set (binary when the set is cancer)."""
    rng = np.random.default_rng(seed)
    name = ["digits", "iris", "cancer"][seed % 3]
    X, y = datasets[name]
    D = X.shape[1]
    steps = []
    for _ in range(int(rng.integers(1, 4))):
        kind = KINDS[int(rng.integers(len(KINDS)))]
        s, D = _step(rng, D, kind)
        steps.append(s)
    if len(steps) > 1 and rng.integers(2):  # nest the first two
        steps = [make_pipeline(*steps[:2])] + steps[2:]
    clf = list(CLASSIFIERS.values())[int(rng.integers(len(CLASSIFIERS)))]()
    pipe = _fit(make_pipeline(*steps, clf), X, y)
    return pipe, X, y, name


def assert_verdicts(res, est, y, what):
    truth = est.predict(res.x_adv)
    assert np.array_equal(res.pred, truth), f"{what}: pred differs on {np.sum(res.pred != truth)} rows"
    bad = np.flatnonzero(res.success != (truth != y))
    assert bad.size == 0, f"{what}: success differs from the pipeline on rows {bad[:10]}"


@pytest.mark.parametrize("seed", list(range(6)) + [pytest.param(s, marks=pytest.mark.slow)
                                                   for s in range(6, 30)])
def test_generated_pipelines_decide_as_the_pipeline(datasets, seed):
    """predict, decision scores and the verdicts of FGSM / PGD / DeepFool on the folded model
    are the pipeline's own, in both dtypes, on clean rows, rows near the decision boundary
    (DeepFool's) and far ones; eps is in raw units (the ball is the pipeline's input space)."""
    pipe, X, y, name = random_pipeline(seed, datasets)
    rows = np.random.default_rng(seed).choice(len(X), 60, replace=False)
    Xs, ys = X[rows], y[rows]
    span = float(np.ptp(X))
    for dtype in (np.float64, np.float32):
        m = ff.from_sklearn(pipe, dtype=dtype)
        assert m.n_features_in_ == X.shape[1]
        Xt = Xs.astype(dtype)
        np.testing.assert_array_equal(m.predict(Xt), pipe.predict(Xt), err_msg=f"{pipe} {dtype}")
        if hasattr(pipe, "decision_function") and not m.binary and \
                getattr(pipe[-1], "decision_function_shape", "ovo") == "ovo":
            np.testing.assert_allclose(m.decision_function(Xt.astype(np.float64)),
                                       pipe.decision_function(Xt.astype(np.float64)),
                                       rtol=1e-6, atol=1e-6 * (1 + np.abs(pipe.decision_function(Xt)).max()))
        for what, res in (
                ("fgsm", ff.fgsm(m, Xt, ys, eps=0.05 * span)),
                ("pgd", ff.pgd(m, Xt, ys, eps=0.03 * span, steps=5, seed=seed)),
                # a per-feature box in raw units: the data's own range
                ("pgd-clip", ff.pgd(m, Xt, ys, eps=0.05 * span, steps=5, seed=seed,
                                    clip=(X.min(axis=0), X.max(axis=0)))),
                ("deepfool", ff.deepfool(m, Xt, ys, max_iter=30))):
            assert_verdicts(res, pipe, ys, f"{what} {name} {dtype.__name__} {pipe}")


def _raw_affine(pipe, D):
    """The raw-space affine map of a linear pipeline, read off its own decision_function on
    the origin and the unit vectors (independent of the fold): scores = X @ A.T + c."""
    E = np.vstack([np.zeros(D), np.eye(D)])
    S = pipe.decision_function(E)
    S = S.reshape(len(E), -1)
    c = S[0]
    A = (S[1:] - c).T
    if A.shape[0] == 1:  # binary: the softmax view [0, s]
        A, c = np.vstack([np.zeros(D), A[0]]), np.array([0.0, c[0]])
    return A, c


@pytest.mark.parametrize("norm", [2, "inf"])
def test_minimal_stays_exact_through_folded_scalers(datasets, norm):
    """A linear classifier after StandardScaler and PCA is affine in raw space: ff.certify /
    ff.minimal agree with an independent solver on the raw-space affine map (read off the
    pipeline's decision_function), their x_adv are fooled for the pipeline, and eps is in raw
    units."""
    from test_minimal import region_distance
    X, y = datasets["iris"]
    pipe = _fit(make_pipeline(StandardScaler(), PCA(3), LogisticRegression(max_iter=500)), X, y)
    m = ff.from_sklearn(pipe)
    A, c = _raw_affine(pipe, X.shape[1])
    Am, cm = m.affine_map()
    np.testing.assert_allclose(Am - Am.mean(axis=0), A - A.mean(axis=0), rtol=1e-9, atol=1e-9)
    rows = np.arange(0, 150, 13)
    Xs = X[rows]
    radius, _ = ff.certify(m, Xs, norm=norm)
    res = ff.minimal(m, Xs, norm=norm)
    assert res.success.all() and (pipe.predict(res.x_adv) != pipe.predict(Xs)).all()
    pred = np.searchsorted(m.classes_, pipe.predict(Xs))
    for i, x in enumerate(Xs):
        best = min(region_distance(A, c, x, j, norm)[0] for j in range(A.shape[0]) if j != pred[i])
        np.testing.assert_allclose(radius[i], best, rtol=2e-3, atol=1e-6)
    n = res.l2 if norm == 2 else res.linf
    np.testing.assert_allclose(n, radius, rtol=1e-4)


def test_search_cv_and_one_vs_rest_decide_as_themselves(datasets):
    """GridSearchCV (best_estimator_, itself a pipeline) and OneVsRestClassifier of linear
    models (their decision functions' argmax): predictions and attack verdicts are the
    object's own; a binary one-vs-rest is one score."""
    X, y = datasets["digits"]
    search = _fit(GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)),
                               {"logisticregression__C": [0.1, 1.0]}, cv=2), X[:600], y[:600])
    Xb, yb = datasets["cancer"]
    cases = [(search, X, y),
             (_fit(OneVsRestClassifier(LinearSVC(max_iter=3000)), X / 16, y), X / 16, y),
             (_fit(OneVsRestClassifier(LogisticRegression(max_iter=500)), Xb / Xb.max(0), yb),
              Xb / Xb.max(0), yb)]
    for est, XX, yy in cases:
        rows = np.arange(0, len(XX), max(1, len(XX) // 80))
        for dtype in (np.float64, np.float32):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # OvR's normalised probabilities: a surrogate
                m = ff.from_sklearn(est, dtype=dtype)
            Xt = XX[rows].astype(dtype)
            np.testing.assert_array_equal(m.predict(Xt), est.predict(Xt))
            res = ff.pgd(m, Xt, yy[rows], eps=0.05 * float(np.ptp(XX)), steps=5, seed=1)
            assert_verdicts(res, est, yy[rows], f"{type(est).__name__} {dtype.__name__}")
            res = ff.deepfool(m, Xt, yy[rows], max_iter=20)
            assert_verdicts(res, est, yy[rows], f"deepfool {type(est).__name__} {dtype.__name__}")


def test_unsupported_steps_and_models_are_refused_with_the_reason(datasets):
    X, y = datasets["iris"]
    lr = LogisticRegression(max_iter=300)
    cases = [
        (make_pipeline(Normalizer(), lr), "Normalizer.*divides each row"),
        (make_pipeline(PolynomialFeatures(2), lr), "PolynomialFeatures.*multiplies features"),
        (make_pipeline(MinMaxScaler(clip=True), lr), r"MinMaxScaler\(clip=True\)"),
        (make_pipeline(FunctionTransformer(np.log1p), lr), "FunctionTransformer.*log1p"),
        (SVC(break_ties=True), "break_ties"),
    ]
    for est, match in cases:
        _fit(est, X, y)
        with pytest.raises(ValueError, match=match):
            ff.from_sklearn(est)
    with pytest.raises(ValueError, match="not fitted"):
        ff.from_sklearn(make_pipeline(StandardScaler(), LogisticRegression()))
    with pytest.raises(ValueError, match="not fitted"):
        ff.from_sklearn(LogisticRegression())
    with pytest.raises(ValueError, match="refit"):
        ff.from_sklearn(_fit(GridSearchCV(LogisticRegression(max_iter=300), {"C": [1.0]}, cv=2,
                                          refit=False), X, y))
    from sklearn.calibration import CalibratedClassifierCV
    with pytest.raises(ValueError, match="CalibratedClassifierCV"):
        ff.from_sklearn(_fit(CalibratedClassifierCV(LinearSVC(max_iter=3000), cv=2), X, y))
    from sklearn.ensemble import RandomForestClassifier
    with pytest.raises(TypeError, match="score_attack"):
        ff.from_sklearn(_fit(RandomForestClassifier(n_estimators=3, random_state=0), X, y))


def test_the_fold_bound_covers_the_fold_and_sklearns_rounding(datasets):
    """The folded model's float64 logits differ from the pipeline's own decision_function by
    at most the bound the verdicts use (the fold plus scikit-learn's evaluation), on raw
    cancer data whose features span six orders of magnitude; and the bound is not vacuous."""
    Xb, yb = datasets["cancer"]
    pipe = _fit(make_pipeline(StandardScaler(), RobustScaler(), PCA(10, whiten=True),
                              LogisticRegression(max_iter=500)), Xb, yb)
    m = ff.from_sklearn(pipe)
    S, err = ff.verdict.reference_logits(m, Xb, 1)
    s_pipe = pipe.decision_function(Xb)
    gap = np.abs((S[:, 1] - S[:, 0]) - s_pipe)
    assert (gap <= 2 * err).all(), (gap / err).max()
    assert err.max() < 1e-6 * (1 + np.abs(s_pipe).max())


def test_pandas_free_column_transformer_with_drop_and_passthrough(datasets):
    """A ColumnTransformer that drops columns, passes some through and scales others (by
    position and boolean mask): the folded model takes all the raw columns and decides as the
    pipeline; the dropped columns get a zero gradient."""
    X, y = datasets["digits"]
    mask = np.zeros(64, bool)
    mask[10:30] = True
    ct = ColumnTransformer([("s", StandardScaler(), mask), ("p", "passthrough", [0, 1, 2]),
                            ("d", "drop", slice(40, 64))], remainder=MinMaxScaler())
    pipe = _fit(Pipeline([("ct", ct), ("clf", LogisticRegression(max_iter=100))]), X[:500], y[:500])
    m = ff.from_sklearn(pipe)
    assert m.n_features_in_ == 64
    np.testing.assert_array_equal(m.predict(X), pipe.predict(X))
    g = m.loss_gradient(X[:5], y[:5])
    assert np.all(g[:, 40:] == 0)
    res = ff.pgd(m, X[:100], y[:100], eps=2.0, steps=5, seed=0)
    assert_verdicts(res, pipe, y[:100], "column transformer")


def test_column_transformer_by_name_is_refused():
    pd = pytest.importorskip("pandas")
    X, y = load_iris(return_X_y=True)
    df = pd.DataFrame(X, columns=list("abcd"))
    est = _fit(make_pipeline(ColumnTransformer([("s", StandardScaler(), ["a", "b"])],
                                               remainder="passthrough"),
                             LogisticRegression(max_iter=300)), df, y)
    with pytest.raises(ValueError, match="by name"):
        ff.from_sklearn(est)


def test_ovr_proba_surrogate_warns():
    X, y = load_iris(return_X_y=True)
    est = _fit(OneVsRestClassifier(LogisticRegression(max_iter=500)), X, y)
    with pytest.warns(UserWarning, match="one-vs-rest probabilities"):
        ff.from_sklearn(est)


def test_a_pipeline_fitted_on_float32_data(datasets):
    """Scalers fitted on float32 data compute in float32 on every input: the verdicts stay the
    pipeline's (the steps' rounding bounded in float32)."""
    Xb, yb = datasets["cancer"]
    X32 = Xb.astype(np.float32)
    pipe = _fit(make_pipeline(StandardScaler(), MinMaxScaler(), LogisticRegression(max_iter=500)),
                X32, yb)
    for dtype in (np.float64, np.float32):
        m = ff.from_sklearn(pipe, dtype=dtype)
        assert m._fold.u_pre == ff.verdict.U32
        Xt = Xb.astype(dtype)
        np.testing.assert_array_equal(m.predict(Xt), pipe.predict(Xt))
        res = ff.deepfool(m, Xt, yb, max_iter=30)
        assert_verdicts(res, pipe, yb, f"float32-fitted {dtype.__name__}")


def test_kernel_svms_after_preprocessing(datasets):
    """StandardScaler / PCA before binary and multi-class kernel SVCs (the chain stays in front
    of the kernel, gradients go back through it): predictions, decision_function and the
    attacks' verdicts are the pipeline's, on raw data whose features span six orders of
    magnitude, in both dtypes; nearly every row is decided without asking the estimator."""
    Xb, yb = datasets["cancer"]
    Xw, yw = load_wine_raw()
    cases = [(make_pipeline(StandardScaler(), SVC()), Xb, yb),
             (make_pipeline(StandardScaler(), PCA(5), SVC(kernel="poly", degree=3, coef0=1.0)), Xw, yw),
             (make_pipeline(MinMaxScaler(), SVC(kernel="sigmoid", gamma=0.1)), Xw, yw),
             (make_pipeline(RobustScaler(), SVC(kernel="linear")), Xb, yb)]
    for pipe, X, y in cases:
        _fit(pipe, X, y)
        for dtype in (np.float64, np.float32):
            m = ff.from_sklearn(pipe, dtype=dtype)
            Xt = X.astype(dtype)
            pred, ok = ff.verdict.decide(m, Xt, 1, return_clear=True)
            np.testing.assert_array_equal(m.classes_[pred], pipe.predict(Xt))
            assert ok.mean() > 0.95, (pipe, dtype, ok.mean())
            D = pipe.decision_function(Xt)
            np.testing.assert_allclose(m.decision_function(Xt), D, rtol=1e-5, atol=1e-5 * (1 + np.abs(D).max()))
            span = float(np.ptp(X))
            for what, res in (("pgd", ff.pgd(m, Xt, y, eps=0.03 * span, steps=5, seed=0)),
                              ("deepfool", ff.deepfool(m, Xt, y, max_iter=30))):
                assert_verdicts(res, pipe, y, f"{what} {pipe} {dtype.__name__}")
    with pytest.raises(ValueError, match="not affine"):
        ff.minimal(ff.from_sklearn(cases[3][0]), Xb[:3])


def load_wine_raw():
    from sklearn.datasets import load_wine
    return load_wine(return_X_y=True)
