// The batch in the vector lanes: panels of nr rows held transposed (features x nr), lane
// products, the LaneNet forward, and cross-entropy rows through lane panels. The element-wise
// loops over panels are slots of the ISA table (MicroKernel::loops, detail/loops.hpp).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "detail/epilogue.hpp"

namespace fastfool {
namespace detail {

// Whether narrow MLPs take the batch-in-lanes path (lanes.cpp; set_lane_steps).
extern std::atomic<bool> g_lane_steps;

namespace {  // internal linkage: each kernel file gets its own copy, inlined as it needs

// Rows q0 .. q0 + m of X (m <= nr) into the panel p (D x nr), lanes >= m zero.
template <class T>
void to_lanes(const MatView<T>& X, std::int64_t q0, std::int64_t m, std::int64_t nr, T* p,
              const MicroKernel<T>& mk) {
    const std::int64_t D = X.cols;
    if (m < nr) std::fill(p, p + D * nr, T(0));
    if (X.cs == 1) {
        mk.transpose(X.data + q0 * X.rs, X.rs, p, nr, m, D);
    } else {
        for (std::int64_t j = 0; j < m; ++j)
            for (std::int64_t k = 0; k < D; ++k) p[k * nr + j] = X(q0 + j, k);
    }
}

// Lanes < m of the panel p (n x nr) into rows o, o + ldo, ... (n values each).
template <class T>
void from_lanes(const T* p, std::int64_t n, std::int64_t m, std::int64_t nr, T* o, std::int64_t ldo,
                const MicroKernel<T>& mk) {
    mk.transpose(p, nr, o, ldo, n, m);
}

// ce_block's results (bits included) through lane panels: nr rows at a time transposed, the
// bias added per class, ce_lanes across the lanes (~40x less per-row bookkeeping at C = 10),
// and back; a panel with NaN or infinite scores goes
// through ce_block itself.
template <class T>
void ce_rows(T* s, std::int64_t M, std::int64_t C, std::int64_t ld, bool scratch,
             const VecView<T>& b, const std::int64_t* y, T* loss, T* prob, std::int64_t ldp,
             const MicroKernel<T>& mk) {
    const std::int64_t nr = mk.nr;
    if (C == 0 || C > 64 || nr > 16 || !g_lane_steps.load(std::memory_order_relaxed))
        return ce_block(s, M, C, ld, scratch, b, y, loss, prob, ldp, mk);
    T panel[64 * 16];
    const MatView<T> S{s, M, C, ld, 1};
    for (std::int64_t q = 0; q < M; q += nr) {
        const std::int64_t m = std::min(nr, M - q);
        to_lanes(S, q, m, nr, panel, mk);
        if (b.data) mk.loops.add_bias_lanes(panel, C, nr, b);
        if (mk.loops.ce_lanes(panel, C, nr, m, y + q, loss ? loss + q : nullptr,
                              prob ? prob + q * ldp : nullptr, ldp, mk))
            from_lanes(panel, C, m, nr, s + q * ld, ld, mk);
        else
            ce_block(s + q * ld, m, C, ld, scratch, b, y + q, loss ? loss + q : nullptr,
                     prob ? prob + q * ldp : nullptr, ldp, mk);
    }
}

// The lane path where it saves padded work: every layer at most 64 wide, and the products'
// multiply-adds with outputs padded to mr (lanes) at most 93% of those padded to nr (rows; the
// backward products too when `backward`). Measured (20k rows, 2 threads, forward with softmax,
// rows / lanes time): 64-50-20-10 1.08, 784-50-20-10 1.06, 20-10-3 1.18 (ratios 0.81, 0.84,
// 0.63: lanes), 64-32-10 0.90, 784-64-10 0.92 (ratios 1.05, 1.03: rows, whose widths are
// multiples of 16 already). 10 fused steps: 64-50-20-10 36.4 -> 28.0 ms, 20-10-3 38.2 -> 23.7.
// (The rule as calibrated with mr-row tiles; the 4- and 5-row tiles, which came later, only make
// the paths it picks cheaper.)
template <class T>
bool lane_path(const std::vector<Dense<T>>& layers, std::int64_t D, bool backward,
               const MicroKernel<T>& mk) {
    if (!g_lane_steps.load(std::memory_order_relaxed) || layers.empty() || D == 0) return false;
    auto up = [](std::int64_t n, std::int64_t m) { return double((n + m - 1) / m * m); };
    double rows = 0, lanes = 0;
    std::int64_t in = D;
    for (const auto& l : layers) {
        const std::int64_t out = l.W.cols;
        if (out > 64) return false;
        rows += double(in) * up(out, mk.nr);
        lanes += double(in) * up(out, mk.mr);
        if (backward) {
            rows += double(out) * up(in, mk.nr);
            lanes += double(out) * up(in, mk.mr);
        }
        in = out;
    }
    return lanes <= 0.93 * rows;
}

// A (rows x K) packed as zero-padded mr-row slivers, each K x mr (element (i, p) at p * mr + i),
// so that a kc-deep chunk of sliver s starts at s * K * mr + pc * mr.
template <class T>
Buffer<T> pack_slivers(const MatView<T>& A, std::int64_t mr) {
    const std::int64_t ns = (A.rows + mr - 1) / mr, K = A.cols;
    Buffer<T> buf(static_cast<std::size_t>(std::max<std::int64_t>(1, ns * K * mr)));
    T* d = buf.data();
    for (std::int64_t s = 0; s < ns; ++s)
        for (std::int64_t p = 0; p < K; ++p)
            for (std::int64_t i = 0; i < mr; ++i) {
                const std::int64_t r = s * mr + i;
                d[(s * K + p) * mr + i] = r < A.rows ? A(r, p) : T(0);
            }
    return buf;
}

// The register tile of a lane product with n outputs: mr rows, or 5 or 4 where the ISA has
// those kernels and they pad n at least 2% less (50 = 10 x 5, 20 = 4 x 5, 64 = 16 x 4; a 6-row
// tile pads them to 54, 24, 66). Not for a sliver or two of padding on a wide layer: 784 stays
// on 6-row tiles (786), whose 12 accumulators run faster than a 4-row tile's 8 (784-50-20-2-4
// steps: 1.020). The tile shape never changes a result (lane_kernel_f32).
template <class T>
struct LaneTile {
    std::int64_t mr;
    MicroKernelFn<T> fn;
    typename MicroKernel<T>::LanePanelFn panel;  // all slivers of a product at most kc deep
    std::int64_t pad(std::int64_t n) const { return (n + mr - 1) / mr * mr; }
};
template <class T>
LaneTile<T> lane_tile(std::int64_t n, const MicroKernel<T>& mk) {
    LaneTile<T> best{mk.mr, mk.fn, mk.lane_panel_mr};
    for (const LaneTile<T> t :
         {LaneTile<T>{5, mk.lane_fn5, mk.lane_panel5}, LaneTile<T>{4, mk.lane_fn4, mk.lane_panel4}})
        if (double(t.pad(n)) < 0.98 * double(best.pad(n))) best = t;
    return best;
}

// A (rows x K) packed for lane products: slivers of its tile's rows (pack_slivers).
template <class T>
struct LanePack {
    LaneTile<T> tile;
    Buffer<T> a;
    LanePack(const MatView<T>& A, const MicroKernel<T>& mk)
        : tile(lane_tile(A.rows, mk)), a(pack_slivers(A, tile.mr)) {}
};

// out (tile.pad(rows) x nr, row stride nr) = A * B for A packed by LanePack (rows x K) and B
// one K x nr lane panel, in kc-deep chunks exactly as gemm_rows takes them: every entry is the
// same chain of fused multiply-adds as the row path's.
template <class T>
void lane_product(const LanePack<T>& A, std::int64_t rows, std::int64_t K, const T* b, T* out,
                  const MicroKernel<T>& mk) {
    const std::int64_t mr = A.tile.mr, nr = mk.nr, ns = (rows + mr - 1) / mr;
    const T* a = A.a.data();
    if (K > 0 && K <= mk.kc) return A.tile.panel(ns, K, a, b, out);
    for (std::int64_t s = 0; s < ns; ++s)
        for (std::int64_t pc = 0; pc < K; pc += mk.kc) {
            const std::int64_t kcb = std::min<std::int64_t>(mk.kc, K - pc);
            A.tile.fn(kcb, a + (s * K + pc) * mr, 1, mr, b + pc * nr, out + s * mr * nr, nr,
                      pc > 0);
        }
    if (K == 0) std::fill(out, out + ns * mr * nr, T(0));
}

// A narrow MLP with the batch in the vector lanes: a panel of nr rows is held transposed
// (features x nr, row stride nr), so every layer is a product whose register tile spans nr rows
// of the batch and mr outputs (outputs padded to a multiple of mr, not of nr: 64-50-20-10 does
// 12% fewer multiply-adds and 19% fewer activations than on row tiles padded to 16 columns),
// and the bias and activation run over whole contiguous panels. The products are the row
// path's chains of fused multiply-adds (same kc chunks) and the element-wise functions the same,
// so the activations have the same bits.
template <class T>
struct LaneNet {
    const std::vector<Dense<T>>& layers;
    const MicroKernel<T>& mk;
    std::vector<LanePack<T>> fwd;   // W_l^T (out x in) as output slivers
    std::vector<std::int64_t> off;  // layer l's activations: panel rows off[l] ..
    std::int64_t maxpad = 0;        // the most rows a padded output or input may take
    LaneNet(const std::vector<Dense<T>>& ls, std::int64_t D, const MicroKernel<T>& k)
        : layers(ls), mk(k), off(ls.size() + 1, 0) {
        maxpad = pad(D);
        for (std::size_t l = 0; l < ls.size(); ++l) {
            fwd.emplace_back(ls[l].W.transposed(), mk);
            off[l + 1] = off[l] + fwd[l].tile.pad(ls[l].W.cols);
            maxpad = std::max(maxpad, pad(ls[l].W.cols));
        }
    }
    // At least any tile's padding of n rows (the largest tile: mr).
    std::int64_t pad(std::int64_t n) const { return (n + mk.mr - 1) / mk.mr * mk.mr; }
    // Values in a panel of every layer's activations.
    std::size_t acts_size() const { return std::size_t(mk.nr) * off.back(); }
    // Forward of the panel x (D x nr) into acts; returns the last layer's output (C x nr).
    T* forward(const T* x, std::int64_t D, T* acts) const {
        const std::int64_t nr = mk.nr;
        const T* in = x;
        std::int64_t K = D;
        T* h = acts;
        for (std::size_t l = 0; l < layers.size(); ++l) {
            const std::int64_t w = layers[l].W.cols;
            h = acts + off[l] * nr;
            lane_product(fwd[l], w, K, in, h, mk);
            if (layers[l].b.data) mk.loops.add_bias_lanes(h, w, nr, layers[l].b);
            apply_act(h, w * nr, layers[l].act, mk);
            in = h;
            K = w;
        }
        return h;
    }
};

}  // namespace

// The lane path of a narrow MLP's CE gradients, vector-Jacobian products and fused steps
// (lanes.cpp); bit-identical to the row path (mlp.cpp).
template <class T>
void mlp_lanes(const MatView<T>& X, const std::vector<Dense<T>>& layers, const std::int64_t* y,
               T* loss, T* prob, std::int64_t ldp, int threads, const StepSpec<T>* step, T* G,
               std::int64_t ldg, const MatView<T>* V = nullptr, T* logits_out = nullptr,
               std::int64_t ldl = 0);

}  // namespace detail
}  // namespace fastfool
