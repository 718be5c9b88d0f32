"""Seed 1's open question, answered: a random forest (no gradients, no weights) fooled from its
scores alone. SimBA-style coordinate search inside an L-inf ball, batched over rows, counting
every predict_proba query.

    python examples/seed7_blackbox_forest.py
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier

import fastfool as ff


def main(verbose=True, rows=200, eps=0.2, max_queries=500):
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rf = RandomForestClassifier(100, random_state=0).fit(X[rows:], y[rows:])
    res = ff.score_attack(rf, X[:rows], y[:rows], eps=eps, max_queries=max_queries, clip=(0, 1), seed=0)
    clean = rf.predict(X[:rows]) == y[:rows]
    out = {"clean_accuracy": float(np.mean(clean)), "result": res,
           "fooled": float(np.mean(res.success[clean])),
           "median_queries": float(np.median(res.queries[clean & res.success]))}
    if verbose:
        print(f"random forest clean accuracy {out['clean_accuracy']:.3f}; black-box attack at "
              f"L-inf {eps}: {100 * out['fooled']:.1f}% of the correctly classified rows fooled, "
              f"median {out['median_queries']:.0f} queries (budget {max_queries})")
    return out


if __name__ == "__main__":
    main()
