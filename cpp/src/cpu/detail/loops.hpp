// Element-wise loops of the lane path and the backward pass, compiled once per instruction set
// into its table (generic.cpp; avx2_loops.cpp with AVX2 but no FMA, so both give the baseline's
// roundings bit for bit). Internal linkage on purpose: each ISA's translation unit keeps its own
// copy, none is shared through the linker. Only raw pointers and std:: maths inside.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "detail/norms.hpp"
#include "fastfool/dispatch.hpp"
#include "fastfool/kernels.hpp"

namespace fastfool {
namespace {

// delta *= act'(pre-activation), written in terms of the activation's output h.
template <class T>
void times_act_derivative(T* delta, const T* h, std::int64_t n, Act act) {
    switch (act) {
        case Act::identity:
            break;
        case Act::relu:
            for (std::int64_t j = 0; j < n; ++j) delta[j] = h[j] > T(0) ? delta[j] : T(0);
            break;
        case Act::tanh:
            for (std::int64_t j = 0; j < n; ++j) delta[j] *= (T(1) - h[j]) * (T(1) + h[j]);
            break;
        case Act::logistic:
            for (std::int64_t j = 0; j < n; ++j) delta[j] *= h[j] * (T(1) - h[j]);
            break;
    }
}

// ce_block on a lane panel: the logits z (C x nr, row stride nr) of lanes < m, replaced by
// P - onehot(y) (lanes >= m: 0), with each lane's loss and probabilities. Every lane goes
// through ce_block's operations for its row in the same order (four interleaved partial maxima
// and sums, the same vector exp and log1p, the same top-class split), so the bits are the
// same, with the lanes as the vector dimension instead of one row at a time (C = 10: per-row
// bookkeeping was most of ce_block's time). A panel row is one GCC vector of NR lanes (the
// arrays-of-lanes form kept its running maxima and sums in memory: store-forwarding chains).
// Returns false, writing nothing, when a logit of lanes < m is NaN or infinite (or nr is not
// one or two 32-byte vectors): the caller then uses ce_block (its scalar IEEE path).
template <class T, int NR>
bool ce_lanes_n(T* z, std::int64_t C, std::int64_t m, const std::int64_t* y, T* loss, T* prob,
                std::int64_t ldp, const MicroKernel<T>& mk) {
    // W lanes (32 bytes) at a time: the running maxima and sums stay in registers
    constexpr int W = 32 / sizeof(T), G = NR / W;
    static_assert(NR % W == 0);
    using Int = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
    typedef T V __attribute__((vector_size(32)));
    typedef Int IV __attribute__((vector_size(32)));
    static_assert(sizeof(Int) == sizeof(T));
#define FF_LD(v, c, g) std::memcpy(&(v), z + (c) * NR + (g) * W, 32)
#define FF_ST(c, g, v) std::memcpy(z + (c) * NR + (g) * W, &(v), 32)
    if (C == 0 || C > std::numeric_limits<Int>::max()) return false;
    for (int g = 0; g < G; ++g) {  // v * 0 is 0 for finite v, NaN for NaN or inf
        V nf = V{}, r;
        for (std::int64_t c = 0; c < C; ++c) {
            FF_LD(r, c, g);
            nf += r * T(0);
        }
        for (int j = 0; j < W && g * W + j < m; ++j)
            if (nf[j] != T(0)) return false;
    }
    const T ninf = -std::numeric_limits<T>::infinity();
    const V zero = V{};
    IV yl[G];
    V base[G], arg[G];
    for (int g = 0; g < G; ++g) {
        for (int j = 0; j < W; ++j) {
            const int l = g * W + j;
            yl[g][j] = l < m ? Int(y[l]) : Int(0);
        }
        V m0 = zero + ninf, m1 = m0, m2 = m0, m3 = m0, r0, r1, r2, r3;
        std::int64_t c = 0;
        for (; c + 4 <= C; c += 4) {
            FF_LD(r0, c, g);
            FF_LD(r1, c + 1, g);
            FF_LD(r2, c + 2, g);
            FF_LD(r3, c + 3, g);
            m0 = r0 > m0 ? r0 : m0;
            m1 = r1 > m1 ? r1 : m1;
            m2 = r2 > m2 ? r2 : m2;
            m3 = r3 > m3 ? r3 : m3;
        }
        for (; c < C; ++c) {
            FF_LD(r0, c, g);
            m0 = r0 > m0 ? r0 : m0;
        }
        m0 = m1 > m0 ? m1 : m0;
        m2 = m3 > m2 ? m3 : m2;
        m0 = m2 > m0 ? m2 : m0;  // the row's max
        V sy;                    // the label's logit, before the shift
        for (int j = 0; j < W; ++j) sy[j] = z[std::int64_t(yl[g][j]) * NR + g * W + j];
        base[g] = m0 - sy;
        for (c = 0; c < C; ++c) {
            FF_LD(r0, c, g);
            r0 -= m0;
            FF_ST(c, g, r0);
        }
    }
    mk.vexp(z, C * NR);
    for (int g = 0; g < G; ++g) {
        const IV y0 = yl[g];
        V s0 = zero, s1 = zero, s2 = zero, s3 = zero, r0, r1, r2, r3;
        std::int64_t c = 0;
        for (; c + 4 <= C; c += 4) {
            const Int k = Int(c);
            FF_LD(r0, c, g);
            FF_LD(r1, c + 1, g);
            FF_LD(r2, c + 2, g);
            FF_LD(r3, c + 3, g);
            s0 += y0 == k ? zero : r0;
            s1 += y0 == k + 1 ? zero : r1;
            s2 += y0 == k + 2 ? zero : r2;
            s3 += y0 == k + 3 ? zero : r3;
        }
        for (; c < C; ++c) {
            FF_LD(r0, c, g);
            s0 += y0 == Int(c) ? zero : r0;
        }
        V ey;
        for (int j = 0; j < W; ++j) ey[j] = z[std::int64_t(y0[j]) * NR + g * W + j];
        const V rest = (s0 + s1) + (s2 + s3), sum = rest + ey;
        const IV top = ey >= T(0.5);
        base[g] = top ? zero : base[g];
        arg[g] = top ? rest / ey : sum - T(1);
        const V inv = T(1) / sum;
        IV lane;
        for (int j = 0; j < W; ++j) lane[j] = Int(g * W + j);
        const IV live = lane < Int(m);
        for (c = 0; c < C; ++c) {
            FF_LD(r0, c, g);
            r0 = live ? r0 * inv : zero;
            FF_ST(c, g, r0);
        }
    }
#undef FF_LD
#undef FF_ST
    if (prob)
        for (std::int64_t j = 0; j < m; ++j)
            for (std::int64_t c = 0; c < C; ++c) prob[j * ldp + c] = z[c * NR + j];
    for (std::int64_t j = 0; j < m; ++j) z[std::int64_t(y[j]) * NR + j] -= T(1);
    if (loss) {
        T a[NR], b[NR];
        std::memcpy(a, arg, sizeof a);
        std::memcpy(b, base, sizeof b);
        mk.vlog1p(a, m);
        for (std::int64_t j = 0; j < m; ++j) loss[j] = b[j] + a[j];
    }
    return true;
}
template <class T>
bool ce_lanes(T* z, std::int64_t C, std::int64_t nr, std::int64_t m, const std::int64_t* y, T* loss,
              T* prob, std::int64_t ldp, const MicroKernel<T>& mk) {
    constexpr int W = 32 / sizeof(T);  // whole 32-byte vectors of lanes
    switch (nr) {
        case W:
            return ce_lanes_n<T, W>(z, C, m, y, loss, prob, ldp, mk);
        case 2 * W:
            return ce_lanes_n<T, 2 * W>(z, C, m, y, loss, prob, ldp, mk);
        default:
            return false;
    }
}

// Panel row o (nr lanes) of h += b[o], for o < w (nr at run time: a compile-time 16 gets the
// inner loop unrolled and the outer one vectorised with strided stores).
template <class T>
void add_bias_lanes(T* h, std::int64_t w, std::int64_t nr, const VecView<T>& b) {
    const T* bd = b.data;
    const std::int64_t bs = b.stride;
    for (std::int64_t o = 0; o < w; ++o) {
        const T bo = bd[o * bs];
        T* r = h + o * nr;
        for (std::int64_t j = 0; j < nr; ++j) r[j] += bo;
    }
}

// Feature p's clip bounds (clip_row's max then min) over a panel row of nr lanes.
template <class T>
inline void lane_clip(T* xv, std::int64_t nr, const StepSpec<T>& st, std::int64_t p) {
    if (st.lo.data) {
        const T lo = st.lo.data[p * st.lo.stride];
        for (std::int64_t j = 0; j < nr; ++j) xv[j] = std::max(xv[j], lo);
    }
    if (st.hi.data) {
        const T hi = st.hi.data[p * st.hi.stride];
        for (std::int64_t j = 0; j < nr; ++j) xv[j] = std::min(xv[j], hi);
    }
}

// The L-inf step on lane panels (D x nr): x += alpha sign(g), projected onto the eps-box of x0,
// clipped to lo / hi (per feature: per panel row), each value as update_row_impl computes it,
// in one pass (an absent bound is -inf / +inf: std::max(v, -inf) and std::min(v, inf) are v,
// NaN included). NR: the panel width when known at compile time (whole-vector inner loops).
template <class T, std::int64_t NR>
void lane_step_linf_n(T* x, const T* g, const T* x0, std::int64_t D, std::int64_t nr,
                      const StepSpec<T>& st) {
    if (NR) nr = NR;
    const T alpha = st.alpha, eps = st.eps, inf = std::numeric_limits<T>::infinity();
    for (std::int64_t p = 0; p < D; ++p) {
        T* xv = x + p * nr;
        const T* gv = g + p * nr;
        const T* cv = x0 + p * nr;
        const T lo = st.lo.data ? st.lo.data[p * st.lo.stride] : -inf;
        const T hi = st.hi.data ? st.hi.data[p * st.hi.stride] : inf;
        for (std::int64_t j = 0; j < nr; ++j) {
            const T c = cv[j];
            const T v = xv[j] + alpha * sign_of(gv[j]);
            xv[j] = std::min(std::max(std::min(std::max(v, c - eps), c + eps), lo), hi);
        }
    }
}
template <class T>
void lane_step_linf(T* x, const T* g, const T* x0, std::int64_t D, std::int64_t nr,
                    const StepSpec<T>& st) {
    if (nr == 16) return lane_step_linf_n<T, 16>(x, g, x0, D, nr, st);
    if (nr == 8) return lane_step_linf_n<T, 8>(x, g, x0, D, nr, st);
    lane_step_linf_n<T, 0>(x, g, x0, D, nr, st);
}

// The L2 step on lane panels: per lane (row) what update_row_impl's L2 branch computes, in the
// same order (scaled_norm: the max of |v| over the features, then the squares of v scaled by
// the max in kNormParts partial sums, feature p in part p % kNormParts), so the same bits;
// lanes are independent, the feature loop is outermost.
template <class T>
void lane_step_l2(T* x, const T* g, const T* x0, std::int64_t D, std::int64_t nr,
                  const StepSpec<T>& st) {
    constexpr std::int64_t kMax = 16;
    constexpr int P = kNormParts;
    T mx[kMax], inv[kMax], sum[P][kMax], step[kMax];
    // scaled_norm over the panel rows of value(p, j), per lane j, into out[j]
    auto norms = [&](auto value, T* out) {
        for (std::int64_t j = 0; j < nr; ++j) mx[j] = T(0);
        for (int u = 0; u < P; ++u)
            for (std::int64_t j = 0; j < nr; ++j) sum[u][j] = T(0);
        for (std::int64_t p = 0; p < D; ++p)
            for (std::int64_t j = 0; j < nr; ++j) mx[j] = std::max(mx[j], std::abs(value(p, j)));
        bool all_mul = true;  // every lane's reciprocal finite: the vector loop
        for (std::int64_t j = 0; j < nr; ++j) {
            inv[j] = T(1) / mx[j];
            all_mul &= std::isfinite(inv[j]) || mx[j] == T(0) || !std::isfinite(mx[j]);
        }
        if (all_mul) {
            for (std::int64_t p = 0; p < D; ++p) {
                T* su = sum[p % P];
                for (std::int64_t j = 0; j < nr; ++j) {
                    const T v = value(p, j) * inv[j];
                    su[j] += v * v;
                }
            }
        } else {
            for (std::int64_t p = 0; p < D; ++p)
                for (std::int64_t j = 0; j < nr; ++j) {
                    const T v = std::isfinite(inv[j]) ? value(p, j) * inv[j] : value(p, j) / mx[j];
                    sum[p % P][j] += v * v;
                }
        }
        for (std::int64_t j = 0; j < nr; ++j) {
            T parts[P];
            for (int u = 0; u < P; ++u) parts[u] = sum[u][j];
            out[j] = (mx[j] == T(0) || !std::isfinite(mx[j]))
                         ? mx[j]
                         : mx[j] * std::sqrt(norm_parts_sum(parts));
        }
    };
    T gn[kMax], dn[kMax];
    norms([&](std::int64_t p, std::int64_t j) { return g[p * nr + j]; }, gn);
    bool finite = true;
    for (std::int64_t j = 0; j < nr; ++j) {
        step[j] = gn[j] > T(0) ? st.alpha / gn[j] : T(0);
        finite &= std::isfinite(step[j]);
    }
    if (finite)
        for (std::int64_t p = 0; p < D; ++p)
            for (std::int64_t j = 0; j < nr; ++j)
                x[p * nr + j] = x[p * nr + j] + step[j] * g[p * nr + j];
    else  // as the row path: g / |g| first where alpha / |g| overflows
        for (std::int64_t p = 0; p < D; ++p)
            for (std::int64_t j = 0; j < nr; ++j)
                x[p * nr + j] = std::isfinite(step[j])
                                    ? x[p * nr + j] + step[j] * g[p * nr + j]
                                    : x[p * nr + j] + st.alpha * (g[p * nr + j] / gn[j]);
    norms([&](std::int64_t p, std::int64_t j) { return x[p * nr + j] - x0[p * nr + j]; }, dn);
    for (std::int64_t j = 0; j < nr; ++j) {
        if (!(dn[j] > st.eps)) continue;
        const T f = st.eps / dn[j];
        for (std::int64_t p = 0; p < D; ++p) {
            const T c = x0[p * nr + j];
            x[p * nr + j] = c + (x[p * nr + j] - c) * f;
        }
    }
    for (std::int64_t p = 0; p < D; ++p) lane_clip(x + p * nr, nr, st, p);
}

// The table of these loops as compiled in the including translation unit.
template <class T>
Loops<T> make_loops() {
    Loops<T> t;
    t.act_grad = &times_act_derivative<T>;
    t.ce_lanes = &ce_lanes<T>;
    t.add_bias_lanes = &add_bias_lanes<T>;
    t.lane_step_linf = &lane_step_linf<T>;
    t.lane_step_l2 = &lane_step_l2<T>;
    return t;
}

}  // namespace
}  // namespace fastfool
