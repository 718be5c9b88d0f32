"""Seed 1's trade-off, measured: stronger L2 regularisation (smaller C in scikit-learn) gives a
smoother linear model, lower accuracy, and needs larger changes to fool (the exact mean minimal
L2 perturbation grows).

    python examples/seed3_regularisation.py
"""

import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

import fastfool as ff


def main(verbose=True, Cs=(1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0), out_dir=None):
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0)
    rows = []
    for C in Cs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = LogisticRegression(C=C, max_iter=3000).fit(Xtr, ytr)
        m = ff.from_sklearn(clf)
        correct = m.predict(Xte) == yte  # rows already misclassified need no perturbation
        res = ff.minimal(m, Xte[correct], yte[correct])
        radius, _ = ff.certify(m, Xte[correct])
        rows.append({"C": C, "accuracy": float(clf.score(Xte, yte)),
                     "mean_min_l2": float(np.mean(res.l2)), "mean_radius": float(np.mean(radius)),
                     "fooled": float(np.mean(res.success))})
    if out_dir:
        from fastfool import plot
        plot.regularisation(rows, path=f"{out_dir}/seed3_regularisation.png")
    if verbose:
        print(f"{'C':>8}{'accuracy':>10}{'mean minimal L2':>17}")
        for r in rows:
            print(f"{r['C']:>8g}{r['accuracy']:>10.3f}{r['mean_min_l2']:>17.3f}")
    return rows


if __name__ == "__main__":
    import sys
    main(out_dir=sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else None)
