// AVX-512 slots (AVX512F/VL/DQ/BW with FMA), compiled with those flags for this file only and
// chosen at run time when the CPU and OS support them (dispatch.cpp).
//
// The table keeps the AVX2 table's geometry (float 6 x 16, double 6 x 8 tiles, the same kc and
// mc), so one zmm register holds a whole tile row where AVX2 needs two ymm: every output is the
// same chain of fused multiply-adds in the same order, and the vector maths are the AVX2
// polynomials operation for operation. Results are therefore bit-identical to the AVX2 path
// (tests/test_avx512.py checks that on machines that have AVX-512), and the drivers, the lane
// path and its routes are unchanged. What AVX-512 buys on a core with 256-bit FMA units (AMD Zen
// 4) is half the instructions per tile step and masked tails; on cores with two 512-bit FMA
// units the same code has twice the peak. Slots not written here (packing, transposes, the
// narrow dot products, double tanh/logistic/log1p) are the AVX2 ones, valid on any AVX-512 CPU.
// Cost: 2*6*16*k (float) or 2*6*8*k (double) FLOPs per micro-kernel call.
// GCC 12's avx512fintrin.h builds its "undefined" registers from self-initialised variables,
// which -Wmaybe-uninitialized reports at every use (a known false positive of the header).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>

#include "fastfool/dispatch.hpp"

namespace fastfool {
namespace {

inline void store_row(float* c, __m512 v, bool accumulate) {
    if (accumulate) v = _mm512_add_ps(v, _mm512_loadu_ps(c));
    _mm512_storeu_ps(c, v);
}
inline void store_row(double* c, __m512d v, bool accumulate) {
    if (accumulate) v = _mm512_add_pd(v, _mm512_loadu_pd(c));
    _mm512_storeu_pd(c, v);
}

// MR-row packed tiles for the batch-in-lanes products (MR = 4, 5, 6), one zmm per row: the same
// chain of multiply-adds per output as the 6-row kernels (and as AVX2's lane tiles).
template <class T>
struct Vec;
template <>
struct Vec<float> {
    using V = __m512;
    static constexpr int nr = 16;
    static V zero() { return _mm512_setzero_ps(); }
    static V load(const float* p) { return _mm512_loadu_ps(p); }
    static V bcast(const float* p) { return _mm512_set1_ps(*p); }
    static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static void stream(float* p, V v) { _mm512_stream_ps(p, v); }
};
template <>
struct Vec<double> {
    using V = __m512d;
    static constexpr int nr = 8;
    static V zero() { return _mm512_setzero_pd(); }
    static V load(const double* p) { return _mm512_loadu_pd(p); }
    static V bcast(const double* p) { return _mm512_set1_pd(*p); }
    static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
    static void stream(double* p, V v) { _mm512_stream_pd(p, v); }
};

// 6 x 16 floats or 6 x 8 doubles, one zmm per row. Packed: A is a packed sliver (rsa = 1,
// csa = 6); otherwise six row pointers advance by csa. Stream: non-temporal stores of whole cache
// lines (accumulate false, C rows 64-byte aligned; the caller fences).
template <class T, bool Packed, bool Stream = false>
void micro_kernel_6(std::int64_t k, const T* a, std::int64_t rsa, std::int64_t csa, const T* b,
                    T* c, std::int64_t ldc, bool accumulate) {
    using S = Vec<T>;
    if (Packed) {
        rsa = 1;
        csa = 6;
    }
    const T* ar[6];
    typename S::V acc[6];
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) {
        ar[i] = a + i * rsa;
        acc[i] = S::zero();
    }
    for (std::int64_t p = 0; p < k; ++p) {
        const typename S::V b0 = S::load(b);
#pragma GCC unroll 6
        for (int i = 0; i < 6; ++i) {
            acc[i] = S::fma(S::bcast(ar[i]), b0, acc[i]);
            ar[i] += Packed ? 6 : csa;
        }
        b += S::nr;
    }
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) {
        if (Stream)
            S::stream(c + i * ldc, acc[i]);
        else
            store_row(c + i * ldc, acc[i], accumulate);
    }
}

template <int MR, class T>
inline void lane_tile(std::int64_t k, const T* a, const T* b, T* c, std::int64_t ldc,
                      bool accumulate) {
    using S = Vec<T>;
    typename S::V acc[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i] = S::zero();
    for (std::int64_t p = 0; p < k; ++p) {
        const typename S::V b0 = S::load(b);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) acc[i] = S::fma(S::bcast(a + i), b0, acc[i]);
        a += MR;
        b += S::nr;
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) store_row(c + i * ldc, acc[i], accumulate);
}
template <int MR, class T>
void lane_kernel(std::int64_t k, const T* a, std::int64_t, std::int64_t, const T* b, T* c,
                 std::int64_t ldc, bool accumulate) {
    lane_tile<MR, T>(k, a, b, c, ldc, accumulate);
}
template <int MR, class T>
void lane_panel(std::int64_t ns, std::int64_t k, const T* a, const T* b, T* c) {
    constexpr int nr = Vec<T>::nr;
    for (std::int64_t s = 0; s < ns; ++s)
        lane_tile<MR, T>(k, a + s * k * MR, b, c + s * MR * nr, nr, false);
}

// ---- vector maths: the AVX2 functions of avx2_math.cpp on 16 floats (8 doubles), the same
// operations in the same order, so the same bits; tails through masked loads and stores.

inline __m512 exp_ps(__m512 x) {
    const __m512 hi = _mm512_set1_ps(88.7228391f), lo = _mm512_set1_ps(-87.3365479f);
    const __mmask16 nan_mask = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    const __mmask16 over = _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ);
    const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    // AVX2's min(max(x, lo), hi): a NaN x becomes hi there (the second operand); the same here
    x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __m512i ni = _mm512_cvtps_epi32(n);
    const __m512i half = _mm512_srai_epi32(ni, 1);
    const __m512 s1 =
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(half, _mm512_set1_epi32(127)), 23));
    const __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_add_epi32(_mm512_sub_epi32(ni, half), _mm512_set1_epi32(127)), 23));
    __m512 y = _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
    y = _mm512_mask_blend_ps(over, y, _mm512_set1_ps(__builtin_inff()));
    y = _mm512_maskz_mov_ps(static_cast<__mmask16>(~under), y);
    return _mm512_mask_blend_ps(nan_mask, y, _mm512_set1_ps(__builtin_nanf("")));
}

inline __m512 tanh_rational_ps(__m512 x) {
    const __m512i signbit = _mm512_set1_epi32(static_cast<int>(0x80000000u));
    const __m512i xi = _mm512_castps_si512(x);
    const __m512i sign = _mm512_and_si512(xi, signbit);
    // min(9.05, |x|): |x| second, so a NaN passes through as in the AVX2 function
    const __m512 ax =
        _mm512_min_ps(_mm512_set1_ps(9.05f), _mm512_castsi512_ps(_mm512_andnot_si512(signbit, xi)));
    const __m512 t = _mm512_mul_ps(ax, ax);
    __m512 p = _mm512_set1_ps(-8.357405073e-14f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(5.227555541e-11f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-2.012196987e-08f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.112912196e-05f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(3.101562383e-03f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.308187097e-01f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.0f));
    __m512 q = _mm512_set1_ps(2.542651200e-04f);
    q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(2.448565699e-02f));
    q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(4.641519785e-01f));
    q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(1.0f));
    const __mmask16 far = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(1.0f), _CMP_GT_OQ);
    const __m512 num = _mm512_mask_blend_ps(far, _mm512_mul_ps(ax, p), _mm512_fnmadd_ps(ax, p, q));
    const __m512 u = _mm512_div_ps(num, q);
    const __m512 r = _mm512_min_ps(
        _mm512_set1_ps(1.0f), _mm512_mask_blend_ps(far, u, _mm512_sub_ps(_mm512_set1_ps(1.0f), u)));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r), sign));
}

inline __m512 logistic_ps(__m512 x) {
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), x));
    return _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

inline __m512 log1p_ps(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 u = _mm512_add_ps(one, x);
    const __m512i ui = _mm512_castps_si512(u);
    __m512i e = _mm512_sub_epi32(_mm512_srli_epi32(ui, 23), _mm512_set1_epi32(127));
    __m512 m = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_and_si512(ui, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x3f800000)));
    const __mmask16 big = _mm512_cmp_ps_mask(m, _mm512_set1_ps(1.41421356f), _CMP_GT_OQ);
    m = _mm512_mask_blend_ps(big, m, _mm512_mul_ps(m, _mm512_set1_ps(0.5f)));
    e = _mm512_mask_add_epi32(e, big, e, _mm512_set1_epi32(1));
    const __m512 ef = _mm512_cvtepi32_ps(e);
    const __m512 t = _mm512_div_ps(_mm512_sub_ps(m, one), _mm512_add_ps(m, one));
    const __m512 t2 = _mm512_mul_ps(t, t);
    __m512 p = _mm512_set1_ps(2.0f / 9);
    p = _mm512_fmadd_ps(p, t2, _mm512_set1_ps(2.0f / 7));
    p = _mm512_fmadd_ps(p, t2, _mm512_set1_ps(2.0f / 5));
    p = _mm512_fmadd_ps(p, t2, _mm512_set1_ps(2.0f / 3));
    const __m512 logm = _mm512_fmadd_ps(_mm512_mul_ps(p, t2), t, _mm512_add_ps(t, t));
    const __m512 corr = _mm512_div_ps(_mm512_sub_ps(x, _mm512_sub_ps(u, one)), u);
    __m512 r = _mm512_fmadd_ps(
        ef, _mm512_set1_ps(0.693359375f),
        _mm512_add_ps(_mm512_fmadd_ps(ef, _mm512_set1_ps(-2.12194440e-4f), corr), logm));
    r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(u, one, _CMP_EQ_OQ), r, x);
    r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(__builtin_inff()), _CMP_EQ_OQ), r,
                             _mm512_set1_ps(__builtin_inff()));
    r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_EQ_OQ), r,
                             _mm512_set1_ps(-__builtin_inff()));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-1.0f), _CMP_NGE_UQ), r,
                                _mm512_set1_ps(__builtin_nanf("")));
}

inline __m512d exp_pd(__m512d x) {
    const __m512d hi = _mm512_set1_pd(709.782712893383973), lo = _mm512_set1_pd(-708.396418532264);
    const __mmask8 nan_mask = _mm512_cmp_pd_mask(x, x, _CMP_UNORD_Q);
    const __mmask8 over = _mm512_cmp_pd_mask(x, hi, _CMP_GT_OQ);
    const __mmask8 under = _mm512_cmp_pd_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_min_pd(_mm512_max_pd(x, lo), hi);
    const __m512d n = _mm512_roundscale_pd(_mm512_mul_pd(x, _mm512_set1_pd(1.4426950408889634)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_fnmadd_pd(n, _mm512_set1_pd(6.93147180369123816490e-01), x);
    r = _mm512_fnmadd_pd(n, _mm512_set1_pd(1.90821492927058770002e-10), r);
    static constexpr double inv_fact[] = {1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0,
                                          1.0 / 3628800.0,    1.0 / 362880.0,    1.0 / 40320.0,
                                          1.0 / 5040.0,       1.0 / 720.0,       1.0 / 120.0,
                                          1.0 / 24.0,         1.0 / 6.0,         0.5};
    __m512d p = _mm512_set1_pd(inv_fact[0]);
    for (int k = 1; k < 12; ++k) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(inv_fact[k]));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    const __m512i ni = _mm512_cvtepi32_epi64(_mm512_cvtpd_epi32(n));
    const __m512i half = _mm512_srai_epi64(ni, 1);
    const __m512i bias = _mm512_set1_epi64(1023);
    const __m512d s1 = _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(half, bias), 52));
    const __m512d s2 = _mm512_castsi512_pd(
        _mm512_slli_epi64(_mm512_add_epi64(_mm512_sub_epi64(ni, half), bias), 52));
    __m512d y = _mm512_mul_pd(_mm512_mul_pd(p, s1), s2);
    y = _mm512_mask_blend_pd(over, y, _mm512_set1_pd(__builtin_inf()));
    y = _mm512_maskz_mov_pd(static_cast<__mmask8>(~under), y);
    return _mm512_mask_blend_pd(nan_mask, y, _mm512_set1_pd(__builtin_nan("")));
}

template <class F>
inline void map_ps(float* v, std::int64_t n, F f) {
    std::int64_t j = 0;
    for (; j + 16 <= n; j += 16) _mm512_storeu_ps(v + j, f(_mm512_loadu_ps(v + j)));
    if (j < n) {  // the tail through a mask (masked-off lanes read as 0, never touched)
        const __mmask16 m = static_cast<__mmask16>((1u << (n - j)) - 1u);
        _mm512_mask_storeu_ps(v + j, m, f(_mm512_maskz_loadu_ps(m, v + j)));
    }
}

void exp_f32(float* v, std::int64_t n) { map_ps(v, n, exp_ps); }
void tanh_f32(float* v, std::int64_t n) { map_ps(v, n, tanh_rational_ps); }
void logistic_f32(float* v, std::int64_t n) { map_ps(v, n, logistic_ps); }
void log1p_f32(float* v, std::int64_t n) { map_ps(v, n, log1p_ps); }

void exp_f64(double* v, std::int64_t n) {
    std::int64_t j = 0;
    for (; j + 8 <= n; j += 8) _mm512_storeu_pd(v + j, exp_pd(_mm512_loadu_pd(v + j)));
    if (j < n) {
        const __mmask8 m = static_cast<__mmask8>((1u << (n - j)) - 1u);
        _mm512_mask_storeu_pd(v + j, m, exp_pd(_mm512_maskz_loadu_pd(m, v + j)));
    }
}

}  // namespace

MicroKernel<float> avx512_kernel_f32() {
    MicroKernel<float> k = avx2_kernel_f32();  // geometry, packing, transposes, dot products
    k.isa = Isa::avx512;
    k.fn = &micro_kernel_6<float, true>;
    k.fn_rows = &micro_kernel_6<float, false>;
    k.fn_stream = &micro_kernel_6<float, true, true>;
    k.lane_fn4 = &lane_kernel<4, float>;
    k.lane_fn5 = &lane_kernel<5, float>;
    k.lane_panel4 = &lane_panel<4, float>;
    k.lane_panel5 = &lane_panel<5, float>;
    k.lane_panel_mr = &lane_panel<6, float>;
    k.vexp = &exp_f32;
    k.vtanh = &tanh_f32;
    k.vlogistic = &logistic_f32;
    k.vlog1p = &log1p_f32;
    k.loops = avx512_loops_f32();
    return k;
}

MicroKernel<double> avx512_kernel_f64() {
    MicroKernel<double> k = avx2_kernel_f64();
    k.isa = Isa::avx512;
    k.fn = &micro_kernel_6<double, true>;
    k.fn_rows = &micro_kernel_6<double, false>;
    k.fn_stream = &micro_kernel_6<double, true, true>;
    k.lane_fn4 = &lane_kernel<4, double>;
    k.lane_fn5 = &lane_kernel<5, double>;
    k.lane_panel4 = &lane_panel<4, double>;
    k.lane_panel5 = &lane_panel<5, double>;
    k.lane_panel_mr = &lane_panel<6, double>;
    k.vexp = &exp_f64;
    k.loops = avx512_loops_f64();
    return k;
}

}  // namespace fastfool
