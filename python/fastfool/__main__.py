"""``python -m fastfool``: version, kernel path, and a tiny attack on scikit-learn's digits."""

from __future__ import annotations

import sys
import time


def main(argv=None) -> int:
    import numpy as np

    import fastfool as ff

    info = ff.simd_info()
    print(f"fastfool {ff.__version__}  simd={info['active']} (detected {info['detected']})  "
          f"threads={info['threads']}")
    try:
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        print("scikit-learn is not installed: pip install scikit-learn to run the demo attack")
        return 0
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    clf = LogisticRegression(max_iter=2000).fit(X, y)
    m = ff.from_sklearn(clf, dtype=np.float32)
    Xf = X.astype(np.float32)
    eps = 0.1
    t0 = time.perf_counter()
    g = m.loss_gradient(Xf, y)
    x_adv = ff.kernels.fused_update(Xf, g, Xf, step=eps, eps=eps, norm="inf", clip=(0.0, 1.0))
    dt = time.perf_counter() - t0
    clean = float(np.mean(m.predict(Xf) == y))
    adv = float(np.mean(m.predict(x_adv) == y))
    print(f"digits, LogisticRegression: clean accuracy {clean:.3f}; after FGSM (L-inf eps={eps}) "
          f"{adv:.3f}; {len(X)} rows in {dt * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
