// AVX2/FMA vector maths (exp, tanh, logistic, log1p of floats; exp of doubles) and narrow products
// (dot_rows), compiled with -mavx2 -mfma; slots of the AVX2 table (avx2.cpp). Cost: a few dozen
// instructions per 8 values; dot_rows 2 M C D FLOPs.
#include <immintrin.h>

#include <algorithm>

#include "detail/avx2.hpp"

namespace fastfool {
namespace avx2 {

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
    const __m256 s1 =
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_add_epi32(_mm256_sub_epi32(ni, half), _mm256_set1_epi32(127)), 23));
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

// e^x for 4 doubles, the same scheme in double: n = round(x / ln2), r = x - n ln2 with ln2
// split so that n * ln2_hi is exact (|n| <= 1075: ln2_hi has 32 trailing zero bits), |r| <=
// 0.3466; e^r by its Taylor series to r^13 (the next term is below 5e-18 relative) in FMA
// Horner; then 2^n in two normal factors. Results within 2 ulps of libm's (tests/
// test_numerics.py); inputs below -708.39 (where e^x is no longer a normal double) give 0,
// above 709.78 +inf, NaN stays NaN.
inline __m256d exp_pd(__m256d x) {
    const __m256d hi = _mm256_set1_pd(709.782712893383973), lo = _mm256_set1_pd(-708.396418532264);
    const __m256d nan_mask = _mm256_cmp_pd(x, x, _CMP_UNORD_Q);
    const __m256d over = _mm256_cmp_pd(x, hi, _CMP_GT_OQ);
    const __m256d under = _mm256_cmp_pd(x, lo, _CMP_LT_OQ);
    x = _mm256_min_pd(_mm256_max_pd(x, lo), hi);
    const __m256d n = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(1.4426950408889634)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = _mm256_fnmadd_pd(n, _mm256_set1_pd(6.93147180369123816490e-01), x);
    r = _mm256_fnmadd_pd(n, _mm256_set1_pd(1.90821492927058770002e-10), r);
    // 1/k! for k = 13 .. 2, then 1, 1
    static constexpr double inv_fact[] = {1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0,
                                          1.0 / 3628800.0,    1.0 / 362880.0,    1.0 / 40320.0,
                                          1.0 / 5040.0,       1.0 / 720.0,       1.0 / 120.0,
                                          1.0 / 24.0,         1.0 / 6.0,         0.5};
    __m256d p = _mm256_set1_pd(inv_fact[0]);
    for (int k = 1; k < 12; ++k) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(inv_fact[k]));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
    // 2^n with n in [-1022, 1024]: 2^(n/2) * 2^(n - n/2), both normal
    const __m256i ni = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n));
    const __m256i half = _mm256_srai_epi32(ni, 1);  // n >> 1 (the high halves are sign words)
    const __m256i bias = _mm256_set1_epi64x(1023);
    const __m256d s1 = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(half, bias), 52));
    const __m256d s2 = _mm256_castsi256_pd(
        _mm256_slli_epi64(_mm256_add_epi64(_mm256_sub_epi64(ni, half), bias), 52));
    __m256d y = _mm256_mul_pd(_mm256_mul_pd(p, s1), s2);
    y = _mm256_blendv_pd(y, _mm256_set1_pd(__builtin_inf()), over);
    y = _mm256_andnot_pd(under, y);
    return _mm256_blendv_pd(y, _mm256_set1_pd(__builtin_nan("")), nan_mask);
}

void exp_f64(double* v, std::int64_t n) {
    std::int64_t j = 0;
    for (; j + 4 <= n; j += 4) _mm256_storeu_pd(v + j, exp_pd(_mm256_loadu_pd(v + j)));
    if (j < n) {  // tail through a padded register
        alignas(32) double buf[4] = {0, 0, 0, 0};
        for (std::int64_t t = j; t < n; ++t) buf[t - j] = v[t];
        _mm256_store_pd(buf, exp_pd(_mm256_load_pd(buf)));
        for (std::int64_t t = j; t < n; ++t) v[t] = buf[t - j];
    }
}

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
    const __m256 ax =
        _mm256_min_ps(_mm256_set1_ps(9.05f), _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x));
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
    const __m256 r = _mm256_min_ps(
        _mm256_set1_ps(1.0f), _mm256_blendv_ps(u, _mm256_sub_ps(_mm256_set1_ps(1.0f), u), far));
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
    __m256 m = _mm256_castsi256_ps(_mm256_or_si256(
        _mm256_and_si256(ui, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f800000)));
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
    __m256 r = _mm256_fmadd_ps(
        ef, _mm256_set1_ps(0.693359375f),
        _mm256_add_ps(_mm256_fmadd_ps(ef, _mm256_set1_ps(-2.12194440e-4f), corr), logm));
    const __m256 tiny = _mm256_cmp_ps(u, one, _CMP_EQ_OQ);  // |x| below half an ulp of 1
    r = _mm256_blendv_ps(r, x, tiny);
    r = _mm256_blendv_ps(r, _mm256_set1_ps(__builtin_inff()),
                         _mm256_cmp_ps(x, _mm256_set1_ps(__builtin_inff()), _CMP_EQ_OQ));
    r = _mm256_blendv_ps(r, _mm256_set1_ps(-__builtin_inff()),
                         _mm256_cmp_ps(u, _mm256_setzero_ps(), _CMP_EQ_OQ));
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
    using Tile = void (*)(const float*, std::int64_t, const float*, std::int64_t, std::int64_t,
                          __m256i, float*, std::int64_t);
    static constexpr Tile tiles[] = {dot_tile<R, 1>, dot_tile<R, 2>, dot_tile<R, 3>,
                                     dot_tile<R, 4>, dot_tile<R, 5>, dot_tile<R, 6>};
    tiles[std::min(G, 6) - 1](x, ldx, w, ldw, D, m, s, lds);  // G >= 1: outputs of the group
}

// Rows in pairs, classes in balanced groups of at most 6 (2 x 6 = 12 accumulators). Whole rows
// at a time: blocking D (to keep a block of W in L1) measured slower for D = 784, C = 10.
void dot_rows_f32(std::int64_t M, std::int64_t C, std::int64_t D, const float* X, std::int64_t ldx,
                  const float* W, std::int64_t ldw, float* S, std::int64_t lds) {
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

}  // namespace avx2
}  // namespace fastfool
