// One row of the fused attack update (fused_update's semantics in kernels.hpp): sign / L2
// step, projection onto the eps-ball, optional quantisation, clipping. O(D) per row.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "detail/norms.hpp"
#include "fastfool/kernels.hpp"

namespace fastfool {
namespace detail {
namespace {  // internal linkage: each kernel file gets its own copy, inlined as it needs

// Rounds delta = o - x0 to multiples of q without leaving the eps-ball (see fused_update).
template <class T>
void quantize_row(T* o, const T* x0, std::int64_t x0s, std::int64_t D, bool l2, T eps, T q) {
    if (!l2) {
        for (std::int64_t j = 0; j < D; ++j) {
            const T c = x0[j * x0s];
            T d = std::nearbyint((o[j] - c) / q) * q;
            if (std::abs(d) > eps) d -= sign_of(d) * q;
            o[j] = c + d;
        }
        return;
    }
    T sum = 0;
    for (std::int64_t j = 0; j < D; ++j) {
        const T c = x0[j * x0s];
        const T d = std::nearbyint((o[j] - c) / q) * q;
        sum += d * d;
    }
    const bool truncate = std::sqrt(sum) > eps;
    for (std::int64_t j = 0; j < D; ++j) {
        const T c = x0[j * x0s];
        const T r = (o[j] - c) / q;
        o[j] = c + (truncate ? std::trunc(r) : std::nearbyint(r)) * q;
    }
}
// o = max(o, lo) (Upper: min(o, hi)) with the bound a scalar (stride 0), a contiguous array or
// strided: one plain loop per case, so that the common ones vectorise.
template <bool Upper, class T>
void clip_row(T* o, std::int64_t D, const VecView<T>& v) {
    auto one = [](T a, T b) { return Upper ? std::min(a, b) : std::max(a, b); };
    if (!v.data) return;
    if (v.stride == 0) {
        const T c = v.data[0];
        for (std::int64_t j = 0; j < D; ++j) o[j] = one(o[j], c);
    } else if (v.stride == 1) {
        for (std::int64_t j = 0; j < D; ++j) o[j] = one(o[j], v.data[j]);
    } else {
        for (std::int64_t j = 0; j < D; ++j) o[j] = one(o[j], v.data[j * v.stride]);
    }
}

// One row of the fused update (fused_update's semantics); o may alias x. Unit: x, g and x0
// contiguous (the common case), as constant strides the compiler vectorises (same loops).
template <class T, bool Unit>
void update_row_impl(const T* x, std::int64_t xs, const T* g, std::int64_t gs, const T* x0,
                     std::int64_t x0s, std::int64_t D, bool l2, T alpha, T eps,
                     const VecView<T>& lo, const VecView<T>& hi, T quantum, T* o) {
    if (Unit) xs = gs = x0s = 1;
    if (!l2) {
        for (std::int64_t j = 0; j < D; ++j) {
            const T c = x0[j * x0s];
            T v = x[j * xs] + alpha * sign_of(g[j * gs]);
            v = std::min(std::max(v, c - eps), c + eps);
            o[j] = v;
        }
    } else {
        const T gn = scaled_norm<T>(D, [&](std::int64_t j) { return g[j * gs]; });
        const T step = gn > T(0) ? alpha / gn : T(0);
        if (std::isfinite(step))
            for (std::int64_t j = 0; j < D; ++j) o[j] = x[j * xs] + step * g[j * gs];
        else  // alpha / |g| overflows (a subnormal gradient): g / |g| first
            for (std::int64_t j = 0; j < D; ++j) o[j] = x[j * xs] + alpha * (g[j * gs] / gn);
        const T dn = scaled_norm<T>(D, [&](std::int64_t j) { return o[j] - x0[j * x0s]; });
        if (dn > eps) {
            const T f = eps / dn;
            for (std::int64_t j = 0; j < D; ++j) {
                const T c = x0[j * x0s];
                o[j] = c + (o[j] - c) * f;
            }
        }
    }
    if (quantum > T(0)) quantize_row(o, x0, x0s, D, l2, eps, quantum);
    clip_row<false>(o, D, lo);
    clip_row<true>(o, D, hi);
}
template <class T>
void update_row(const T* x, std::int64_t xs, const T* g, std::int64_t gs, const T* x0,
                std::int64_t x0s, std::int64_t D, bool l2, T alpha, T eps, const VecView<T>& lo,
                const VecView<T>& hi, T quantum, T* o) {
    if (xs == 1 && gs == 1 && x0s == 1)
        update_row_impl<T, true>(x, 1, g, 1, x0, 1, D, l2, alpha, eps, lo, hi, quantum, o);
    else
        update_row_impl<T, false>(x, xs, g, gs, x0, x0s, D, l2, alpha, eps, lo, hi, quantum, o);
}

// The gradient rows of a block (dense, ld = D) applied to X rows r0.. through the step.
template <class T>
void step_block(const MatView<T>& X, const T* g, std::int64_t r0, std::int64_t M,
                const StepSpec<T>& st) {
    const std::int64_t D = X.cols;
    for (std::int64_t i = 0; i < M; ++i) {
        const std::int64_t r = r0 + i;
        update_row(X.data + r * X.rs, X.cs, g + i * D, std::int64_t(1), st.X0.data + r * st.X0.rs,
                   st.X0.cs, D, st.l2, st.alpha, st.eps, st.lo, st.hi, st.quantum,
                   st.out + r * st.ldo);
    }
}

}  // namespace
}  // namespace detail
}  // namespace fastfool
