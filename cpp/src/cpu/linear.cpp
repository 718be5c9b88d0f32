// Linear models: scores (S = X W^T + b with a fused epilogue) and the softmax cross-entropy
// input gradient with the optional fused attack step. Per row block: one product into a padded
// scratch, the CE epilogue, one product back (2 * 2 N D C FLOPs); W is packed once per call.
#include "fastfool/kernels.hpp"

#include "detail/lanes.hpp"
#include "detail/update.hpp"

namespace fastfool {
using namespace detail;  // NOLINT: the shared internals of the CPU kernels

namespace {
// The narrow-product path (the ISA's dot_rows) for C outputs over D inputs: outputs narrow
// enough that a register tile would be mostly padding, inputs deep enough that the horizontal
// sums closing each dot product are a small part. (In cache, 3000 x 784 x 10 float: 71
// GFLOP/s useful against 60 on the tile; D = 64: even.) The choice depends on the shapes only,
// never on the layout, so results do not change with the memory layout: W with strided
// columns is copied once (Narrow), row blocks of such an X into scratch (rows_for_dot).
template <class T>
struct Narrow {
    bool on = false;
    Buffer<T> copy;
    const T* w = nullptr;
    std::int64_t C = 0, ldw = 0;
    // W: C x D (rows are the outputs).
    Narrow(const MatView<T>& W, std::int64_t D, const MicroKernel<T>& mk) : C(W.rows) {
        on = C <= mk.dot_max_c && D >= 128;
        if (!on) return;
        w = W.data;
        ldw = W.rs;
        if (W.cs != 1) {
            copy.resize(std::size_t(W.rows * D));
            for (std::int64_t c = 0; c < W.rows; ++c)
                for (std::int64_t p = 0; p < D; ++p) copy.data()[c * D + p] = W(c, p);
            w = copy.data();
            ldw = D;
        }
    }
    // S rows r0..r1 of X times W^T; X rows with strided columns go through `scratch` (mc x D).
    void run(const MatView<T>& X, std::int64_t r0, std::int64_t r1, T* scratch, T* S,
             std::int64_t lds, const MicroKernel<T>& mk) const {
        const std::int64_t D = X.cols, M = r1 - r0;
        const T* x = X.data + r0 * X.rs;
        std::int64_t ldx = X.rs;
        if (X.cs != 1) {
            for (std::int64_t i = 0; i < M; ++i)
                for (std::int64_t p = 0; p < D; ++p) scratch[i * D + p] = X(r0 + i, p);
            x = scratch;
            ldx = D;
        }
        mk.dot_rows(M, C, D, x, ldx, w, ldw, S, lds);
    }
    // Per-thread scratch run() needs for X.
    std::size_t scratch_size(const MatView<T>& X, const MicroKernel<T>& mk) const {
        return on && X.cs != 1 ? std::size_t(mk.mc) * X.cols : 0;
    }
};
}  // namespace

template <class T>
void scores(const MatView<T>& X, const MatView<T>& W, const VecView<T>& b, Epilogue ep, T* S,
            std::int64_t lds, int threads) {
    const MicroKernel<T> mk = micro_kernel<T>();
    const std::int64_t C = W.rows;
    if (X.rows == 0 || C == 0) return;
    const Narrow<T> narrow(W, X.cols, mk);
    const PackedB<T> pb = narrow.on ? PackedB<T>{} : pack_b(W.transposed(), mk, threads);
    const std::size_t nx = narrow.scratch_size(X, mk);
    for_row_blocks<BlockWS<T>>(
        X.rows, mk.mc, mk.mr, threads, [&] { return BlockWS<T>(mk, 0, 0, nx); },
        [&](std::int64_t r0, std::int64_t r1, BlockWS<T>& ws) {
            T* out = S + r0 * lds;
            if (narrow.on)
                narrow.run(X, r0, r1, ws.c.data(), out, lds, mk);
            else
                gemm_rows(rows_of(X, r0, r1), pb, out, lds, false, mk, ws.g);
            for (std::int64_t i = 0; i < r1 - r0; ++i) add_bias(out + i * lds, C, b);
            epilogue_block(out, r1 - r0, C, lds, ep, mk);
        });
}

template <class T>
void ce_grad_linear(const MatView<T>& X, const MatView<T>& W, const VecView<T>& b,
                    const std::int64_t* y, T* G, std::int64_t ldg, T* loss, T* prob,
                    std::int64_t ldp, int threads, const StepSpec<T>* step) {
    const MicroKernel<T> mk = micro_kernel<T>();
    const std::int64_t C = W.rows, D = W.cols;
    if (X.rows == 0) return;
    const Narrow<T> narrow(W, D, mk);
    // Narrow models off the dot path take the lane path of a one-layer MLP (lanes.cpp): the
    // same chains of multiply-adds, so the same bits, on outputs padded to the lane tile instead
    // of nr (digits 64 -> 10: 12 instead of 16) and with the iterate transposed once per call
    // instead of per step. Measured (20k rows, PGD-10, 2 threads): 28.5 -> 21.4 ms.
    const std::vector<Dense<T>> one{Dense<T>{W.transposed(), b, Act::identity}};
    const bool lanes_ok =
        step ? step->quantum == T(0) && mk.nr <= 16 : !streams(X.rows, D, sizeof(T));
    if (!narrow.on && lanes_ok && lane_path(one, D, true, mk))
        return mlp_lanes(X, one, y, loss, prob, ldp, threads, step, G, ldg);
    const PackedB<T> pbs = narrow.on ? PackedB<T>{} : pack_b(W.transposed(), mk, threads);  // D x C
    const PackedB<T> pbg = pack_b(W, mk, threads);  // C x D: gradient
    const std::int64_t ldsc = padded_width(C, mk);  // scores scratch: whole tiles
    const std::size_t rows = padded_rows(mk);
    const bool stream = streams(X.rows, D, sizeof(T));
    for_row_blocks<BlockWS<T>>(
        X.rows, mk.mc, mk.mr, threads,
        [&] {
            return BlockWS<T>(mk, rows * ldsc, step ? std::size_t(mk.mc) * D : 0,
                              narrow.scratch_size(X, mk));
        },
        [&](std::int64_t r0, std::int64_t r1, BlockWS<T>& ws) {
            const std::int64_t M = r1 - r0;
            T* s = ws.a.data();
            const int nsteps = step ? step->steps : 1;
            for (int it = 0; it < nsteps; ++it) {
                checkpoint();  // a fused PGD may run for a long time in one block
                const MatView<T> cur = it == 0 ? X : step->current(X.rows, D);
                if (narrow.on)
                    narrow.run(cur, r0, r1, ws.c.data(), s, ldsc, mk);
                else
                    gemm_rows(rows_of(cur, r0, r1), pbs, s, ldsc, false, mk, ws.g, true);
                ce_rows(s, M, C, ldsc, true, b, y + r0, loss ? loss + r0 : nullptr,
                        prob ? prob + r0 * ldp : nullptr, ldp, mk);
                if (D == 0) break;  // no gradient to write or step
                if (step) {         // the block's gradient stays in cache and is applied right away
                    gemm_rows(MatView<T>{s, M, C, ldsc, 1}, pbg, ws.b.data(), D, false, mk, ws.g);
                    step_block(cur, ws.b.data(), r0, M, *step);
                } else {
                    gemm_rows(MatView<T>{s, M, C, ldsc, 1}, pbg, G + r0 * ldg, ldg, false, mk, ws.g,
                              false, stream);
                }
            }
        });
}

#define FASTFOOL_INSTANTIATE(T)                                                                    \
    template void scores<T>(const MatView<T>&, const MatView<T>&, const VecView<T>&, Epilogue, T*, \
                            std::int64_t, int);                                                    \
    template void ce_grad_linear<T>(const MatView<T>&, const MatView<T>&, const VecView<T>&,       \
                                    const std::int64_t*, T*, std::int64_t, T*, T*, std::int64_t,   \
                                    int, const StepSpec<T>*);
FASTFOOL_INSTANTIATE(float)
FASTFOOL_INSTANTIATE(double)
#undef FASTFOOL_INSTANTIATE

}  // namespace fastfool
