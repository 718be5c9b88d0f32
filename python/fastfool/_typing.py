"""Type aliases of the public signatures (hints only; every value is checked at run time)."""

from __future__ import annotations

from typing import Literal, Optional, Tuple, Union

from numpy.typing import ArrayLike

#: the perturbation norm: "inf" (also np.inf, "linf") or 2 (also "2", "l2")
Norm = Union[Literal["inf", "linf", "Linf", "2", "l2", "L2"], int, float]
#: ``(lo, hi)``: scalars or per-feature arrays, either may be None; None for no box
Clip = Optional[Tuple[Union[float, ArrayLike, None], Union[float, ArrayLike, None]]]
#: None, a label, labels per row, or "least_likely" / "random" / "all"
Target = Union[None, str, int, ArrayLike]
#: labels of the model's classes_ (one per row, or one for all rows); None: the model's own
Labels = Optional[ArrayLike]

__all__ = ["ArrayLike", "Clip", "Labels", "Norm", "Target"]
