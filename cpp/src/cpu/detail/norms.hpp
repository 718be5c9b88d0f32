// The overflow-safe L2 norm shared by the row update and the lane step (the same bits in both).
// Internal linkage on purpose: included by translation units compiled for different ISAs, each
// gets its own copy (no inline function shared between them through the linker).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace fastfool {
namespace {

// ||v||_2 without overflow or underflow for any finite input (scaled by max |v|): the max
// (NaN skipped; any order gives the same), then the squares of v / max in kNormParts partial
// sums, element j in part j % kNormParts, combined as a fixed tree (norm_parts_sum). v / max is
// v * (1 / max) where that reciprocal is finite (not for a subnormal max): vector loops, no
// division per element (a scalar chain of divisions made L2 steps 3x slower than L-inf ones).
// lane_step_l2 computes the same per lane.
constexpr int kNormParts = 8;
template <class T>
T norm_parts_sum(const T* s) {
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}
template <class T, class F>
T scaled_norm(std::int64_t n, F value) {
    constexpr int P = kNormParts;
    T m[P] = {};
    std::int64_t j = 0;
    for (; j + P <= n; j += P)
        for (int u = 0; u < P; ++u) m[u] = std::max(m[u], std::abs(value(j + u)));
    for (; j < n; ++j) m[0] = std::max(m[0], std::abs(value(j)));
    T mx = m[0];
    for (int u = 1; u < P; ++u) mx = std::max(mx, m[u]);
    if (mx == T(0) || !std::isfinite(mx)) return mx;
    const T inv = T(1) / mx;
    T s[P] = {};
    auto sum_parts = [&](auto scaled) {
        std::int64_t k = 0;
        for (; k + P <= n; k += P)
            for (int u = 0; u < P; ++u) {
                const T v = scaled(value(k + u));
                s[u] += v * v;
            }
        for (; k < n; ++k) {
            const T v = scaled(value(k));
            s[k % P] += v * v;
        }
    };
    if (std::isfinite(inv))
        sum_parts([inv](T v) { return v * inv; });
    else
        sum_parts([mx](T v) { return v / mx; });
    return mx * std::sqrt(norm_parts_sum(s));
}
template <class T>
T sign_of(T v) {
    return T((v > T(0)) - (v < T(0)));
}

}  // namespace
}  // namespace fastfool
