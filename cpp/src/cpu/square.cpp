// The L-inf Square Attack's loop (Andriushchenko et al. 2020) with windows shared by all rows,
// for a dense stack: every iteration changes a few features of every row in play, so the first
// layer's pre-activation is carried per row and updated by the window's columns of W_1 alone
// (in double: 5000 updates drift ~1e-13), and only the layers above run in full, on lane
// panels (LaneNet: the batch in the vector lanes, the ISA's products and activations).
// The rows of a thread advance through the iterations in lockstep, so the rows fooled along the
// way are compacted out of the panels. Python's loop (attacks/square.py) is the reference.
#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>

#include "fastfool/kernels.hpp"

#include "detail/lanes.hpp"

namespace fastfool {
using namespace detail;  // NOLINT: the shared internals of the CPU kernels

template <class T>
void square_linf_mlp(const MatView<T>& X, T* Xb, std::int64_t ldb, double* margin,
                     const std::int64_t* y, const std::vector<Dense<T>>& layers,
                     const std::int64_t* idx, const std::int64_t* start, const T* val,
                     std::int64_t n_iter, std::int64_t it0, const T* lo, const T* hi,
                     std::int64_t* queries, int threads) {
    const MicroKernel<T> mk = micro_kernel<T>();
    if (layers.empty()) throw std::invalid_argument("square_linf_mlp: no layers");
    if (layers.back().act != Act::identity)
        throw std::invalid_argument("square_linf_mlp: the last layer must produce logits");
    const std::int64_t N = X.rows, D = X.cols, nr = mk.nr;
    if (nr > 64) throw std::logic_error("square_linf_mlp: lane panels wider than 64");
    const std::int64_t w1 = layers[0].W.cols, C = layers.back().W.cols;
    std::vector<std::int64_t> live;  // rows in play: margin > 0 (NaN margins are not)
    for (std::int64_t i = 0; i < N; ++i)
        if (margin[i] > 0) live.push_back(i);
    if (live.empty() || n_iter <= 0) return;
    std::int64_t kmax = 0;
    for (std::int64_t it = 0; it < n_iter; ++it) kmax = std::max(kmax, start[it + 1] - start[it]);
    // W_1 in double, (D x w1) row-major, and b_1
    std::vector<double> W1(std::size_t(D * w1)), b1(std::size_t(w1), 0.0);
    for (std::int64_t j = 0; j < D; ++j)
        for (std::int64_t o = 0; o < w1; ++o) W1[j * w1 + o] = double(layers[0].W(j, o));
    if (layers[0].b.data)
        for (std::int64_t o = 0; o < w1; ++o) b1[o] = double(layers[0].b[o]);
    const std::vector<Dense<T>> rest(layers.begin() + 1, layers.end());
    std::optional<LaneNet<T>> net;
    if (!rest.empty()) net.emplace(rest, w1, mk);
    const std::int64_t nlive = std::int64_t(live.size());
    // one lockstep chunk per thread, whole panels each
    const std::int64_t npan = (nlive + nr - 1) / nr;
    const int nchunks = int(std::max<std::int64_t>(1, std::min<std::int64_t>(threads, npan)));
    const std::int64_t per = (npan + nchunks - 1) / nchunks;
    parallel_for(nchunks, nchunks, [&](std::int64_t chunk, int) {
        const std::int64_t p0 = chunk * per, p1 = std::min(npan, p0 + per);
        if (p0 >= p1) return;
        const std::int64_t r0 = p0 * nr, r1 = std::min(nlive, p1 * nr);
        std::int64_t P = p1 - p0;
        const std::size_t S = std::size_t(P * nr);
        Buffer<T> xa(S * D), xb(S * D), a1b(std::size_t(w1 * nr)), acts(net ? net->acts_size() : 1);
        std::vector<T> nv(std::size_t(std::max<std::int64_t>(kmax, 1) * nr));
        std::vector<double> h1(S * std::size_t(w1)),
            dd(std::size_t(std::max<std::int64_t>(kmax, 1) * nr)), zz(std::size_t(C * nr));
        T* a1 = a1b.data();
        std::vector<const double*> wrow(std::size_t(std::max<std::int64_t>(kmax, 1)));
        std::vector<double> mb(S, 0.0);
        std::vector<std::int64_t> yl(S, 0), rid(S, -1);
        std::fill(xa.data(), xa.data() + S * D, T(0));
        std::fill(xb.data(), xb.data() + S * D, T(0));
        // lane (p, l) holds row rid; features j at [p][j * nr + l]
        for (std::int64_t r = r0; r < r1; ++r) {
            const std::int64_t s = r - r0, p = s / nr, l = s % nr, i = live[r];
            T* pa = xa.data() + p * D * nr;
            T* pb = xb.data() + p * D * nr;
            for (std::int64_t j = 0; j < D; ++j) {
                pa[j * nr + l] = X(i, j);
                pb[j * nr + l] = Xb[i * ldb + j];
            }
            double* ph = h1.data() + p * w1 * nr;
            for (std::int64_t o = 0; o < w1; ++o) ph[o * nr + l] = b1[o];
            for (std::int64_t j = 0; j < D; ++j) {
                const double v = double(Xb[i * ldb + j]);
                for (std::int64_t o = 0; o < w1; ++o) ph[o * nr + l] += W1[j * w1 + o] * v;
            }
            mb[s] = margin[i];
            yl[s] = y[i];
            rid[s] = i;
        }
        std::int64_t n_in = r1 - r0;  // lanes 0 .. n_in hold rows in play
        auto finish_lane = [&](std::int64_t s, std::int64_t q) {
            const std::int64_t p = s / nr, l = s % nr, i = rid[s];
            const T* pb = xb.data() + p * D * nr;
            for (std::int64_t j = 0; j < D; ++j) Xb[i * ldb + j] = pb[j * nr + l];
            margin[i] = mb[s];
            queries[i] = q;
        };
        for (std::int64_t it = 0; it < n_iter && n_in > 0; ++it) {
            checkpoint();
            const std::int64_t e0 = start[it], k = start[it + 1] - e0;
            bool any_out = false;
            for (std::int64_t p = 0; p * nr < n_in; ++p) {
                const T* pa = xa.data() + p * D * nr;
                T* pb = xb.data() + p * D * nr;
                double* ph = h1.data() + p * w1 * nr;
                const std::int64_t m = std::min(nr, n_in - p * nr);
                // the window's new values and their changes, and the first layer's update
                bool moved = false;
                for (std::int64_t e = 0; e < k; ++e) {
                    const std::int64_t j = idx[e0 + e];
                    const T v = val[e0 + e];
                    for (std::int64_t l = 0; l < nr; ++l) {
                        T t = T(pa[j * nr + l] + v);
                        if (lo) t = std::max(t, lo[j]);
                        if (hi) t = std::min(t, hi[j]);
                        nv[e * nr + l] = t;
                        const double d = double(t) - double(pb[j * nr + l]);
                        dd[e * nr + l] = d;
                        moved |= l < m && d != 0;
                    }
                }
                if (!moved) continue;  // the same point: the same margin, not better
                // the first layer at the moved point, h1 + sum_e W_1[j_e] d_e, straight into the
                // next layer's input (an accepted lane redoes its sums in the same order)
                auto moved_h1 = [&](std::int64_t o, std::int64_t l) {
                    double acc = ph[o * nr + l];
                    for (std::int64_t e = 0; e < k; ++e)
                        acc += W1[idx[e0 + e] * w1 + o] * dd[e * nr + l];
                    return acc;
                };
                double* hz = net ? nullptr : zz.data();  // one layer: its output is the logits
                for (std::int64_t e = 0; e < k; ++e) wrow[e] = W1.data() + idx[e0 + e] * w1;
                for (std::int64_t o = 0; o < w1; ++o) {
                    double acc[64];
                    for (std::int64_t l = 0; l < nr; ++l) acc[l] = ph[o * nr + l];
                    for (std::int64_t e = 0; e < k; ++e) {
                        const double w = wrow[e][o];
                        const double* de = dd.data() + e * nr;
                        for (std::int64_t l = 0; l < nr; ++l) acc[l] += w * de[l];
                    }
                    if (hz)
                        for (std::int64_t l = 0; l < nr; ++l) hz[o * nr + l] = acc[l];
                    else
                        for (std::int64_t l = 0; l < nr; ++l) a1[o * nr + l] = T(acc[l]);
                }
                const double* z = zz.data();
                if (net) {
                    apply_act(a1, w1 * nr, layers[0].act, mk);
                    const T* zt = net->forward(a1, w1, acts.data());
                    for (std::int64_t q = 0; q < C * nr; ++q) zz[q] = double(zt[q]);
                }
                for (std::int64_t l = 0; l < m; ++l) {
                    const std::int64_t s = p * nr + l, c0 = yl[s];
                    double rival = -std::numeric_limits<double>::infinity();
                    bool nan = false;
                    for (std::int64_t c = 0; c < C; ++c) {
                        if (c == c0) continue;
                        const double v = z[c * nr + l];
                        nan |= std::isnan(v);
                        rival = v > rival ? v : rival;
                    }
                    const double mn =
                        nan ? std::numeric_limits<double>::quiet_NaN() : z[c0 * nr + l] - rival;
                    if (!(mn < mb[s])) continue;
                    mb[s] = mn;
                    for (std::int64_t e = 0; e < k; ++e) pb[idx[e0 + e] * nr + l] = nv[e * nr + l];
                    for (std::int64_t o = 0; o < w1; ++o) ph[o * nr + l] = moved_h1(o, l);
                    if (mn <= 0) {  // fooled by the logits: out of play, with it0 + it + 2 queries
                        finish_lane(s, it0 + it + 2);
                        rid[s] = -1;
                        any_out = true;
                    }
                }
            }
            if (!any_out) continue;
            // compact the lanes still in play to the front (destinations never pass sources)
            std::int64_t dst = 0;
            for (std::int64_t s = 0; s < n_in; ++s) {
                if (rid[s] < 0) continue;
                if (dst != s) {
                    const std::int64_t ps = s / nr, ls = s % nr, pd = dst / nr, ld = dst % nr;
                    for (auto* buf : {&xa, &xb}) {
                        T* b = buf->data();
                        for (std::int64_t j = 0; j < D; ++j)
                            b[(pd * D + j) * nr + ld] = b[(ps * D + j) * nr + ls];
                    }
                    double* h = h1.data();
                    for (std::int64_t o = 0; o < w1; ++o)
                        h[(pd * w1 + o) * nr + ld] = h[(ps * w1 + o) * nr + ls];
                    mb[dst] = mb[s];
                    yl[dst] = yl[s];
                    rid[dst] = rid[s];
                    rid[s] = -1;
                }
                ++dst;
            }
            n_in = dst;
        }
        for (std::int64_t s = 0; s < n_in; ++s) finish_lane(s, it0 + n_iter + 1);
    });
}

#define FASTFOOL_INSTANTIATE(T)                                                           \
    template void square_linf_mlp<T>(                                                     \
        const MatView<T>&, T*, std::int64_t, double*, const std::int64_t*,                \
        const std::vector<Dense<T>>&, const std::int64_t*, const std::int64_t*, const T*, \
        std::int64_t, std::int64_t, const T*, const T*, std::int64_t*, int);
FASTFOOL_INSTANTIATE(float)
FASTFOOL_INSTANTIATE(double)
#undef FASTFOOL_INSTANTIATE

}  // namespace fastfool
