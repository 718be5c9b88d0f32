// AVX2/FMA micro-kernels, compiled with -mavx2 -mfma for this file only and chosen at run time.
// float: 6x16 tile in 12 ymm accumulators (2 B loads + 6 broadcasts per 12 FMAs per k step);
// double: 6x8 tile, same register budget. Cost: 2*6*16*k (resp. 2*6*8*k) FLOPs per call.
#include <immintrin.h>


#include "fastfool/dispatch.hpp"

namespace fastfool {
namespace {

inline void store_row(float* c, __m256 lo, __m256 hi, bool accumulate) {
    if (accumulate) {
        lo = _mm256_add_ps(lo, _mm256_loadu_ps(c));
        hi = _mm256_add_ps(hi, _mm256_loadu_ps(c + 8));
    }
    _mm256_storeu_ps(c, lo);
    _mm256_storeu_ps(c + 8, hi);
}

// Non-temporal stores of a 16-float row (c 64-byte aligned: one whole cache line, written to
// memory without being read first).
inline void stream_row(float* c, __m256 lo, __m256 hi) {
    _mm256_stream_ps(c, lo);
    _mm256_stream_ps(c + 8, hi);
}

// Packed: A is a packed sliver (rsa = 1, csa = 6) walked with one pointer; otherwise six row
// pointers advance by csa. Stream: non-temporal stores (accumulate false, C rows 64-byte
// aligned; the caller fences).
template <bool Packed, bool Stream = false>
void micro_kernel_f32_6x16(std::int64_t k, const float* a, std::int64_t rsa, std::int64_t csa,
                           const float* b, float* c, std::int64_t ldc, bool accumulate) {
    if (Packed) {
        rsa = 1;
        csa = 6;
    }
    const float* a0 = a;
    const float* a1 = a + rsa;
    const float* a2 = a + 2 * rsa;
    const float* a3 = a + 3 * rsa;
    const float* a4 = a + 4 * rsa;
    const float* a5 = a + 5 * rsa;
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (std::int64_t p = 0; p < k; ++p) {
        const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        __m256 ai = _mm256_broadcast_ss(a0);
        c00 = _mm256_fmadd_ps(ai, b0, c00); c01 = _mm256_fmadd_ps(ai, b1, c01);
        ai = _mm256_broadcast_ss(a1);
        c10 = _mm256_fmadd_ps(ai, b0, c10); c11 = _mm256_fmadd_ps(ai, b1, c11);
        ai = _mm256_broadcast_ss(a2);
        c20 = _mm256_fmadd_ps(ai, b0, c20); c21 = _mm256_fmadd_ps(ai, b1, c21);
        ai = _mm256_broadcast_ss(a3);
        c30 = _mm256_fmadd_ps(ai, b0, c30); c31 = _mm256_fmadd_ps(ai, b1, c31);
        ai = _mm256_broadcast_ss(a4);
        c40 = _mm256_fmadd_ps(ai, b0, c40); c41 = _mm256_fmadd_ps(ai, b1, c41);
        ai = _mm256_broadcast_ss(a5);
        c50 = _mm256_fmadd_ps(ai, b0, c50); c51 = _mm256_fmadd_ps(ai, b1, c51);
        if (Packed) {
            a0 += 6; a1 += 6; a2 += 6; a3 += 6; a4 += 6; a5 += 6;
        } else {
            a0 += csa; a1 += csa; a2 += csa; a3 += csa; a4 += csa; a5 += csa;
        }
        b += 16;
    }
    if (Stream) {
        stream_row(c + 0 * ldc, c00, c01);
        stream_row(c + 1 * ldc, c10, c11);
        stream_row(c + 2 * ldc, c20, c21);
        stream_row(c + 3 * ldc, c30, c31);
        stream_row(c + 4 * ldc, c40, c41);
        stream_row(c + 5 * ldc, c50, c51);
        return;
    }
    store_row(c + 0 * ldc, c00, c01, accumulate);
    store_row(c + 1 * ldc, c10, c11, accumulate);
    store_row(c + 2 * ldc, c20, c21, accumulate);
    store_row(c + 3 * ldc, c30, c31, accumulate);
    store_row(c + 4 * ldc, c40, c41, accumulate);
    store_row(c + 5 * ldc, c50, c51, accumulate);
}

// MR x 16 packed tiles for the batch-in-lanes products (MR = 4, 5: layers whose widths a
// 6-row sliver would pad, e.g. 50 = 10 x 5, 20 = 4 x 5, 64 = 16 x 4). A packed as MR-row
// slivers (a[p * MR + i]); every output is the same chain of fused multiply-adds as in the 6 x 16
// kernel, so the tile shape never changes a result.
template <int MR>
inline void lane_tile_f32(std::int64_t k, const float* a, const float* b, float* c,
                          std::int64_t ldc, bool accumulate) {
    __m256 acc[MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (std::int64_t p = 0; p < k; ++p) {
        const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            const __m256 ai = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += MR;
        b += 16;
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) store_row(c + i * ldc, acc[i][0], acc[i][1], accumulate);
}
template <int MR>
void lane_kernel_f32(std::int64_t k, const float* a, std::int64_t, std::int64_t, const float* b,
                     float* c, std::int64_t ldc, bool accumulate) {
    lane_tile_f32<MR>(k, a, b, c, ldc, accumulate);
}
// ns slivers of k (<= kc) in one call: out rows s * MR .. (row stride 16) = sliver s times the
// k x 16 panel b (a lane product without a call per sliver).
template <int MR>
void lane_panel_f32(std::int64_t ns, std::int64_t k, const float* a, const float* b, float* c) {
    for (std::int64_t s = 0; s < ns; ++s)
        lane_tile_f32<MR>(k, a + s * k * MR, b, c + s * MR * 16, 16, false);
}

// Six rows of k floats into a packed sliver (dst[p * 6 + i]): 8 columns at a time as an 8 x 8
// transpose with two zero rows, each column stored as 8 floats of which the next column's store
// overwrites the last 2 (so up to 2 floats land past dst + 6k). 36 instructions per 48 values
// where the scalar loop takes 96.
void pack_a6_f32(std::int64_t k, const float* a, std::int64_t rsa, float* dst) {
    const float* r[6] = {a, a + rsa, a + 2 * rsa, a + 3 * rsa, a + 4 * rsa, a + 5 * rsa};
    const __m256 z = _mm256_setzero_ps();
    std::int64_t p = 0;
    for (; p + 8 <= k; p += 8) {
        const __m256 t0 = _mm256_unpacklo_ps(_mm256_loadu_ps(r[0] + p), _mm256_loadu_ps(r[1] + p));
        const __m256 t1 = _mm256_unpackhi_ps(_mm256_loadu_ps(r[0] + p), _mm256_loadu_ps(r[1] + p));
        const __m256 t2 = _mm256_unpacklo_ps(_mm256_loadu_ps(r[2] + p), _mm256_loadu_ps(r[3] + p));
        const __m256 t3 = _mm256_unpackhi_ps(_mm256_loadu_ps(r[2] + p), _mm256_loadu_ps(r[3] + p));
        const __m256 t4 = _mm256_unpacklo_ps(_mm256_loadu_ps(r[4] + p), _mm256_loadu_ps(r[5] + p));
        const __m256 t5 = _mm256_unpackhi_ps(_mm256_loadu_ps(r[4] + p), _mm256_loadu_ps(r[5] + p));
        const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        const __m256 s4 = _mm256_shuffle_ps(t4, z, 0x44), s5 = _mm256_shuffle_ps(t4, z, 0xEE);
        const __m256 s6 = _mm256_shuffle_ps(t5, z, 0x44), s7 = _mm256_shuffle_ps(t5, z, 0xEE);
        float* d = dst + p * 6;
        _mm256_storeu_ps(d, _mm256_permute2f128_ps(s0, s4, 0x20));
        _mm256_storeu_ps(d + 6, _mm256_permute2f128_ps(s1, s5, 0x20));
        _mm256_storeu_ps(d + 12, _mm256_permute2f128_ps(s2, s6, 0x20));
        _mm256_storeu_ps(d + 18, _mm256_permute2f128_ps(s3, s7, 0x20));
        _mm256_storeu_ps(d + 24, _mm256_permute2f128_ps(s0, s4, 0x31));
        _mm256_storeu_ps(d + 30, _mm256_permute2f128_ps(s1, s5, 0x31));
        _mm256_storeu_ps(d + 36, _mm256_permute2f128_ps(s2, s6, 0x31));
        _mm256_storeu_ps(d + 42, _mm256_permute2f128_ps(s3, s7, 0x31));
    }
    for (; p < k; ++p)
        for (int i = 0; i < 6; ++i) dst[p * 6 + i] = r[i][p];
}

// The same for doubles, 4 columns at a time: a 4 x 4 transpose of rows 0-3 and the pairs of
// rows 4-5; nothing is written past dst + 6k.
void pack_a6_f64(std::int64_t k, const double* a, std::int64_t rsa, double* dst) {
    const double* r[6] = {a, a + rsa, a + 2 * rsa, a + 3 * rsa, a + 4 * rsa, a + 5 * rsa};
    std::int64_t p = 0;
    for (; p + 4 <= k; p += 4) {
        const __m256d a0 = _mm256_loadu_pd(r[0] + p), a1 = _mm256_loadu_pd(r[1] + p);
        const __m256d a2 = _mm256_loadu_pd(r[2] + p), a3 = _mm256_loadu_pd(r[3] + p);
        const __m256d a4 = _mm256_loadu_pd(r[4] + p), a5 = _mm256_loadu_pd(r[5] + p);
        const __m256d u0 = _mm256_unpacklo_pd(a0, a1), u1 = _mm256_unpackhi_pd(a0, a1);
        const __m256d u2 = _mm256_unpacklo_pd(a2, a3), u3 = _mm256_unpackhi_pd(a2, a3);
        const __m256d v0 = _mm256_unpacklo_pd(a4, a5), v1 = _mm256_unpackhi_pd(a4, a5);
        double* d = dst + p * 6;
        _mm256_storeu_pd(d, _mm256_permute2f128_pd(u0, u2, 0x20));
        _mm_storeu_pd(d + 4, _mm256_castpd256_pd128(v0));
        _mm256_storeu_pd(d + 6, _mm256_permute2f128_pd(u1, u3, 0x20));
        _mm_storeu_pd(d + 10, _mm256_castpd256_pd128(v1));
        _mm256_storeu_pd(d + 12, _mm256_permute2f128_pd(u0, u2, 0x31));
        _mm_storeu_pd(d + 16, _mm256_extractf128_pd(v0, 1));
        _mm256_storeu_pd(d + 18, _mm256_permute2f128_pd(u1, u3, 0x31));
        _mm_storeu_pd(d + 22, _mm256_extractf128_pd(v1, 1));
    }
    for (; p < k; ++p)
        for (int i = 0; i < 6; ++i) dst[p * 6 + i] = r[i][p];
}

// dst[c * ldd + r] = src[r * lds + c] for r in [r0, r1), c in [c0, c1), one element at a time.
template <class T>
void transpose_scalar(const T* src, std::int64_t lds, T* dst, std::int64_t ldd, std::int64_t r0,
                      std::int64_t r1, std::int64_t c0, std::int64_t c1) {
    for (std::int64_t r = r0; r < r1; ++r)
        for (std::int64_t c = c0; c < c1; ++c) dst[c * ldd + r] = src[r * lds + c];
}

// dst[c * ldd + r] = src[r * lds + c] in B x B blocks (block(s, lds, d, ldd) transposes one
// through registers), the edges element by element.
template <int B, class T, class Block>
inline void transpose_blocked(const T* src, std::int64_t lds, T* dst, std::int64_t ldd,
                              std::int64_t rows, std::int64_t cols, Block block) {
    std::int64_t r = 0;
    for (; r + B <= rows; r += B) {
        std::int64_t c = 0;
        for (; c + B <= cols; c += B) block(src + r * lds + c, lds, dst + c * ldd + r, ldd);
        transpose_scalar(src, lds, dst, ldd, r, r + B, c, cols);  // columns past the blocks
    }
    transpose_scalar(src, lds, dst, ldd, r, rows, std::int64_t(0), cols);  // rows past them
}

// 8 x 8 float blocks (unpack, shuffle, 128-bit lane permutes). The lane panels' transposes
// (kernels.cpp to_lanes / from_lanes) are 8 x 8 blocks for 16-row panels.
void transpose_f32(const float* src, std::int64_t lds, float* dst, std::int64_t ldd,
                   std::int64_t rows, std::int64_t cols) {
    transpose_blocked<8>(src, lds, dst, ldd, rows, cols,
                         [](const float* s, std::int64_t ls, float* d, std::int64_t ld) {
        __m256 a0 = _mm256_loadu_ps(s), a1 = _mm256_loadu_ps(s + ls);
        __m256 a2 = _mm256_loadu_ps(s + 2 * ls), a3 = _mm256_loadu_ps(s + 3 * ls);
        __m256 a4 = _mm256_loadu_ps(s + 4 * ls), a5 = _mm256_loadu_ps(s + 5 * ls);
        __m256 a6 = _mm256_loadu_ps(s + 6 * ls), a7 = _mm256_loadu_ps(s + 7 * ls);
        const __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1);
        const __m256 t2 = _mm256_unpacklo_ps(a2, a3), t3 = _mm256_unpackhi_ps(a2, a3);
        const __m256 t4 = _mm256_unpacklo_ps(a4, a5), t5 = _mm256_unpackhi_ps(a4, a5);
        const __m256 t6 = _mm256_unpacklo_ps(a6, a7), t7 = _mm256_unpackhi_ps(a6, a7);
        a0 = _mm256_shuffle_ps(t0, t2, 0x44);
        a1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        a2 = _mm256_shuffle_ps(t1, t3, 0x44);
        a3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        a4 = _mm256_shuffle_ps(t4, t6, 0x44);
        a5 = _mm256_shuffle_ps(t4, t6, 0xEE);
        a6 = _mm256_shuffle_ps(t5, t7, 0x44);
        a7 = _mm256_shuffle_ps(t5, t7, 0xEE);
        _mm256_storeu_ps(d, _mm256_permute2f128_ps(a0, a4, 0x20));
        _mm256_storeu_ps(d + ld, _mm256_permute2f128_ps(a1, a5, 0x20));
        _mm256_storeu_ps(d + 2 * ld, _mm256_permute2f128_ps(a2, a6, 0x20));
        _mm256_storeu_ps(d + 3 * ld, _mm256_permute2f128_ps(a3, a7, 0x20));
        _mm256_storeu_ps(d + 4 * ld, _mm256_permute2f128_ps(a0, a4, 0x31));
        _mm256_storeu_ps(d + 5 * ld, _mm256_permute2f128_ps(a1, a5, 0x31));
        _mm256_storeu_ps(d + 6 * ld, _mm256_permute2f128_ps(a2, a6, 0x31));
        _mm256_storeu_ps(d + 7 * ld, _mm256_permute2f128_ps(a3, a7, 0x31));
    });
}

// The same for doubles in 4 x 4 blocks.
void transpose_f64(const double* src, std::int64_t lds, double* dst, std::int64_t ldd,
                   std::int64_t rows, std::int64_t cols) {
    transpose_blocked<4>(src, lds, dst, ldd, rows, cols,
                         [](const double* s, std::int64_t ls, double* d, std::int64_t ld) {
        const __m256d a0 = _mm256_loadu_pd(s), a1 = _mm256_loadu_pd(s + ls);
        const __m256d a2 = _mm256_loadu_pd(s + 2 * ls), a3 = _mm256_loadu_pd(s + 3 * ls);
        const __m256d u0 = _mm256_unpacklo_pd(a0, a1), u1 = _mm256_unpackhi_pd(a0, a1);
        const __m256d u2 = _mm256_unpacklo_pd(a2, a3), u3 = _mm256_unpackhi_pd(a2, a3);
        _mm256_storeu_pd(d, _mm256_permute2f128_pd(u0, u2, 0x20));
        _mm256_storeu_pd(d + ld, _mm256_permute2f128_pd(u1, u3, 0x20));
        _mm256_storeu_pd(d + 2 * ld, _mm256_permute2f128_pd(u0, u2, 0x31));
        _mm256_storeu_pd(d + 3 * ld, _mm256_permute2f128_pd(u1, u3, 0x31));
    });
}

inline void store_row(double* c, __m256d lo, __m256d hi, bool accumulate) {
    if (accumulate) {
        lo = _mm256_add_pd(lo, _mm256_loadu_pd(c));
        hi = _mm256_add_pd(hi, _mm256_loadu_pd(c + 4));
    }
    _mm256_storeu_pd(c, lo);
    _mm256_storeu_pd(c + 4, hi);
}

// Packed: A is a packed sliver (rsa = 1, csa = 6) walked with one pointer; otherwise six row
// pointers advance by csa.
template <bool Packed>
void micro_kernel_f64_6x8(std::int64_t k, const double* a, std::int64_t rsa, std::int64_t csa,
                           const double* b, double* c, std::int64_t ldc, bool accumulate) {
    if (Packed) {
        rsa = 1;
        csa = 6;
    }
    const double* a0 = a;
    const double* a1 = a + rsa;
    const double* a2 = a + 2 * rsa;
    const double* a3 = a + 3 * rsa;
    const double* a4 = a + 4 * rsa;
    const double* a5 = a + 5 * rsa;
    __m256d c00 = _mm256_setzero_pd(), c01 = _mm256_setzero_pd();
    __m256d c10 = _mm256_setzero_pd(), c11 = _mm256_setzero_pd();
    __m256d c20 = _mm256_setzero_pd(), c21 = _mm256_setzero_pd();
    __m256d c30 = _mm256_setzero_pd(), c31 = _mm256_setzero_pd();
    __m256d c40 = _mm256_setzero_pd(), c41 = _mm256_setzero_pd();
    __m256d c50 = _mm256_setzero_pd(), c51 = _mm256_setzero_pd();
    for (std::int64_t p = 0; p < k; ++p) {
        const __m256d b0 = _mm256_loadu_pd(b), b1 = _mm256_loadu_pd(b + 4);
        __m256d ai = _mm256_broadcast_sd(a0);
        c00 = _mm256_fmadd_pd(ai, b0, c00); c01 = _mm256_fmadd_pd(ai, b1, c01);
        ai = _mm256_broadcast_sd(a1);
        c10 = _mm256_fmadd_pd(ai, b0, c10); c11 = _mm256_fmadd_pd(ai, b1, c11);
        ai = _mm256_broadcast_sd(a2);
        c20 = _mm256_fmadd_pd(ai, b0, c20); c21 = _mm256_fmadd_pd(ai, b1, c21);
        ai = _mm256_broadcast_sd(a3);
        c30 = _mm256_fmadd_pd(ai, b0, c30); c31 = _mm256_fmadd_pd(ai, b1, c31);
        ai = _mm256_broadcast_sd(a4);
        c40 = _mm256_fmadd_pd(ai, b0, c40); c41 = _mm256_fmadd_pd(ai, b1, c41);
        ai = _mm256_broadcast_sd(a5);
        c50 = _mm256_fmadd_pd(ai, b0, c50); c51 = _mm256_fmadd_pd(ai, b1, c51);
        if (Packed) {
            a0 += 6; a1 += 6; a2 += 6; a3 += 6; a4 += 6; a5 += 6;
        } else {
            a0 += csa; a1 += csa; a2 += csa; a3 += csa; a4 += csa; a5 += csa;
        }
        b += 8;
    }
    store_row(c + 0 * ldc, c00, c01, accumulate);
    store_row(c + 1 * ldc, c10, c11, accumulate);
    store_row(c + 2 * ldc, c20, c21, accumulate);
    store_row(c + 3 * ldc, c30, c31, accumulate);
    store_row(c + 4 * ldc, c40, c41, accumulate);
    store_row(c + 5 * ldc, c50, c51, accumulate);
}

// e^x = 2^n * p: n = round(x / ln2) and p = e^r for r = x - n ln2 (|r| <= ln2/2, Cody-Waite
// split of ln2) by a degree-6 polynomial (Taylor coefficients; relative error ~1e-7).
inline __m256 exp_reduced(__m256 x, __m256& n) {
    n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    return _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
}

// exp(x) for 8 floats, scaled by 2^n through the exponent bits. Inputs below -87.3 give 0 (not
// denormals), above 88.7 give +inf, NaN stays NaN.
inline __m256 exp_ps(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.7228391f), lo = _mm256_set1_ps(-87.3365479f);
    const __m256 nan_mask = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    const __m256 over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n;
    const __m256 p = exp_reduced(x, n);
    // 2^n: n in [-126, 128]; split so that both factors are normal numbers
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i half = _mm256_srai_epi32(ni, 1);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
    const __m256 s2 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), _mm256_set1_epi32(127)), 23));
    __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    y = _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_inff()), over);
    y = _mm256_andnot_ps(under, y);
    return _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_nanf("")), nan_mask);
}

template <class F>
inline void map_ps(float* v, std::int64_t n, F f) {
    std::int64_t j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(v + j, f(_mm256_loadu_ps(v + j)));
    if (j < n) {  // tail through a padded register
        alignas(32) float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (std::int64_t t = j; t < n; ++t) buf[t - j] = v[t];
        _mm256_store_ps(buf, f(_mm256_load_ps(buf)));
        for (std::int64_t t = j; t < n; ++t) v[t] = buf[t - j];
    }
}

void exp_f32(float* v, std::int64_t n) { map_ps(v, n, exp_ps); }

// tanh as x P(x^2) / Q(x^2) (degrees 12 / 6 in x) on |x| <= 9.05, clamped there (tanh rounds to
// 1 in float beyond ~9.01). Coefficients fitted for this project (bench/RESULTS.md: an iterated
// weighted least-squares fit of the relative error, 7e-9 in exact arithmetic); in float with FMA
// Horner and a correctly rounded division the error is <= 2.6e-7 relative over the sweep. Half
// the instructions of the exp form above (no exponent scaling, no second polynomial, no blend
// between the two); x tiny or zero gives x exactly (P(0) = Q(0) = 1), -0 stays -0.
inline __m256 tanh_rational_ps(__m256 x) {
    const __m256 sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0f));
    // min / max return their second operand when either is NaN: |x| second here and the quotient
    // second below carry a NaN through (as x itself, quieted) without a compare and blend
    const __m256 ax = _mm256_min_ps(_mm256_set1_ps(9.05f), _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x));
    const __m256 t = _mm256_mul_ps(ax, ax);
    __m256 p = _mm256_set1_ps(-8.357405073e-14f);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(5.227555541e-11f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-2.012196987e-08f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.112912196e-05f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(3.101562383e-03f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.308187097e-01f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.0f));
    __m256 q = _mm256_set1_ps(2.542651200e-04f);
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(2.448565699e-02f));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(4.641519785e-01f));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(1.0f));
    // above 1, 1 - (Q - x P) / Q: the fused x P - Q is exact up to P's and Q's own rounding, and
    // the quotient's rounding is relative to the small 1 - tanh (the plain quotient's two
    // roundings relative to ~1 gave 5.2 ulps near 1)
    const __m256 far = _mm256_cmp_ps(ax, _mm256_set1_ps(1.0f), _CMP_GT_OQ);
    const __m256 num = _mm256_blendv_ps(_mm256_mul_ps(ax, p), _mm256_fnmadd_ps(ax, p, q), far);
    const __m256 u = _mm256_div_ps(num, q);
    const __m256 r = _mm256_min_ps(_mm256_set1_ps(1.0f),
                                   _mm256_blendv_ps(u, _mm256_sub_ps(_mm256_set1_ps(1.0f), u), far));
    return _mm256_or_ps(r, sign);
}

void tanh_f32(float* v, std::int64_t n) { map_ps(v, n, tanh_rational_ps); }

inline __m256 logistic_ps(__m256 x) {
    const __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), x));
    return _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

void logistic_f32(float* v, std::int64_t n) { map_ps(v, n, logistic_ps); }

// log1p(x) for 8 floats. u = 1 + x = 2^e * m with m in [sqrt(1/2), sqrt(2)); log(m) =
// 2 atanh(t), t = (m - 1) / (m + 1), |t| <= 0.1716, by its odd Taylor series to t^9 (next
// term < 2e-9 relative); then log1p(x) = e ln2 + log(m) + (x - (u - 1)) / u, the last term
// restoring what rounding 1 + x lost. x < -1 gives NaN, -1 gives -inf, +inf stays +inf.
inline __m256 log1p_ps(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 u = _mm256_add_ps(one, x);
    const __m256i ui = _mm256_castps_si256(u);
    // m: u's mantissa with the exponent of [1, 2), halved when above sqrt(2)
    __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(ui, 23), _mm256_set1_epi32(127));
    __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(ui, _mm256_set1_epi32(0x007fffff)),
                                                   _mm256_set1_epi32(0x3f800000)));
    const __m256 big = _mm256_cmp_ps(m, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
    m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), big);
    e = _mm256_sub_epi32(e, _mm256_castps_si256(big));  // big lanes are all ones: e + 1
    const __m256 ef = _mm256_cvtepi32_ps(e);
    const __m256 t = _mm256_div_ps(_mm256_sub_ps(m, one), _mm256_add_ps(m, one));
    const __m256 t2 = _mm256_mul_ps(t, t);
    __m256 p = _mm256_set1_ps(2.0f / 9);
    p = _mm256_fmadd_ps(p, t2, _mm256_set1_ps(2.0f / 7));
    p = _mm256_fmadd_ps(p, t2, _mm256_set1_ps(2.0f / 5));
    p = _mm256_fmadd_ps(p, t2, _mm256_set1_ps(2.0f / 3));
    const __m256 logm = _mm256_fmadd_ps(_mm256_mul_ps(p, t2), t, _mm256_add_ps(t, t));
    const __m256 corr = _mm256_div_ps(_mm256_sub_ps(x, _mm256_sub_ps(u, one)), u);
    __m256 r = _mm256_fmadd_ps(ef, _mm256_set1_ps(0.693359375f),
                               _mm256_add_ps(_mm256_fmadd_ps(ef, _mm256_set1_ps(-2.12194440e-4f), corr), logm));
    const __m256 tiny = _mm256_cmp_ps(u, one, _CMP_EQ_OQ);  // |x| below half an ulp of 1
    r = _mm256_blendv_ps(r, x, tiny);
    r = _mm256_blendv_ps(r, _mm256_set1_ps(__builtin_inff()),
                         _mm256_cmp_ps(x, _mm256_set1_ps(__builtin_inff()), _CMP_EQ_OQ));
    r = _mm256_blendv_ps(r, _mm256_set1_ps(-__builtin_inff()), _mm256_cmp_ps(u, _mm256_setzero_ps(), _CMP_EQ_OQ));
    // x < -1 and NaN: NaN
    return _mm256_blendv_ps(r, _mm256_set1_ps(__builtin_nanf("")),
                            _mm256_cmp_ps(x, _mm256_set1_ps(-1.0f), _CMP_NGE_UQ));
}

void log1p_f32(float* v, std::int64_t n) { map_ps(v, n, log1p_ps); }

inline float hsum(__m256 v) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
}

// R rows x G classes of dot products: R*G accumulators (<= 12 ymm), R + G loads per R*G FMAs.
// The last partial vector is read through a mask (no reads past a row). The next R rows are
// prefetched as these stream by: rows of a large X come from DRAM, a pair at a time, in runs
// too short for the hardware prefetcher (200k x 784 x 10 on one thread: 102 -> 73 ms).
template <int R, int G>
void dot_tile(const float* x, std::int64_t ldx, const float* w, std::int64_t ldw, std::int64_t D,
              __m256i tail_mask, float* s, std::int64_t lds) {
    __m256 acc[R][G];
    for (int r = 0; r < R; ++r)
        for (int g = 0; g < G; ++g) acc[r][g] = _mm256_setzero_ps();
    std::int64_t p = 0;
    for (; p + 8 <= D; p += 8) {
        __m256 xv[R];
        for (int r = 0; r < R; ++r) xv[r] = _mm256_loadu_ps(x + r * ldx + p);
        for (int r = 0; r < R; ++r)
            _mm_prefetch(reinterpret_cast<const char*>(x + (R + r) * ldx + p), _MM_HINT_T0);
        for (int g = 0; g < G; ++g) {
            const __m256 wv = _mm256_loadu_ps(w + g * ldw + p);
            for (int r = 0; r < R; ++r) acc[r][g] = _mm256_fmadd_ps(xv[r], wv, acc[r][g]);
        }
    }
    if (p < D) {
        __m256 xv[R];
        for (int r = 0; r < R; ++r) xv[r] = _mm256_maskload_ps(x + r * ldx + p, tail_mask);
        for (int g = 0; g < G; ++g) {
            const __m256 wv = _mm256_maskload_ps(w + g * ldw + p, tail_mask);
            for (int r = 0; r < R; ++r) acc[r][g] = _mm256_fmadd_ps(xv[r], wv, acc[r][g]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int g = 0; g < G; ++g) s[r * lds + g] = hsum(acc[r][g]);
}

template <int R>
void dot_group(int G, const float* x, std::int64_t ldx, const float* w, std::int64_t ldw,
               std::int64_t D, __m256i m, float* s, std::int64_t lds) {
    switch (G) {
        case 1: dot_tile<R, 1>(x, ldx, w, ldw, D, m, s, lds); break;
        case 2: dot_tile<R, 2>(x, ldx, w, ldw, D, m, s, lds); break;
        case 3: dot_tile<R, 3>(x, ldx, w, ldw, D, m, s, lds); break;
        case 4: dot_tile<R, 4>(x, ldx, w, ldw, D, m, s, lds); break;
        case 5: dot_tile<R, 5>(x, ldx, w, ldw, D, m, s, lds); break;
        default: dot_tile<R, 6>(x, ldx, w, ldw, D, m, s, lds); break;
    }
}

// Rows in pairs, classes in balanced groups of at most 6 (2 x 6 = 12 accumulators). Whole rows
// at a time: blocking D (to keep a block of W in L1) measured slower for D = 784, C = 10.
void dot_rows_f32(std::int64_t M, std::int64_t C, std::int64_t D, const float* X,
                  std::int64_t ldx, const float* W, std::int64_t ldw, float* S, std::int64_t lds) {
    const std::int64_t ngroups = (C + 5) / 6;
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(D % 8)),
                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (std::int64_t i = 0; i < M; i += 2) {
        std::int64_t c0 = 0;
        for (std::int64_t g = 0; g < ngroups; ++g) {
            const int G = static_cast<int>(C / ngroups + (g < C % ngroups ? 1 : 0));
            if (i + 1 < M)
                dot_group<2>(G, X + i * ldx, ldx, W + c0 * ldw, ldw, D, m, S + i * lds + c0, lds);
            else
                dot_group<1>(G, X + i * ldx, ldx, W + c0 * ldw, ldw, D, m, S + i * lds + c0, lds);
            c0 += G;
        }
    }
}

}  // namespace

MicroKernel<float> avx2_kernel_f32() {
    MicroKernel<float> k{6, 16, 256, 96, &micro_kernel_f32_6x16<true>,
                         &micro_kernel_f32_6x16<false>, Isa::avx2};
    k.fn_stream = &micro_kernel_f32_6x16<true, true>;
    k.lane_fn4 = &lane_kernel_f32<4>;
    k.lane_fn5 = &lane_kernel_f32<5>;
    k.lane_panel4 = &lane_panel_f32<4>;
    k.lane_panel5 = &lane_panel_f32<5>;
    k.lane_panel_mr = &lane_panel_f32<6>;
    k.pack_a = &pack_a6_f32;
    k.transpose = &transpose_f32;
    k.vexp = &exp_f32;
    k.vtanh = &tanh_f32;
    k.vlogistic = &logistic_f32;
    k.vlog1p = &log1p_f32;
    k.dot_rows = &dot_rows_f32;
    k.dot_max_c = 12;
    k.loops = avx2_loops_f32();
    return k;
}
MicroKernel<double> avx2_kernel_f64() {
    MicroKernel<double> k{6, 8, 256, 96, &micro_kernel_f64_6x8<true>,
                          &micro_kernel_f64_6x8<false>, Isa::avx2};
    k.pack_a = &pack_a6_f64;
    k.transpose = &transpose_f64;
    // double keeps the libm functions (no vector double exp written yet)
    k.vexp = &generic_exp<double>;
    k.vtanh = &generic_tanh<double>;
    k.vlogistic = &generic_logistic<double>;
    k.vlog1p = &generic_log1p<double>;
    k.loops = avx2_loops_f64();
    return k;
}

}  // namespace fastfool
