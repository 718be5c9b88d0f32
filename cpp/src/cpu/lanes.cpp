// The lane path of narrow MLPs (detail/lanes.hpp): panels of nr rows stay transposed through
// every step of an attack; products on lane tiles, element-wise loops from the ISA table.
#include <atomic>

#include "fastfool/kernels.hpp"

#include "detail/lanes.hpp"

namespace fastfool {
namespace detail {

// Whether narrow MLPs take the batch-in-lanes path (LaneNet) and cross-entropy rows go through
// lane panels (ce_rows). Test hook: off compares with the row path / ce_block, which must give
// the same bits.
std::atomic<bool> g_lane_steps{true};

// L-inf / L2 steps of a narrow MLP on lane panels (LaneNet), or (step null) its cross-entropy
// input gradient into G (with V: the vector-Jacobian product V^T dlogits/dX, and the logits):
// the iterate stays transposed through all steps (one transpose in and one out per call), the
// derivatives and the step run over whole panels, and the softmax cross-entropy runs across
// the lanes (ce_lanes; ce_block on the rows for non-finite logits). Bit-identical to the row
// path.
template <class T>
void mlp_lanes(const MatView<T>& X, const std::vector<Dense<T>>& layers, const std::int64_t* y,
               T* loss, T* prob, std::int64_t ldp, int threads, const StepSpec<T>* step, T* G,
               std::int64_t ldg, const MatView<T>* V, T* logits_out, std::int64_t ldl) {
    const MicroKernel<T> mk = micro_kernel<T>();
    const std::size_t L = layers.size();
    const std::int64_t nr = mk.nr, D = X.cols, C = layers.back().W.cols;
    const LaneNet<T> net(layers, D, mk);
    std::vector<LanePack<T>> bwd;  // W_l (in x out) as input slivers
    for (std::size_t l = 0; l < L; ++l) bwd.emplace_back(layers[l].W, mk);
    struct WS {
        Buffer<T> x, x0, acts, d, ce;
    };
    const std::size_t P = std::size_t(nr);
    for_row_blocks<WS>(
        X.rows, mk.mc, nr, threads,
        [&] {
            WS w;
            w.x.resize(P * D);
            if (step) w.x0.resize(P * D);
            w.acts.resize(net.acts_size());
            w.d.resize(P * net.maxpad * 2);
            w.ce.resize(P * C);
            return w;
        },
        [&](std::int64_t r0, std::int64_t r1, WS& ws) {
            T* x = ws.x.data();
            T* x0 = ws.x0.data();
            T* ce = ws.ce.data();
            for (std::int64_t q0 = r0; q0 < r1; q0 += nr) {
                const std::int64_t m = std::min(nr, r1 - q0);
                to_lanes(X, q0, m, nr, x, mk);
                // x0 is X itself in a PGD without a random start: a copy, not a transpose
                const MatView<T>& centre = step ? step->X0 : X;
                const bool same = centre.data == X.data && centre.rs == X.rs && centre.cs == X.cs;
                if (step && same)
                    std::memcpy(x0, x, sizeof(T) * std::size_t(D * nr));
                else if (step)
                    to_lanes(step->X0, q0, m, nr, x0, mk);
                const int nsteps = step ? step->steps : 1;
                for (int it = 0; it < nsteps; ++it) {
                    checkpoint();  // a fused PGD may run for a long time in one block
                    const bool last = it + 1 == nsteps;
                    const T* z = net.forward(x, D, ws.acts.data());
                    T* delta = ws.d.data();
                    T* lq = last && loss ? loss + q0 : nullptr;
                    T* pq = last && prob ? prob + q0 * ldp : nullptr;
                    if (V) {  // a vector-Jacobian product: the cotangent V instead of P - onehot
                        if (logits_out) from_lanes(z, C, m, nr, logits_out + q0 * ldl, ldl, mk);
                        to_lanes(*V, q0, m, nr, delta, mk);
                    } else {
                        std::memcpy(delta, z, sizeof(T) * C * nr);
                        if (!mk.loops.ce_lanes(delta, C, nr, m, y + q0, lq, pq, ldp, mk)) {
                            // NaN or infinite logits: ce_block on the rows, P - onehot back
                            from_lanes(z, C, m, nr, ce, C, mk);
                            ce_block(ce, m, C, C, true, VecView<T>{}, y + q0, lq, pq, ldp, mk);
                            for (std::int64_t c = 0; c < C; ++c)
                                for (std::int64_t j = 0; j < nr; ++j)
                                    delta[c * nr + j] = j < m ? ce[j * C + c] : T(0);
                        }
                    }
                    T* spare = ws.d.data() + net.maxpad * nr;
                    for (std::size_t l = L; l-- > 0;) {
                        const std::int64_t wi = l ? layers[l - 1].W.cols : D;
                        lane_product(bwd[l], wi, layers[l].W.cols, delta, spare, mk);
                        if (l)
                            mk.loops.act_grad(spare, ws.acts.data() + net.off[l - 1] * nr, wi * nr,
                                              layers[l - 1].act);
                        std::swap(delta, spare);
                    }
                    if (!step) {  // delta: the input gradient
                        from_lanes(delta, D, m, nr, G + q0 * ldg, ldg, mk);
                        break;
                    }
                    if (step->l2)
                        mk.loops.lane_step_l2(x, delta, x0, D, nr, *step);
                    else
                        mk.loops.lane_step_linf(x, delta, x0, D, nr, *step);
                }
                if (!step) continue;
                from_lanes(x, D, m, nr, step->out + q0 * step->ldo, step->ldo, mk);
                if (step->final_prob)
                    from_lanes(net.forward(x, D, ws.acts.data()), C, m, nr,
                               step->final_prob + q0 * step->ldf, step->ldf, mk);
            }
            if (step && step->final_prob)
                softmax_block(step->final_prob + r0 * step->ldf, r1 - r0, C, step->ldf, mk);
        });
}

#define FASTFOOL_INSTANTIATE(T)                                                                    \
    template void mlp_lanes<T>(const MatView<T>&, const std::vector<Dense<T>>&,                    \
                               const std::int64_t*, T*, T*, std::int64_t, int, const StepSpec<T>*, \
                               T*, std::int64_t, const MatView<T>*, T*, std::int64_t);
FASTFOOL_INSTANTIATE(float)
FASTFOOL_INSTANTIATE(double)
#undef FASTFOOL_INSTANTIATE

}  // namespace detail

void set_lane_steps(bool on) { detail::g_lane_steps.store(on); }
bool lane_steps() { return detail::g_lane_steps.load(); }

}  // namespace fastfool
