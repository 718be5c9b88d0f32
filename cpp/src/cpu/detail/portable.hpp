// Portable versions of the ISA table's kernels: plain loops over small register tiles that a
// compiler vectorises for whatever target the including file is built for. generic.cpp fills
// every slot of its table from here; an ISA's table takes from here the slots it has no
// hand-written kernel for. Internal linkage on purpose (each ISA's translation unit keeps its
// own copy, none is shared through the linker).
#pragma once
#include <cstdint>

#include "fastfool/dispatch.hpp"

namespace fastfool {
namespace {

// C[MR x NR] = (accumulate ? C : 0) + A * Bpanel over k (MicroKernelFn's contract): for every
// entry one chain acc += a * b over p, so any MR gives the same values as any other.
template <class T, int MR, int NR>
void portable_micro_kernel(std::int64_t k, const T* a, std::int64_t rsa, std::int64_t csa,
                           const T* b, T* c, std::int64_t ldc, bool accumulate) {
    T acc[MR][NR] = {};
    for (std::int64_t p = 0; p < k; ++p) {
        for (int i = 0; i < MR; ++i) {
            const T ai = a[i * rsa];
            for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[j];
        }
        a += csa;
        b += NR;
    }
    for (int i = 0; i < MR; ++i) {
        T* ci = c + i * ldc;
        if (accumulate)
            for (int j = 0; j < NR; ++j) ci[j] += acc[i][j];
        else
            for (int j = 0; j < NR; ++j) ci[j] = acc[i][j];
    }
}

// ns packed MR-row slivers of depth k times one k x NR panel (LanePanelFn's contract).
template <class T, int MR, int NR>
void portable_lane_panel(std::int64_t ns, std::int64_t k, const T* a, const T* b, T* out) {
    for (std::int64_t s = 0; s < ns; ++s)
        portable_micro_kernel<T, MR, NR>(k, a + s * k * MR, 1, MR, b, out + s * MR * NR, NR, false);
}

// dst[p * MR + i] = a[i * rsa + p]: one MR-row sliver packed.
template <class T, int MR>
void portable_pack_a(std::int64_t k, const T* a, std::int64_t rsa, T* dst) {
    for (std::int64_t p = 0; p < k; ++p)
        for (int i = 0; i < MR; ++i) dst[p * MR + i] = a[i * rsa + p];
}

// dst[c * ldd + r] = src[r * lds + c], in 8 x 8 blocks so both sides stay in a few lines.
template <class T>
void portable_transpose(const T* src, std::int64_t lds, T* dst, std::int64_t ldd, std::int64_t rows,
                        std::int64_t cols) {
    constexpr std::int64_t B = 8;
    for (std::int64_t r0 = 0; r0 < rows; r0 += B)
        for (std::int64_t c0 = 0; c0 < cols; c0 += B) {
            const std::int64_t r1 = r0 + B < rows ? r0 + B : rows;
            const std::int64_t c1 = c0 + B < cols ? c0 + B : cols;
            for (std::int64_t r = r0; r < r1; ++r)
                for (std::int64_t c = c0; c < c1; ++c) dst[c * ldd + r] = src[r * lds + c];
        }
}

// S[i, c] = sum_p X[i, p] W[c, p] (DotRowsFn's contract): each dot product in 8 interleaved
// partial sums (one vector of them on most targets), combined as a fixed tree.
template <class T>
void portable_dot_rows(std::int64_t M, std::int64_t C, std::int64_t D, const T* X, std::int64_t ldx,
                       const T* W, std::int64_t ldw, T* S, std::int64_t lds) {
    constexpr int P = 8;
    for (std::int64_t i = 0; i < M; ++i) {
        const T* x = X + i * ldx;
        for (std::int64_t c = 0; c < C; ++c) {
            const T* w = W + c * ldw;
            T acc[P] = {};
            std::int64_t p = 0;
            for (; p + P <= D; p += P)
                for (int u = 0; u < P; ++u) acc[u] += x[p + u] * w[p + u];
            for (int u = 0; p < D; ++p, ++u) acc[u] += x[p] * w[p];
            S[i * lds + c] =
                ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        }
    }
}

}  // namespace
}  // namespace fastfool
