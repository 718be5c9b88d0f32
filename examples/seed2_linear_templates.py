"""Seed 1 at our scale: a linear softmax classifier on digits. Each class's weights, reshaped to
8x8, are its template; adding a small multiple of another class's template to a real image, or to
noise, makes the model predict that class with 99% confidence. Also every image fooled into every
other class with the exact minimal perturbation (target="all"), and the ImageNet-shaped model
(64x64x3 -> 1000 classes, random weights standing in for the trained ones) fooled in one step.

    python examples/seed2_linear_templates.py
"""

import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

import fastfool as ff


def main(verbose=True, imagenet_rows=64, out_dir=None):
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = LogisticRegression(max_iter=2000).fit(X, y)
    m = ff.from_sklearn(clf)
    templates = m.coef_.reshape(10, 8, 8)
    img = X[:1]
    into_each = ff.template(m, np.repeat(img, 10, axis=0), target=np.arange(10), confidence=0.99)
    from_noise = ff.template(m, None, target=np.arange(10), start="noise", n=10, seed=0)
    every = ff.minimal(m, X[:20], y[:20], target="all")
    rng = np.random.default_rng(0)
    D, C = 64 * 64 * 3, 1000
    big = ff.LinearModel(rng.standard_normal((C, D)).astype(np.float32) * 1e-2, np.zeros(C, np.float32))
    Xi = rng.uniform(0, 1, (imagenet_rows, D)).astype(np.float32)
    fooled = ff.fgsm(big, Xi, eps=2 / 255, clip=(0, 1))
    out = {"accuracy": float(clf.score(X, y)), "templates": templates, "into_each": into_each,
           "from_noise": from_noise, "every": every, "imagenet": fooled}
    if out_dir:
        from fastfool import plot
        plot.templates(m, (8, 8), path=f"{out_dir}/seed2_templates.png")
        plot.adversarial_grid(np.repeat(img, 10, axis=0), into_each, (8, 8), n=10,
                              path=f"{out_dir}/seed2_one_image_into_every_class.png")
        plot.images(from_noise.x_adv, (8, 8), path=f"{out_dir}/seed2_from_noise.png",
                    titles=[f"{p} ({c:.2f})" for p, c in zip(from_noise.pred, from_noise.confidence)],
                    title="noise + template: label (probability)")
    if verbose:
        print(f"digits softmax accuracy {out['accuracy']:.3f}")
        print(f"image of a {y[0]} fooled into each class: success {into_each.success.mean():.0%}, "
              f"median L2 {np.median(into_each.l2):.2f}")
        print(f"noise fooled into each class: success {from_noise.success.mean():.0%}")
        print(f"20 images x 9 other classes, exact minimal L2: median {np.median(every.l2):.3f}, "
              f"success {every.success.mean():.0%}")
        print(f"ImageNet-shaped 12288->1000 model (random weights), FGSM eps=2/255: "
              f"success {fooled.success.mean():.0%} at {fooled.rows_per_second:,.0f} rows/s")
    return out


if __name__ == "__main__":
    import sys
    main(out_dir=sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else None)
