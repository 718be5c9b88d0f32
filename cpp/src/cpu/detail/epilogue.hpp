// Epilogues run on a row block's output while it is in L2: softmax / log-softmax, bias plus
// activation, and the softmax cross-entropy rows (loss, P, P - onehot). Cost: O(M C) per block
// plus one vector exp (and log1p) per 64 rows.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "detail/blocks.hpp"

namespace fastfool {
namespace detail {
namespace {  // internal linkage: each kernel file gets its own copy, inlined as it needs

// Max of r[0..n) and the sum of r[j] for j != skip, each in four interleaved partial results:
// a single chain of n dependent maxss/addss (3-cycle latency) was a third of the epilogue.
template <class T>
T row_max4(const T* r, std::int64_t n) {
    constexpr T ninf = -std::numeric_limits<T>::infinity();
    T m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
    std::int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        m0 = r[j] > m0 ? r[j] : m0;
        m1 = r[j + 1] > m1 ? r[j + 1] : m1;
        m2 = r[j + 2] > m2 ? r[j + 2] : m2;
        m3 = r[j + 3] > m3 ? r[j + 3] : m3;
    }
    for (; j < n; ++j) m0 = r[j] > m0 ? r[j] : m0;
    m0 = m1 > m0 ? m1 : m0;
    m2 = m3 > m2 ? m3 : m2;
    return m2 > m0 ? m2 : m0;
}
template <class T>
T row_sum4_except(const T* r, std::int64_t n, std::int64_t skip) {
    T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    std::int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        s0 += j == skip ? T(0) : r[j];
        s1 += j + 1 == skip ? T(0) : r[j + 1];
        s2 += j + 2 == skip ? T(0) : r[j + 2];
        s3 += j + 3 == skip ? T(0) : r[j + 3];
    }
    for (; j < n; ++j) s0 += j == skip ? T(0) : r[j];
    return (s0 + s1) + (s2 + s3);
}

// log-sum-exp of a row, stable for any finite scores (max subtracted first).
template <class T>
T row_lse(const T* s, std::int64_t n) {
    T m = -std::numeric_limits<T>::infinity();
    for (std::int64_t j = 0; j < n; ++j) m = s[j] > m ? s[j] : m;
    if (std::isnan(m) || std::isinf(m)) {  // NaN present, or +-inf scores: let IEEE decide
        T sum = 0;
        for (std::int64_t j = 0; j < n; ++j) sum += std::exp(s[j]);
        return std::log(sum);
    }
    T sum = 0;
    for (std::int64_t j = 0; j < n; ++j) sum += std::exp(s[j] - m);
    return m + std::log(sum);
}

// Softmax of a row in place with the ISA's vector exp; returns the log-sum-exp.
template <class T>
T softmax_inplace(T* s, std::int64_t n, const MicroKernel<T>& mk) {
    const T m = row_max4(s, n);
    if (std::isnan(m) || std::isinf(m)) {  // NaN or infinite scores: the scalar IEEE path
        const T lse = row_lse(s, n);
        for (std::int64_t j = 0; j < n; ++j) s[j] = std::exp(s[j] - lse);
        return lse;
    }
    for (std::int64_t j = 0; j < n; ++j) s[j] -= m;
    mk.vexp(s, n);
    const T sum = row_sum4_except(s, n, -1);
    const T inv = T(1) / sum;
    for (std::int64_t j = 0; j < n; ++j) s[j] *= inv;
    return m + std::log(sum);
}

// log_softmax in place: s - max - log(sum exp(s - max)), the exponentials taken with the ISA's
// vector exp on a copy in chunks (row_lse's scalar exp cost ~15 ns per class).
template <class T>
void log_softmax_inplace(T* s, std::int64_t n, const MicroKernel<T>& mk) {
    const T m = row_max4(s, n);
    if (std::isnan(m) || std::isinf(m)) {  // NaN or infinite scores: the scalar IEEE path
        const T lse = row_lse(s, n);
        for (std::int64_t j = 0; j < n; ++j) s[j] -= lse;
        return;
    }
    constexpr std::int64_t chunk = 256;
    T buf[chunk];
    T sum = 0;
    for (std::int64_t j0 = 0; j0 < n; j0 += chunk) {
        const std::int64_t k = std::min(chunk, n - j0);
        for (std::int64_t j = 0; j < k; ++j) s[j0 + j] -= m;
        std::memcpy(buf, s + j0, sizeof(T) * k);
        mk.vexp(buf, k);
        sum += row_sum4_except(buf, k, -1);
    }
    const T ls = std::log(sum);
    for (std::int64_t j = 0; j < n; ++j) s[j] -= ls;
}

// exp over a block's rows whose flag is set (their max already subtracted): one vector call per
// run of consecutive flagged rows when `runs` (the rows are contiguous, or the columns between
// C and ld are scratch), else one per row.
template <class T>
void exp_rows(T* blk, std::int64_t n, std::int64_t C, std::int64_t ld, const bool* fin, bool runs,
              const MicroKernel<T>& mk) {
    for (std::int64_t i = 0; i < n;) {
        if (!fin[i]) {
            ++i;
            continue;
        }
        std::int64_t e = i + 1;
        while (runs && e < n && fin[e]) ++e;
        mk.vexp(blk + i * ld, (e - 1 - i) * ld + C);
        i = e;
    }
}

// Softmax over a block of M rows (row stride ld >= C), in chunks of up to 64 rows that share
// one vector exp when the rows are contiguous (ld == C): row by row, narrow C spent most of its
// time in per-row overhead and the exp's padded tail (20k x 10 logits: 1.2 -> 0.38 ms on one
// thread). Bit-identical to softmax_inplace row by row (the vector exp is element-wise).
template <class T>
void softmax_block(T* s, std::int64_t M, std::int64_t C, std::int64_t ld,
                   const MicroKernel<T>& mk) {
    constexpr std::int64_t chunk = 64;
    bool fin[chunk];
    for (std::int64_t c0 = 0; c0 < M; c0 += chunk) {
        const std::int64_t n = std::min(chunk, M - c0);
        T* blk = s + c0 * ld;
        for (std::int64_t i = 0; i < n; ++i) {
            T* r = blk + i * ld;
            const T m = row_max4(r, C);
            fin[i] = !(std::isnan(m) || std::isinf(m));
            if (fin[i])
                for (std::int64_t j = 0; j < C; ++j) r[j] -= m;
        }
        exp_rows(blk, n, C, ld, fin, ld == C, mk);
        for (std::int64_t i = 0; i < n; ++i) {
            T* r = blk + i * ld;
            if (!fin[i]) {  // NaN or infinite scores: the scalar IEEE path, untouched so far
                softmax_inplace(r, C, mk);
                continue;
            }
            const T inv = T(1) / row_sum4_except(r, C, -1);
            for (std::int64_t j = 0; j < C; ++j) r[j] *= inv;
        }
    }
}

// The row epilogue over a block of M rows.
template <class T>
void epilogue_block(T* s, std::int64_t M, std::int64_t C, std::int64_t ld, Epilogue ep,
                    const MicroKernel<T>& mk) {
    if (ep == Epilogue::none || C == 0) return;
    if (ep == Epilogue::softmax) {
        softmax_block(s, M, C, ld, mk);
        return;
    }
    for (std::int64_t i = 0; i < M; ++i) log_softmax_inplace(s + i * ld, C, mk);
}

template <class T>
void apply_act(T* v, std::int64_t n, Act act, const MicroKernel<T>& mk) {
    switch (act) {
        case Act::identity:
            break;
        case Act::relu:
            for (std::int64_t j = 0; j < n; ++j) v[j] = v[j] > T(0) ? v[j] : T(0);
            break;
        case Act::tanh:
            mk.vtanh(v, n);
            break;
        case Act::logistic:
            mk.vlogistic(v, n);
            break;
    }
}

// Bias then activation over a row block; one vector pass over the whole block when its rows
// are contiguous (narrow layers would otherwise spend their time in per-row tails).
// With `scratch`, the padding columns between w and ld are ours and get activated too.
template <class T>
void bias_act_block(T* v, std::int64_t M, std::int64_t w, std::int64_t ld, const VecView<T>& b,
                    Act act, const MicroKernel<T>& mk, bool scratch = false) {
    for (std::int64_t i = 0; i < M; ++i) add_bias(v + i * ld, w, b);
    if (ld == w || scratch)
        apply_act(v, M * ld, act, mk);
    else
        for (std::int64_t i = 0; i < M; ++i) apply_act(v + i * ld, w, act, mk);
}

// Softmax cross-entropy epilogue over a block of M rows of logits s (row stride ld >= C;
// with `scratch` the columns between C and ld are the caller's and may be overwritten): adds
// the bias, writes each row's loss and optionally its P, and leaves P - onehot(y) in place.
// Rows are done in chunks of up to 64 that share one vector exp (over whole runs of rows when
// they are contiguous) and one vector log1p for their losses; a row with a NaN or infinite
// score takes the scalar IEEE path instead.
template <class T>
void ce_block(T* s, std::int64_t M, std::int64_t C, std::int64_t ld, bool scratch,
              const VecView<T>& b, const std::int64_t* y, T* loss, T* prob, std::int64_t ldp,
              const MicroKernel<T>& mk) {
    constexpr std::int64_t chunk = 64;
    T mx[chunk], sy[chunk], base[chunk], arg[chunk];
    bool fin[chunk];
    const bool runs = scratch || ld == C;  // consecutive rows form one contiguous run
    for (std::int64_t c0 = 0; c0 < M; c0 += chunk) {
        const std::int64_t n = std::min(chunk, M - c0);
        T* blk = s + c0 * ld;
        for (std::int64_t i = 0; i < n; ++i) {
            T* r = blk + i * ld;
            add_bias(r, C, b);
            const T m = row_max4(r, C);  // NaN scores are skipped here and propagate through exp
            mx[i] = m;
            sy[i] = r[y[c0 + i]];
            fin[i] = !(std::isnan(m) || std::isinf(m));
            if (fin[i])
                for (std::int64_t j = 0; j < C; ++j) r[j] -= m;
        }
        exp_rows(blk, n, C, ld, fin, runs, mk);
        for (std::int64_t i = 0; i < n; ++i) {
            T* r = blk + i * ld;
            const std::int64_t yi = y[c0 + i];
            if (!fin[i]) {  // NaN or infinite scores: let IEEE decide
                const T lse = row_lse(r, C);
                base[i] = lse - sy[i];
                arg[i] = T(0);
                for (std::int64_t j = 0; j < C; ++j) r[j] = std::exp(r[j] - lse);
            } else {
                // the other classes' terms, kept apart for an accurate small loss
                const T rest = row_sum4_except(r, C, yi);
                const T ey = r[yi], sum = rest + ey;
                // -log(ey / sum) = log1p(rest / ey): exact to rounding even when the loss is
                // ~1e-13; for ey < 1/2 (loss > log 2, y not the top class) the direct form
                // (m - sy) + log(sum), with log(sum) = log1p(sum - 1) exactly (sum >= 1), is
                // accurate and cannot overflow the way rest / ey does when ey underflows.
                const bool top = ey >= T(0.5);
                base[i] = top ? T(0) : mx[i] - sy[i];
                arg[i] = top ? rest / ey : sum - T(1);
                const T inv = T(1) / sum;
                for (std::int64_t j = 0; j < C; ++j) r[j] *= inv;
            }
            if (prob) std::memcpy(prob + (c0 + i) * ldp, r, sizeof(T) * C);
            r[yi] -= T(1);
        }
        if (loss) {
            mk.vlog1p(arg, n);
            for (std::int64_t i = 0; i < n; ++i) loss[c0 + i] = base[i] + arg[i];
        }
    }
}

}  // namespace
}  // namespace detail
}  // namespace fastfool
