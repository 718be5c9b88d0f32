// AVX2/FMA micro-kernels and the AVX2 tables, compiled with -mavx2 -mfma for this file only and
// chosen at run time (vector maths and narrow products: avx2_math.cpp).
// float: 6x16 tile in 12 ymm accumulators (2 B loads + 6 broadcasts per 12 FMAs per k step);
// double: 6x8 tile, same register budget. Cost: 2*6*16*k (resp. 2*6*8*k) FLOPs per call.
#include <immintrin.h>

#include "detail/avx2.hpp"
#include "detail/portable.hpp"
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
// clang-format off: one row of the register tile per line
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
// clang-format on

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
// (detail/lanes.hpp to_lanes / from_lanes) are 8 x 8 blocks for 16-row panels.
void transpose_f32(const float* src, std::int64_t lds, float* dst, std::int64_t ldd,
                   std::int64_t rows, std::int64_t cols) {
    transpose_blocked<8>(
        src, lds, dst, ldd, rows, cols,
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
    transpose_blocked<4>(
        src, lds, dst, ldd, rows, cols,
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

inline void stream_row(double* c, __m256d lo, __m256d hi) {
    _mm256_stream_pd(c, lo);
    _mm256_stream_pd(c + 4, hi);
}

// Packed: A is a packed sliver (rsa = 1, csa = 6) walked with one pointer; otherwise six row
// pointers advance by csa. Stream: as micro_kernel_f32_6x16's.
// clang-format off: one row of the register tile per line
template <bool Packed, bool Stream = false>
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
// clang-format on

// MR x 8 packed tiles of doubles for the lane products, the same chain of fused multiply-adds
// per output as micro_kernel_f64_6x8 (so the tile shape never changes a result).
template <int MR>
inline void lane_tile_f64(std::int64_t k, const double* a, const double* b, double* c,
                          std::int64_t ldc, bool accumulate) {
    __m256d acc[MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_pd();
    for (std::int64_t p = 0; p < k; ++p) {
        const __m256d b0 = _mm256_loadu_pd(b), b1 = _mm256_loadu_pd(b + 4);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            const __m256d ai = _mm256_broadcast_sd(a + i);
            acc[i][0] = _mm256_fmadd_pd(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_pd(ai, b1, acc[i][1]);
        }
        a += MR;
        b += 8;
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) store_row(c + i * ldc, acc[i][0], acc[i][1], accumulate);
}
template <int MR>
void lane_kernel_f64(std::int64_t k, const double* a, std::int64_t, std::int64_t, const double* b,
                     double* c, std::int64_t ldc, bool accumulate) {
    lane_tile_f64<MR>(k, a, b, c, ldc, accumulate);
}
template <int MR>
void lane_panel_f64(std::int64_t ns, std::int64_t k, const double* a, const double* b, double* c) {
    for (std::int64_t s = 0; s < ns; ++s)
        lane_tile_f64<MR>(k, a + s * k * MR, b, c + s * MR * 8, 8, false);
}

}  // namespace

MicroKernel<float> avx2_kernel_f32() {
    MicroKernel<float> k;
    k.mr = 6;
    k.nr = 16;
    k.kc = 256;
    k.mc = 96;
    k.fn = &micro_kernel_f32_6x16<true>;
    k.fn_rows = &micro_kernel_f32_6x16<false>;
    k.isa = Isa::avx2;
    k.fn_stream = &micro_kernel_f32_6x16<true, true>;
    k.lane_fn4 = &lane_kernel_f32<4>;
    k.lane_fn5 = &lane_kernel_f32<5>;
    k.lane_panel4 = &lane_panel_f32<4>;
    k.lane_panel5 = &lane_panel_f32<5>;
    k.lane_panel_mr = &lane_panel_f32<6>;
    k.pack_a = &pack_a6_f32;
    k.transpose = &transpose_f32;
    k.vexp = &avx2::exp_f32;
    k.vtanh = &avx2::tanh_f32;
    k.vlogistic = &avx2::logistic_f32;
    k.vlog1p = &avx2::log1p_f32;
    k.dot_rows = &avx2::dot_rows_f32;
    k.dot_max_c = 12;
    k.loops = avx2_loops_f32();
    return k;
}
MicroKernel<double> avx2_kernel_f64() {
    MicroKernel<double> k;
    k.mr = 6;
    k.nr = 8;
    k.kc = 256;
    k.mc = 96;
    k.fn = &micro_kernel_f64_6x8<true>;
    k.fn_rows = &micro_kernel_f64_6x8<false>;
    k.isa = Isa::avx2;
    k.fn_stream = &micro_kernel_f64_6x8<true, true>;
    k.lane_fn4 = &lane_kernel_f64<4>;
    k.lane_fn5 = &lane_kernel_f64<5>;
    k.lane_panel4 = &lane_panel_f64<4>;
    k.lane_panel5 = &lane_panel_f64<5>;
    k.lane_panel_mr = &lane_panel_f64<6>;
    k.pack_a = &pack_a6_f64;
    k.transpose = &transpose_f64;
    // no hand-written double dot products: the portable loops, compiled here for AVX2 + FMA
    k.dot_rows = &portable_dot_rows<double>;
    k.dot_max_c = 12;
    // exp by the vector exp_pd (softmax epilogues, verdict confidences); the others from libm
    k.vexp = &avx2::exp_f64;
    k.vtanh = &generic_tanh<double>;
    k.vlogistic = &generic_logistic<double>;
    k.vlog1p = &generic_log1p<double>;
    k.loops = avx2_loops_f64();
    return k;
}

}  // namespace fastfool
