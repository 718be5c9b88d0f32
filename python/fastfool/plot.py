"""Figures for attacks (optional extra ``plot``: matplotlib; rendered headless with Agg).

Every function returns the matplotlib Figure and, with ``path=``, also writes it as PNG.
"""

from __future__ import annotations

import numpy as np

__all__ = ["images", "templates", "adversarial_grid", "confidence_map", "robustness_curves",
           "regularisation"]


def _plt():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("fastfool.plot needs matplotlib: pip install 'fastfool[plot]'") from exc
    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo"):
        matplotlib.use("Agg", force=True)  # headless: never open a window
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def _image(v, shape):
    img = np.asarray(v, dtype=np.float64).reshape(shape)
    return img


def images(X, shape, *, titles=None, path=None, title=None, cols=10):
    """A row (or grid) of images, e.g. back-projected inputs with their labels."""
    plt = _plt()
    X = np.asarray(X)
    n = len(X)
    cols = max(1, min(cols, n))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.7 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        ax.imshow(_image(X[i], shape), cmap="gray")
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _finish(fig, path)


def templates(model, shape, *, labels=None, path=None, cols=10):
    """Each class's weights reshaped to an image (the seed's "templates"); affine models only.
    ``shape`` is the image shape, e.g. (8, 8) or (64, 64, 3)."""
    plt = _plt()
    A, _ = model.affine_map()
    if model.binary:
        A = A[1:]
    labels = model.classes_[-len(A):] if labels is None else labels
    n = len(A)
    cols = min(cols, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (w, lab) in enumerate(zip(A, labels)):
        img = _image(w, shape)
        ax = axes.ravel()[i]
        if img.ndim == 3:  # colour: rescale to [0, 1]
            img = (img - img.min()) / max(np.ptp(img), 1e-12)
            ax.imshow(img)
        else:
            lim = np.abs(img).max() or 1.0
            ax.imshow(img, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(str(lab), fontsize=9)
    fig.suptitle("class weight templates")
    return _finish(fig, path)


def adversarial_grid(X, result, shape, *, n=8, path=None, amplify=None):
    """Originals / perturbation (amplified, diverging colormap) / adversarial images, with the
    model's labels and confidences for the adversarial row."""
    plt = _plt()
    X = np.asarray(X)
    n = min(n, len(X))
    fig, axes = plt.subplots(3, n, figsize=(1.5 * n, 4.8), squeeze=False)
    delta = result.x_adv[:n] - X[:n]
    lim = float(np.abs(delta).max()) or 1.0
    vmin, vmax = float(min(X[:n].min(), result.x_adv[:n].min())), float(max(X[:n].max(), result.x_adv[:n].max()))
    for j in range(n):
        axes[0, j].imshow(_image(X[j], shape), cmap="gray", vmin=vmin, vmax=vmax)
        axes[1, j].imshow(_image(delta[j], shape), cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[2, j].imshow(_image(result.x_adv[j], shape), cmap="gray", vmin=vmin, vmax=vmax)
        if result.y is not None:
            axes[0, j].set_title(f"{result.y[j]}", fontsize=9)
        axes[2, j].set_title(f"{result.pred[j]} ({result.confidence[j]:.2f})", fontsize=9,
                             color="C3" if result.success[j] else "k")
        for i in range(3):
            axes[i, j].axis("off")
    axes[1, 0].text(-0.3, 0.5, f"delta (|max| {lim:.2g})", transform=axes[1, 0].transAxes,
                    rotation=90, va="center", ha="right", fontsize=8)
    fig.suptitle(f"{result.attack}: originals, perturbation, adversarial (label, confidence)")
    return _finish(fig, path)


def confidence_map(cmap, *, X=None, y=None, far=None, classes=None, path=None, title=None):
    """Decision regions and max-probability contours of a :class:`fastfool.ConfidenceMap`, with
    the data (X in the same plane: 2 features, or the 2-unit layer's codes) and far points."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    labels = np.unique(cmap.label)
    index = np.searchsorted(labels, cmap.label)
    ext = cmap.extent
    axes[0].imshow(index, origin="lower", extent=ext, aspect="auto", cmap="tab10",
                   vmin=0, vmax=9, alpha=0.45, interpolation="nearest")
    im = axes[1].imshow(cmap.confidence, origin="lower", extent=ext, aspect="auto",
                        cmap="viridis", vmin=float(min(cmap.confidence.min(), 0.5)), vmax=1.0)
    fig.colorbar(im, ax=axes[1], label="max probability")
    axes[1].contour(cmap.xs, cmap.ys, cmap.confidence, levels=[0.9, 0.99, 0.999], colors="w",
                    linewidths=0.7)
    for ax in axes:
        if X is not None:
            X2 = np.asarray(X)
            ax.scatter(X2[:, 0], X2[:, 1], c=None if y is None else np.searchsorted(labels, y),
                       cmap="tab10", vmin=0, vmax=9, s=8, edgecolors="k", linewidths=0.3)
        if far is not None:
            F = np.asarray(far)
            ax.scatter(F[:, 0], F[:, 1], marker="*", s=160, c="red", edgecolors="k", zorder=5)
        ax.set_xlim(ext[0], ext[1])
        ax.set_ylim(ext[2], ext[3])
    axes[0].set_title("predicted class" if classes is None else "predicted class: " +
                      ", ".join(f"{i}={c}" for i, c in enumerate(classes)), fontsize=9)
    axes[1].set_title("confidence (max probability)")
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def robustness_curves(curves, *, path=None, xlabel="epsilon"):
    """Accuracy versus epsilon: ``curves`` maps a name to a ``robustness_curve`` result
    (dict with ``eps`` and ``accuracy``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, c in curves.items():
        ax.plot(c["eps"], c["accuracy"], marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy under attack")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    return _finish(fig, path)


def regularisation(rows, *, path=None):
    """The trade-off: accuracy and mean minimal perturbation versus the L2 strength (rows with
    ``C``, ``accuracy``, ``mean_min_l2``; smaller C = stronger regularisation)."""
    plt = _plt()
    C = np.array([r["C"] for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.semilogx(C, [r["accuracy"] for r in rows], "o-", color="C0", label="accuracy")
    ax.set_xlabel("C (inverse L2 strength)")
    ax.set_ylabel("test accuracy", color="C0")
    ax2 = ax.twinx()
    ax2.semilogx(C, [r["mean_min_l2"] for r in rows], "s-", color="C3", label="mean minimal L2")
    ax2.set_ylabel("mean minimal L2 perturbation", color="C3")
    ax.set_title("regularisation: accuracy vs. perturbation needed to fool")
    return _finish(fig, path)
