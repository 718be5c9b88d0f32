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

// Packed: A is a packed sliver (rsa = 1, csa = 6) walked with one pointer; otherwise six row
// pointers advance by csa.
template <bool Packed>
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
    store_row(c + 0 * ldc, c00, c01, accumulate);
    store_row(c + 1 * ldc, c10, c11, accumulate);
    store_row(c + 2 * ldc, c20, c21, accumulate);
    store_row(c + 3 * ldc, c30, c31, accumulate);
    store_row(c + 4 * ldc, c40, c41, accumulate);
    store_row(c + 5 * ldc, c50, c51, accumulate);
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

}  // namespace

MicroKernel<float> avx2_kernel_f32() {
    return {6, 16, 256, 96, &micro_kernel_f32_6x16<true>, &micro_kernel_f32_6x16<false>, Isa::avx2};
}
MicroKernel<double> avx2_kernel_f64() {
    return {6, 8, 256, 96, &micro_kernel_f64_6x8<true>, &micro_kernel_f64_6x8<false>, Isa::avx2};
}

}  // namespace fastfool
