// fastfool's CPU kernels: batched scoring with fused softmax, fused softmax cross-entropy input
// gradients (linear and MLP), MLP forward, pseudo-inverse back-projection and the fused attack
// update. Pure C++ over strided views; callers validate shapes and release the GIL.
// Outputs are row-major with a row stride (ld*) and contiguous columns.
#pragma once
#include <cstdint>
#include <vector>

#include "fastfool/view.hpp"

namespace fastfool {

enum class Epilogue : int { none = 0, softmax = 1, log_softmax = 2 };
enum class Act : int { identity = 0, relu = 1, tanh = 2, logistic = 3 };

template <class T>
struct Dense {
    MatView<T> W;  // (in, out), like scikit-learn's coefs_[i]
    VecView<T> b;  // (out,), may be empty (zero bias)
    Act act = Act::identity;
};

// One back-projection step: prev = (act^-1(cur) - b) * P, P = pinv(W) of shape (out, in).
template <class T>
struct BackStep {
    MatView<T> P;
    VecView<T> b;
    Act act = Act::identity;  // activation to invert (relu is rejected)
};

// The attack update fused into a gradient kernel (see fused_update for the semantics): each
// row block's gradient stays in cache and the updated rows go to `out` (which may be X itself).
template <class T>
struct StepSpec {
    MatView<T> X0;  // centre of the ball
    bool l2 = false;
    T alpha = 0, eps = 0, quantum = 0;
    VecView<T> lo, hi;
    T* out = nullptr;
    std::int64_t ldo = 0;
    // Steps taken (>= 1): each row block runs all of them while it is in cache, the later ones
    // from its rows of `out`; every row's arithmetic is that of `steps` separate calls, so the
    // results are bit-identical (loss / prob: those of the last step).
    int steps = 1;
    // Optional (MLP steps): the softmax probabilities of the returned iterate (rows x classes,
    // row stride ldf), computed while each block is in cache; the bits of mlp_forward's.
    T* final_prob = nullptr;
    std::int64_t ldf = 0;
    // The current iterate after the first step: `out` (rows x cols, row stride ldo).
    MatView<T> current(std::int64_t rows, std::int64_t cols) const {
        return MatView<T>{out, rows, cols, ldo, 1};
    }
};

// S = X W^T + b, then the epilogue on each row. X (N, D), W (C, D), S (N, C).
template <class T>
void scores(const MatView<T>& X, const MatView<T>& W, const VecView<T>& b, Epilogue ep, T* S,
            std::int64_t lds, int threads);

// Linear softmax cross-entropy: per row i, P = softmax(x W^T + b), loss_i = -log P[y_i],
// G_i = (P - onehot(y_i)) W. loss and prob (N, C) are optional (nullptr).
// With `step`, G is not written (pass nullptr): the gradient of each row block is applied to
// X through the fused update into step->out.
template <class T>
void ce_grad_linear(const MatView<T>& X, const MatView<T>& W, const VecView<T>& b,
                    const std::int64_t* y, T* G, std::int64_t ldg, T* loss, T* prob,
                    std::int64_t ldp, int threads, const StepSpec<T>* step = nullptr);

// Dense stack: out = ep(act_L(...act_1(X W_1 + b_1)... W_L + b_L)).
template <class T>
void mlp_forward(const MatView<T>& X, const std::vector<Dense<T>>& layers, Epilogue ep, T* out,
                 std::int64_t ldo, int threads);

// Input gradient of softmax cross-entropy over an MLP whose last layer gives the logits
// (its activation must be identity). Same outputs as ce_grad_linear.
template <class T>
void ce_grad_mlp(const MatView<T>& X, const std::vector<Dense<T>>& layers, const std::int64_t* y,
                 T* G, std::int64_t ldg, T* loss, T* prob, std::int64_t ldp, int threads,
                 const StepSpec<T>* step = nullptr);

// Vector-Jacobian product of the logits: G_i = sum_c V[i, c] * d logits_c / d x_i, i.e. the
// input gradient of any linear combination of the logits (DeepFool needs s_j - s_k). The logits
// themselves are written to `logits` (N, C) when non-null.
template <class T>
void mlp_vjp(const MatView<T>& X, const std::vector<Dense<T>>& layers, const MatView<T>& V, T* G,
             std::int64_t ldg, T* logits, std::int64_t ldl, int threads);

// Back-projection through steps[0], steps[1], ... (top layer first). Inverse tanh / logistic
// clamp their argument into [lo + margin, hi - margin] of the activation's range. When base is
// non-empty the result is added to it (the minimum-change variant). Returns the number of
// clamped values.
template <class T>
std::int64_t backproject(const MatView<T>& H, const std::vector<BackStep<T>>& steps, T margin,
                         const MatView<T>& base, T* out, std::int64_t ldo, int threads);

// Fused attack step per row, x0-centred ball of radius eps, then clip to [lo, hi]
// (lo/hi: per feature, or stride 0 for a scalar, or empty for no clipping).
//   norm_inf: out = clip(proj_inf(x + alpha*sign(g)))
//   l2:       out = clip(proj_2(x + alpha*g/||g||_2))   (rows with g == 0 do not move)
// With quantum > 0 the perturbation out - x0 is then rounded to a multiple of quantum (nearest;
// L-inf: an element whose rounded |delta| exceeds eps moves one quantum back toward x0; L2: a row
// whose rounded norm exceeds eps is truncated toward x0 instead), before clipping, so out stays
// on x0's grid (when the clip bounds are on it) and inside the ball.
// out may alias x when it has x's layout.
template <class T>
void fused_update(const MatView<T>& X, const MatView<T>& G, const MatView<T>& X0, bool l2, T alpha,
                  T eps, const VecView<T>& lo, const VecView<T>& hi, T quantum, T* out,
                  std::int64_t ldo, int threads);

// Per row of A - B: the L2 norm (overflow-safe) and the L-inf norm; with amax, also max |a|
// (max_abs_rows of A) in the same pass.
template <class T>
void diff_norms(const MatView<T>& A, const MatView<T>& B, T* l2, T* linf, int threads,
                T* amax = nullptr);

// Per row of P (C >= 1 columns): the index of its largest value and that value (val may be
// null), as numpy.argmax: the first of equal maxima, and the first NaN where a row has one.
template <class T>
void argmax_rows(const MatView<T>& P, std::int64_t* idx, T* val, int threads);

// Per row: max |x| (NaN where the row has a NaN).
template <class T>
void max_abs_rows(const MatView<T>& X, T* out, int threads);

// Per row of S (C >= 1 columns), the verdict's reduction: the first argmax (argmax_rows' rule)
// into idx, its value into top, and into second the largest value among the rival classes:
// every other class, or with dup (per class, the first class with the same weights) those not
// in the winner's group; NaN when a rival is NaN, -inf when there is none. Values in double.
template <class T>
void top2_rows(const MatView<T>& S, const std::int64_t* dup, std::int64_t* idx, double* top,
               double* second, int threads);

// Per row of S (C >= 3 columns; >= 4 with t), the Difference-of-Logits-Ratio loss of APGD
// (Croce & Hein 2020) to maximise, in double: -(z_y - z_u) / (z_p1 - z_p3 + 1e-12) with u the
// first-ranked class other than y (t null), or -(z_y - z_t) / (z_p1 - (z_p3 + z_p4) / 2 + 1e-12)
// targeted, p1 >= p2 >= ... the ranks of a stable descending sort (NaN last); and its gradient
// with respect to the row into V (row stride ldv, cast to T from double). The same operations
// in the same order as the vectorised NumPy reference (tests/reference.py dlr_rows).
template <class T>
void dlr_rows(const MatView<T>& S, const std::int64_t* y, const std::int64_t* t, double* loss, T* V,
              std::int64_t ldv, int threads);

// Per row of S: softmax(S)[r, idx[r]] in double, exp(s_k - m) / sum_j exp(s_j - m) with m the
// row max (the ISA's vector exp); NaN where m is not finite (the caller decides those rows).
template <class T>
void softmax_at(const MatView<T>& S, const std::int64_t* idx, double* out, int threads);

// Per row i, the move d (into out, row stride ldo) of least norm (norm 0: L-inf, 1: L1, 2: L2)
// with W_i . (X_i + d) = b_i and lo <= X_i + d <= hi (lo / hi: D bounds each, null: unbounded;
// X_i inside the box); where the hyperplane misses the box, the corner furthest toward it; rows
// with non-finite values: d = 0. FAB's projection (cpu/project.cpp).
void project_plane(const MatView<double>& X, const MatView<double>& W, const double* b,
                   const double* lo, const double* hi, int norm, double* out, std::int64_t ldo,
                   int threads);

// One FAB step per row (Croce & Hein 2020): d1, d2 = project_plane of X_i and X0_i onto the
// row's hyperplane (W_i, b_i) in the box; a = min(|d1| / (|d1| + |d2|), alpha_max) with the
// norms floored at 1e-8; out_i = clip((1 - a)(X_i + eta d1) + a (X0_i + eta d2)), or X_i itself
// when that point leaves |z - X0_i|_inf <= reach[i] (or is not finite).
void fab_step(const MatView<double>& X, const MatView<double>& X0, const MatView<double>& W,
              const double* b, const double* lo, const double* hi, int norm, double eta,
              double alpha_max, const double* reach, double* out, std::int64_t ldo, int threads);

// The L-inf Square Attack's loop with windows shared by all rows (Andriushchenko et al. 2020;
// AutoAttack's version) over a dense stack whose last layer gives the logits (cpu/square.cpp).
// Rows with margin[i] > 0 are in play; Xb (rows x cols, row stride ldb) holds their current
// best points and margin the margin z_y - max_{c != y} z_c there. Iteration it (< n_iter) moves
// features idx[start[it] .. start[it + 1]) of every row in play to clip(X + val) (clip: lo / hi
// per feature, or null) and keeps the move where the margin falls; a row whose margin reaches
// <= 0 leaves play with queries[i] = it0 + it + 2, the others end with it0 + n_iter + 1.
// Xb, margin and queries are written for the rows in play only.
template <class T>
void square_linf_mlp(const MatView<T>& X, T* Xb, std::int64_t ldb, double* margin,
                     const std::int64_t* y, const std::vector<Dense<T>>& layers,
                     const std::int64_t* idx, const std::int64_t* start, const T* val,
                     std::int64_t n_iter, std::int64_t it0, const T* lo, const T* hi,
                     std::int64_t* queries, int threads);

// A tree ensemble's nodes, packed: child[0] the left child, child[1] the right; a leaf links to
// itself (both children its own index, feature 0), an internal node to children of higher index
// within its tree.
struct TreeNode {
    double threshold;
    std::int32_t feature, child[2], pad;
};

// Trees t = 0 .. trees - 1 rooted at roots[t] (node indices into nodes), depth[t] the longest
// root-to-leaf path, value (nodes x classes, contiguous) the class fractions at each leaf.
struct Forest {
    const TreeNode* nodes = nullptr;
    const std::int64_t* roots = nullptr;
    const int* depth = nullptr;
    std::int64_t trees = 0;
    const double* value = nullptr;
    std::int64_t classes = 0;
    double divisor = 1;
};

// scikit-learn's tree-classifier vote (cpu/forest.cpp): per row, the leaf of each tree (go left
// where (double)x[feature] <= threshold), the leaves' values summed in tree order, divided by
// the divisor; label[i] the first largest class, proba (optional, row stride ldp) the quotients.
void forest_predict(const MatView<float>& X, const Forest& f, std::int64_t* label, double* proba,
                    std::int64_t ldp, int threads);

// True when every element is finite (no NaN, no +-inf).
template <class T>
bool all_finite(const MatView<T>& X, int threads);

// Test hook: whether L-inf steps of narrow MLPs take the batch-in-lanes path (default on);
// off, they take the row path, which gives the same bits.
void set_lane_steps(bool on);
bool lane_steps();

}  // namespace fastfool
