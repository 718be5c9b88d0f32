// Dense stacks: the forward pass (row blocks through every layer while in L2; narrow stacks on
// lane panels), and back-propagation of P - onehot or of a cotangent V to the input, with the
// optional fused attack steps. Cost: 2 N sum(in * out) FLOPs forward, twice that backward.
#include <stdexcept>

#include "fastfool/kernels.hpp"

#include "detail/lanes.hpp"
#include "detail/update.hpp"

namespace fastfool {
using namespace detail;  // NOLINT: the shared internals of the CPU kernels

namespace {
template <class T>
std::int64_t max_width(const std::vector<Dense<T>>& layers) {
    std::int64_t w = 1;
    for (const auto& l : layers) w = std::max(w, l.W.cols);
    return w;
}

// Forward a row block through the stack, keep every activation, then back-propagate a
// cotangent of the logits to the input: either P - onehot(y) (cross-entropy) or rows of V.
template <class T>
void mlp_backprop(const MatView<T>& X, const std::vector<Dense<T>>& layers, const std::int64_t* y,
                  const MatView<T>* V, T* G, std::int64_t ldg, T* loss, T* prob, std::int64_t ldp,
                  T* logits_out, std::int64_t ldl, int threads, const StepSpec<T>* step) {
    const MicroKernel<T> mk = micro_kernel<T>();
    if (layers.empty()) throw std::invalid_argument("ce_grad_mlp: no layers");
    if (layers.back().act != Act::identity)
        throw std::invalid_argument("ce_grad_mlp: the last layer must produce logits (identity)");
    if (X.rows == 0) return;
    const std::size_t L = layers.size();
    // The lane path for L-inf steps and for CE gradients written with plain stores (the row
    // path streams outputs far larger than the caches).
    const bool lanes_ok =
        step ? step->quantum == T(0) && mk.nr <= 16 : !streams(X.rows, X.cols, sizeof(T));
    if (lanes_ok && lane_path(layers, X.cols, true, mk)) {
        mlp_lanes(X, layers, y, loss, prob, ldp, threads, step, G, ldg, V, logits_out, ldl);
        return;
    }
    std::vector<PackedB<T>> fwd, bwd;
    // Scratch rows are padded to whole tiles (gemm_rows' padded): layer l's activations start
    // at off[l] * rows with row stride pw[l].
    std::vector<std::int64_t> off(L + 1, 0), pw(L);
    for (std::size_t l = 0; l < L; ++l) {
        fwd.push_back(pack_b(layers[l].W, mk, threads));
        bwd.push_back(pack_b(layers[l].W.transposed(), mk, threads));
        pw[l] = padded_width(layers[l].W.cols, mk);
        off[l + 1] = off[l] + pw[l];
    }
    const std::int64_t C = layers.back().W.cols, D = X.cols;
    const std::int64_t pmw = padded_width(max_width(layers), mk);
    const std::size_t rows = padded_rows(mk);
    const std::size_t nacts = rows * off[L], ndelta = rows * pmw * 2;
    const bool stream = streams(X.rows, X.cols, sizeof(T));
    const std::size_t ngrad = step ? std::size_t(mk.mc) * D : 0;
    for_row_blocks<BlockWS<T>>(
        X.rows, mk.mc, mk.mr, threads, [&] { return BlockWS<T>(mk, nacts, ndelta, ngrad); },
        [&](std::int64_t r0, std::int64_t r1, BlockWS<T>& ws) {
            const std::int64_t M = r1 - r0;
            auto act_buf = [&](std::size_t l) { return ws.a.data() + rows * off[l]; };
            auto forward = [&](MatView<T> in) {  // every layer's activations into act_buf
                for (std::size_t l = 0; l < L; ++l) {
                    const std::int64_t w = layers[l].W.cols;
                    T* dst = act_buf(l);
                    gemm_rows(in, fwd[l], dst, pw[l], false, mk, ws.g, true);
                    bias_act_block(dst, M, w, pw[l], layers[l].b, layers[l].act, mk, true);
                    in = MatView<T>{dst, M, w, pw[l], 1};
                }
            };
            const int nsteps = step ? step->steps : 1;
            for (int it = 0; it < nsteps; ++it) {
                checkpoint();  // a fused PGD may run for a long time in one block
                const MatView<T> cur = it == 0 ? X : step->current(X.rows, D);
                forward(rows_of(cur, r0, r1));
                T* logits = act_buf(L - 1);
                const std::int64_t ldz = pw[L - 1];
                if (logits_out)
                    for (std::int64_t i = 0; i < M; ++i)
                        std::memcpy(logits_out + (r0 + i) * ldl, logits + i * ldz, sizeof(T) * C);
                if (V) {
                    for (std::int64_t i = 0; i < M; ++i)
                        for (std::int64_t j = 0; j < C; ++j) logits[i * ldz + j] = (*V)(r0 + i, j);
                } else {
                    ce_rows(logits, M, C, ldz, true, VecView<T>{}, y + r0,
                            loss ? loss + r0 : nullptr, prob ? prob + r0 * ldp : nullptr, ldp, mk);
                }
                // Back-propagate delta = dLoss/dz_l from the logits down to the input.
                MatView<T> delta{logits, M, C, ldz, 1};
                T* spare[2] = {ws.b.data(), ws.b.data() + rows * pmw};
                for (std::size_t l = L - 1; l >= 1; --l) {
                    const std::int64_t w = layers[l - 1].W.cols, ld = pw[l - 1];
                    T* next = spare[l % 2];
                    gemm_rows(delta, bwd[l], next, ld, false, mk, ws.g, true);
                    const T* h = act_buf(l - 1);
                    if (layers[l - 1].act != Act::identity)  // padding columns: never read
                        mk.loops.act_grad(next, h, M * ld, layers[l - 1].act);
                    delta = MatView<T>{next, M, w, ld, 1};
                }
                if (D == 0) break;  // nothing to step (the final forward below still runs)
                if (step) {
                    gemm_rows(delta, bwd[0], ws.c.data(), D, false, mk, ws.g);
                    step_block(cur, ws.c.data(), r0, M, *step);
                } else {
                    gemm_rows(delta, bwd[0], G + r0 * ldg, ldg, false, mk, ws.g, false, stream);
                }
            }
            if (step && step->final_prob) {  // the forward of the returned rows, as mlp_forward
                forward(rows_of(step->current(X.rows, D), r0, r1));
                T* fp = step->final_prob + r0 * step->ldf;
                for (std::int64_t i = 0; i < M; ++i)
                    std::memcpy(fp + i * step->ldf, act_buf(L - 1) + i * pw[L - 1], sizeof(T) * C);
                softmax_block(fp, M, C, step->ldf, mk);
            }
        });
}
}  // namespace

template <class T>
void mlp_forward(const MatView<T>& X, const std::vector<Dense<T>>& layers, Epilogue ep, T* out,
                 std::int64_t ldo, int threads) {
    const MicroKernel<T> mk = micro_kernel<T>();
    if (X.rows == 0 || layers.empty()) return;
    if (lane_path(layers, X.cols, false, mk)) {  // the row path's bits (LaneNet)
        const LaneNet<T> net(layers, X.cols, mk);
        const std::int64_t C = layers.back().W.cols, nr = mk.nr;
        struct WS {  // a panel of inputs and its activations (no GEMM scratch: no gemm_rows)
            Buffer<T> x, acts;
        };
        for_row_blocks<WS>(
            X.rows, mk.mc, nr, threads,
            [&] { return WS{Buffer<T>(std::size_t(nr) * X.cols), Buffer<T>(net.acts_size())}; },
            [&](std::int64_t r0, std::int64_t r1, WS& ws) {
                for (std::int64_t q0 = r0; q0 < r1; q0 += nr) {
                    const std::int64_t m = std::min(nr, r1 - q0);
                    to_lanes(X, q0, m, nr, ws.x.data(), mk);
                    const T* z = net.forward(ws.x.data(), X.cols, ws.acts.data());
                    from_lanes(z, C, m, nr, out + q0 * ldo, ldo, mk);
                }
                epilogue_block(out + r0 * ldo, r1 - r0, C, ldo, ep, mk);
            });
        return;
    }
    std::vector<PackedB<T>> pb;
    for (const auto& l : layers) pb.push_back(pack_b(l.W, mk, threads));
    const std::int64_t mw = max_width(layers);
    const std::size_t nbuf = std::size_t(mk.mc) * mw;
    const std::size_t L = layers.size();
    for_row_blocks<BlockWS<T>>(
        X.rows, mk.mc, mk.mr, threads, [&] { return BlockWS<T>(mk, nbuf, nbuf); },
        [&](std::int64_t r0, std::int64_t r1, BlockWS<T>& ws) {
            const std::int64_t M = r1 - r0;
            MatView<T> in = rows_of(X, r0, r1);
            for (std::size_t l = 0; l < L; ++l) {
                const std::int64_t w = layers[l].W.cols;
                const bool last = l + 1 == L;
                T* dst = last ? out + r0 * ldo : (l % 2 ? ws.b.data() : ws.a.data());
                const std::int64_t ld = last ? ldo : w;
                gemm_rows(in, pb[l], dst, ld, false, mk, ws.g);
                bias_act_block(dst, M, w, ld, layers[l].b, layers[l].act, mk);
                if (last) epilogue_block(dst, M, w, ld, ep, mk);
                in = dense_view<T>(dst, M, w, ld);
            }
        });
}

template <class T>
void ce_grad_mlp(const MatView<T>& X, const std::vector<Dense<T>>& layers, const std::int64_t* y,
                 T* G, std::int64_t ldg, T* loss, T* prob, std::int64_t ldp, int threads,
                 const StepSpec<T>* step) {
    mlp_backprop<T>(X, layers, y, nullptr, G, ldg, loss, prob, ldp, nullptr, 0, threads, step);
}

template <class T>
void mlp_vjp(const MatView<T>& X, const std::vector<Dense<T>>& layers, const MatView<T>& V, T* G,
             std::int64_t ldg, T* logits, std::int64_t ldl, int threads) {
    mlp_backprop<T>(X, layers, nullptr, &V, G, ldg, nullptr, nullptr, 0, logits, ldl, threads,
                    nullptr);
}

#define FASTFOOL_INSTANTIATE(T)                                                                    \
    template void mlp_forward<T>(const MatView<T>&, const std::vector<Dense<T>>&, Epilogue, T*,    \
                                 std::int64_t, int);                                               \
    template void ce_grad_mlp<T>(const MatView<T>&, const std::vector<Dense<T>>&,                  \
                                 const std::int64_t*, T*, std::int64_t, T*, T*, std::int64_t, int, \
                                 const StepSpec<T>*);                                              \
    template void mlp_vjp<T>(const MatView<T>&, const std::vector<Dense<T>>&, const MatView<T>&,   \
                             T*, std::int64_t, T*, std::int64_t, int);
FASTFOOL_INSTANTIATE(float)
FASTFOOL_INSTANTIATE(double)
#undef FASTFOOL_INSTANTIATE

}  // namespace fastfool
