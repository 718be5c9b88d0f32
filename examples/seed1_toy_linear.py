"""Seed 1, the 10-dimensional toy (Karpathy, "Breaking Linear Classifiers on ImageNet"):
a binary logistic model with w = sign pattern and bias 0; FGSM with eps = 0.5 moves the score
from -3 to 2 and P(y=1) from 0.0474 to 0.88, because each of the 10 dimensions gains 0.5.

    python examples/seed1_toy_linear.py
"""

import numpy as np

import fastfool as ff


def main(verbose=True):
    x = np.array([[2, -1, 3, -2, 2, 2, 1, -4, 5, 1]], dtype=np.float64)
    w = np.array([-1, -1, 1, -1, 1, -1, 1, 1, -1, 1], dtype=np.float64)
    m = ff.LinearModel(w[None, :], 0.0)  # binary: P(y=1) = sigmoid(w.x)
    res = ff.fgsm(m, x, y=[0], eps=0.5)  # move away from class 0, i.e. toward class 1
    out = {
        "score_before": float(m.decision_function(x)[0]),
        "p_before": float(m.predict_proba(x)[0, 1]),
        "x_adv": res.x_adv[0],
        "score_after": float(m.decision_function(res.x_adv)[0]),
        "p_after": float(m.predict_proba(res.x_adv)[0, 1]),
    }
    if verbose:
        print(f"score {out['score_before']:+.1f} -> {out['score_after']:+.1f}; "
              f"P(y=1) {out['p_before']:.4f} -> {out['p_after']:.2f}")
        print("x_adv =", out["x_adv"].tolist())
    return out


if __name__ == "__main__":
    main()
