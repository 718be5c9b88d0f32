// Pseudo-inverse back-projection through an MLP, top layer first: per step the clamped inverse
// activation minus the bias, then one product with pinv(W) (2 N sum(in * out) FLOPs).
#include <cmath>
#include <stdexcept>

#include "fastfool/kernels.hpp"

#include "detail/blocks.hpp"

namespace fastfool {
using namespace detail;  // NOLINT: the shared internals of the CPU kernels

namespace {
// Inverse activation with clamping into the open range; returns how many values were clamped.
template <class T>
std::int64_t inverse_act_minus_bias(const T* src, std::int64_t cs, T* dst, std::int64_t n, Act act,
                                    T margin, const VecView<T>& b) {
    std::int64_t clamped = 0;
    T lo = 0, hi = 0;
    if (act == Act::tanh) {
        lo = T(-1) + margin;
        hi = T(1) - margin;
    } else if (act == Act::logistic) {
        lo = margin;
        hi = T(1) - margin;
    }
    for (std::int64_t j = 0; j < n; ++j) {
        T v = src[j * cs];
        if (act != Act::identity) {
            if (v < lo) {
                v = lo;
                ++clamped;
            }
            if (v > hi) {
                v = hi;
                ++clamped;
            }
            v = act == Act::tanh ? std::atanh(v) : std::log(v) - std::log1p(-v);
        }
        dst[j] = v - b[j];
    }
    return clamped;
}
}  // namespace

template <class T>
std::int64_t backproject(const MatView<T>& H, const std::vector<BackStep<T>>& steps, T margin,
                         const MatView<T>& base, T* out, std::int64_t ldo, int threads) {
    for (const auto& s : steps)
        if (s.act == Act::relu) throw std::invalid_argument("backproject: relu is not invertible");
    if (steps.empty()) throw std::invalid_argument("backproject: no steps");
    const MicroKernel<T> mk = micro_kernel<T>();
    if (H.rows == 0) return 0;
    std::vector<PackedB<T>> pb;
    std::int64_t mw = 1;
    for (const auto& s : steps) {
        pb.push_back(pack_b(s.P, mk, threads));
        mw = std::max({mw, s.P.rows, s.P.cols});
    }
    const std::size_t nbuf = std::size_t(mk.mc) * mw;
    const std::int64_t D = steps.back().P.cols;
    // a large output (100k x 784 float: 313 MB) streamed out, not read in first
    const bool stream = streams(H.rows, D, sizeof(T));
    const auto ws_all = for_row_blocks<BlockWS<T>>(
        H.rows, mk.mc, mk.mr, threads, [&] { return BlockWS<T>(mk, nbuf, nbuf); },
        [&](std::int64_t r0, std::int64_t r1, BlockWS<T>& ws) {
            const std::int64_t M = r1 - r0;
            MatView<T> cur = rows_of(H, r0, r1);
            T* z = ws.a.data();  // act^-1(cur) - b
            T* h = ws.b.data();  // the layer below; z never aliases cur
            for (std::size_t s = 0; s < steps.size(); ++s) {
                const std::int64_t k = steps[s].P.rows, w = steps[s].P.cols;
                for (std::int64_t i = 0; i < M; ++i)
                    ws.counter += inverse_act_minus_bias(cur.data + i * cur.rs, cur.cs, z + i * k,
                                                         k, steps[s].act, margin, steps[s].b);
                if (s + 1 < steps.size()) {
                    gemm_rows(dense_view<T>(z, M, k, k), pb[s], h, w, false, mk, ws.g);
                    cur = dense_view<T>(h, M, w, w);
                    continue;
                }
                T* dst = out + r0 * ldo;
                const bool add = base.data != nullptr;
                if (add)
                    for (std::int64_t i = 0; i < M; ++i)
                        for (std::int64_t j = 0; j < D; ++j) dst[i * ldo + j] = base(r0 + i, j);
                gemm_rows(dense_view<T>(z, M, k, k), pb[s], dst, ldo, add, mk, ws.g, false, stream);
            }
        });
    std::int64_t clamped = 0;
    for (const auto& ws : ws_all) clamped += ws.counter;
    return clamped;
}

template std::int64_t backproject<float>(const MatView<float>&, const std::vector<BackStep<float>>&,
                                         float, const MatView<float>&, float*, std::int64_t, int);
template std::int64_t backproject<double>(const MatView<double>&,
                                          const std::vector<BackStep<double>>&, double,
                                          const MatView<double>&, double*, std::int64_t, int);

}  // namespace fastfool
