// Row reductions: the L2 / L-inf norms of row differences, max |x|, numpy-compatible argmax,
// the verdict's top two scores and softmax probability at a class, and the all-finite check.
// One pass over the data, rows in tasks of ~64K elements.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "fastfool/dispatch.hpp"
#include "fastfool/kernels.hpp"
#include "fastfool/threads.hpp"

#include "detail/norms.hpp"

namespace fastfool {
namespace {
// ||a - b||_2 and ||a - b||_inf of one row. max |d| first (it is the L-inf norm); when it is in
// a range where squares can neither overflow nor lose anything that matters (always for float,
// summed in double), the squares are summed directly; otherwise scaled_norm's division by the
// max. Unit: both rows contiguous, so the loops vectorise.
// With AMax, also max |a| into *amax (NaN where a has one), in the same pass.
template <class T, bool Unit, bool AMax = false>
void row_diff_norms(const T* a, std::int64_t as, const T* b, std::int64_t bs, std::int64_t D, T* l2,
                    T* linf, T* amax = nullptr) {
    if (Unit) as = bs = 1;
    // four interleaved partial results (a single dependent chain per row was the cost)
    T m4[4] = {0, 0, 0, 0}, a4[4] = {0, 0, 0, 0};
    int nan = 0;
    std::int64_t j = 0;
    for (; j + 4 <= D; j += 4)
        for (int u = 0; u < 4; ++u) {
            m4[u] = std::max(m4[u], std::abs(a[(j + u) * as] - b[(j + u) * bs]));
            if (AMax) {
                const T v = std::abs(a[(j + u) * as]);
                nan |= v != v;
                a4[u] = v > a4[u] ? v : a4[u];
            }
        }
    for (; j < D; ++j) {
        m4[0] = std::max(m4[0], std::abs(a[j * as] - b[j * bs]));
        if (AMax) {
            const T v = std::abs(a[j * as]);
            nan |= v != v;
            a4[0] = v > a4[0] ? v : a4[0];
        }
    }
    if (AMax)
        *amax = nan ? std::numeric_limits<T>::quiet_NaN()
                    : std::max(std::max(a4[0], a4[1]), std::max(a4[2], a4[3]));
    const T mx = std::max(std::max(m4[0], m4[1]), std::max(m4[2], m4[3]));
    T n2;
    using Acc = double;  // float rows: squares of floats cannot overflow a double
    // (max skips NaN: a row whose only non-zero differences are NaN has mx = 0 and takes the
    // direct sum, where the NaN shows)
    const bool direct =
        std::isfinite(mx) && (sizeof(T) == 4 || mx == T(0) || (mx > T(1e-140) && mx < T(1e140)));
    if (!direct) {  // huge, tiny or infinite: the scaled form (rare; it finds the max again)
        n2 = scaled_norm<T>(D, [&](std::int64_t q) { return a[q * as] - b[q * bs]; });
    } else {
        Acc s4[4] = {0, 0, 0, 0};
        std::int64_t k = 0;
        for (; k + 4 <= D; k += 4)
            for (int u = 0; u < 4; ++u) {
                const Acc d = Acc(a[(k + u) * as] - b[(k + u) * bs]);
                s4[u] += d * d;
            }
        for (; k < D; ++k) {
            const Acc d = Acc(a[k * as] - b[k * bs]);
            s4[0] += d * d;
        }
        n2 = T(std::sqrt((s4[0] + s4[1]) + (s4[2] + s4[3])));
    }
    if (l2) *l2 = n2;
    if (linf) *linf = std::isnan(n2) ? n2 : mx;
}
}  // namespace

template <class T>
void diff_norms(const MatView<T>& A, const MatView<T>& B, T* l2, T* linf, int threads, T* amax) {
    const std::int64_t N = A.rows, D = A.cols;
    const std::int64_t rows_per_task =
        std::max<std::int64_t>(1, 65536 / std::max<std::int64_t>(D, 1));
    const std::int64_t ntasks = (N + rows_per_task - 1) / rows_per_task;
    const bool unit = A.cs == 1 && B.cs == 1;
    parallel_for(ntasks, threads, [&](std::int64_t task, int) {
        const std::int64_t i_end = std::min(N, (task + 1) * rows_per_task);
        for (std::int64_t i = task * rows_per_task; i < i_end; ++i) {
            const T* a = A.data + i * A.rs;
            const T* b = B.data + i * B.rs;
            T* o2 = l2 ? l2 + i : nullptr;
            T* oi = linf ? linf + i : nullptr;
            if (amax && unit)
                row_diff_norms<T, true, true>(a, 1, b, 1, D, o2, oi, amax + i);
            else if (amax)
                row_diff_norms<T, false, true>(a, A.cs, b, B.cs, D, o2, oi, amax + i);
            else if (unit)
                row_diff_norms<T, true>(a, 1, b, 1, D, o2, oi);
            else
                row_diff_norms<T, false>(a, A.cs, b, B.cs, D, o2, oi);
        }
    });
}

namespace {
// One step of a row's running argmax: column j with value v replaces the best so far when it is
// larger, or NaN while the best is not (numpy.argmax: the first NaN wins); selects, no branches
// (on random scores a branch mispredicts about every other row).
template <class T>
inline void argmax_step(T v, std::int64_t j, T& bv, std::int64_t& best) {
    const bool take = v > bv || (v != v && bv == bv);
    bv = take ? v : bv;
    best = take ? j : best;
}
}  // namespace

template <class T>
void argmax_rows(const MatView<T>& P, std::int64_t* idx, T* val, int threads) {
    const std::int64_t N = P.rows, C = P.cols;
    if (C < 1) return;
    const std::int64_t rows_per_task = std::max<std::int64_t>(64, 65536 / C);
    parallel_for((N + rows_per_task - 1) / rows_per_task, threads, [&](std::int64_t task, int) {
        const std::int64_t i0 = task * rows_per_task, i_end = std::min(N, i0 + rows_per_task);
        std::int64_t i = i0;
        for (; i + 4 <= i_end; i += 4) {  // four rows' chains interleaved
            const T* r[4] = {P.data + i * P.rs, P.data + (i + 1) * P.rs, P.data + (i + 2) * P.rs,
                             P.data + (i + 3) * P.rs};
            T bv[4] = {r[0][0], r[1][0], r[2][0], r[3][0]};
            std::int64_t best[4] = {0, 0, 0, 0};
            for (std::int64_t j = 1; j < C; ++j)
                for (int k = 0; k < 4; ++k) argmax_step(r[k][j * P.cs], j, bv[k], best[k]);
            for (int k = 0; k < 4; ++k) {
                idx[i + k] = best[k];
                if (val) val[i + k] = bv[k];
            }
        }
        for (; i < i_end; ++i) {
            const T* r = P.data + i * P.rs;
            T bv = r[0];
            std::int64_t best = 0;
            for (std::int64_t j = 1; j < C; ++j) argmax_step(r[j * P.cs], j, bv, best);
            idx[i] = best;
            if (val) val[i] = bv;
        }
    });
}

template <class T>
void max_abs_rows(const MatView<T>& X, T* out, int threads) {
    const std::int64_t N = X.rows, D = X.cols;
    const std::int64_t rows_per_task =
        std::max<std::int64_t>(1, 65536 / std::max<std::int64_t>(D, 1));
    parallel_for((N + rows_per_task - 1) / rows_per_task, threads, [&](std::int64_t task, int) {
        const std::int64_t i_end = std::min(N, (task + 1) * rows_per_task);
        for (std::int64_t i = task * rows_per_task; i < i_end; ++i) {
            const T* x = X.data + i * X.rs;
            // eight interleaved maxima (vectorised when the columns are contiguous); a NaN is
            // remembered apart, as max skips it
            T m8[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            bool nan = false;
            std::int64_t j = 0;
            if (X.cs == 1) {
                for (; j + 8 <= D; j += 8)
                    for (int u = 0; u < 8; ++u) {
                        const T v = std::abs(x[j + u]);
                        nan |= v != v;
                        m8[u] = v > m8[u] ? v : m8[u];
                    }
            }
            for (; j < D; ++j) {
                const T v = std::abs(x[j * X.cs]);
                nan |= v != v;
                m8[0] = v > m8[0] ? v : m8[0];
            }
            T m = m8[0];
            for (int u = 1; u < 8; ++u) m = m8[u] > m ? m8[u] : m;
            out[i] = nan ? std::numeric_limits<T>::quiet_NaN() : m;
        }
    });
}

namespace {
// top2_rows of row i, any rivals (dup) and NaN scores: the definition, with selects.
template <class T>
void top2_row(const MatView<T>& S, const std::int64_t* dup, std::int64_t i, std::int64_t* idx,
              double* top, double* second) {
    const std::int64_t C = S.cols;
    const T* r = S.data + i * S.rs;
    T bv = r[0];
    std::int64_t best = 0;
    for (std::int64_t j = 1; j < C; ++j) argmax_step(r[j * S.cs], j, bv, best);
    // the rivals' max, NaN-propagating (numpy's max): -inf when there is none
    double sv = -std::numeric_limits<double>::infinity();
    bool nan = false;
    const std::int64_t group = dup ? dup[best] : best;  // the winner's group holds the winner
    for (std::int64_t j = 0; j < C; ++j) {
        if ((dup ? dup[j] : j) == group) continue;
        const double v = double(r[j * S.cs]);
        nan |= v != v;
        sv = v > sv ? v : sv;
    }
    idx[i] = best;
    top[i] = double(bv);
    second[i] = nan ? std::numeric_limits<double>::quiet_NaN() : sv;
}

// top2_rows for K rows from i without dup: a running (largest, second largest) pair per row,
// m2 = max(m2, min(m1, v)), m1 = max(m1, v), the index by a select on v > m1 (the first
// maximum), K rows' chains interleaved: minsd / maxsd / cmov, no branch on the data (a branch
// on v > max mispredicts on random scores: 20k x 10 took 1.25 ms on one thread). Equal
// maxima: second = top, as with the winner masked. A row with a NaN is redone by top2_row.
template <int K, class T>
inline void top2_group(const MatView<T>& S, std::int64_t i, std::int64_t* idx, double* top,
                       double* second) {
    const std::int64_t C = S.cols;
    const T* r[K];
    double m1[K], m2[K];
    std::int64_t best[K];
    int nan[K];
    for (int k = 0; k < K; ++k) {
        r[k] = S.data + (i + k) * S.rs;
        m1[k] = double(r[k][0]);
        m2[k] = -std::numeric_limits<double>::infinity();
        best[k] = 0;
        nan[k] = m1[k] != m1[k];
    }
    for (std::int64_t j = 1; j < C; ++j)
        for (int k = 0; k < K; ++k) {
            const double v = double(r[k][j * S.cs]);
            nan[k] |= v != v;
            const double lo = v < m1[k] ? v : m1[k];
            m2[k] = lo > m2[k] ? lo : m2[k];
            best[k] = v > m1[k] ? j : best[k];
            m1[k] = v > m1[k] ? v : m1[k];
        }
    for (int k = 0; k < K; ++k) {
        if (nan[k]) {
            top2_row(S, nullptr, i + k, idx, top, second);
            continue;
        }
        idx[i + k] = best[k];
        top[i + k] = m1[k];
        second[i + k] = m2[k];
    }
}

// Row maxima (NaN where a row has one) of K rows from i, and their scores less the max into e
// (C per row; zeros where the max is not finite).
template <int K, class T>
inline void shifted_group(const MatView<T>& S, std::int64_t i, double* e, double* m) {
    const std::int64_t C = S.cols;
    const T* r[K];
    double mx[K];
    int nan[K];
    for (int k = 0; k < K; ++k) {
        r[k] = S.data + (i + k) * S.rs;
        mx[k] = double(r[k][0]);
        nan[k] = mx[k] != mx[k];
    }
    for (std::int64_t j = 1; j < C; ++j)
        for (int k = 0; k < K; ++k) {
            const double v = double(r[k][j * S.cs]);
            nan[k] |= v != v;
            mx[k] = v > mx[k] ? v : mx[k];
        }
    for (int k = 0; k < K; ++k) {
        m[k] = nan[k] ? std::numeric_limits<double>::quiet_NaN() : mx[k];
        const bool fin = std::isfinite(m[k]);
        for (std::int64_t j = 0; j < C; ++j)
            e[k * C + j] = fin ? double(r[k][j * S.cs]) - mx[k] : 0.0;
    }
}
}  // namespace

template <class T>
void top2_rows(const MatView<T>& S, const std::int64_t* dup, std::int64_t* idx, double* top,
               double* second, int threads) {
    const std::int64_t N = S.rows, C = S.cols;
    if (C < 1) return;
    const std::int64_t rows_per_task = std::max<std::int64_t>(64, 65536 / C);
    parallel_for((N + rows_per_task - 1) / rows_per_task, threads, [&](std::int64_t task, int) {
        const std::int64_t i_end = std::min(N, (task + 1) * rows_per_task);
        std::int64_t i = task * rows_per_task;
        if (dup) {  // rare: a model with duplicate classes
            for (; i < i_end; ++i) top2_row(S, dup, i, idx, top, second);
            return;
        }
        for (; i + 4 <= i_end; i += 4) top2_group<4>(S, i, idx, top, second);
        for (; i < i_end; ++i) top2_group<1>(S, i, idx, top, second);
    });
}

template <class T>
void dlr_rows(const MatView<T>& S, const std::int64_t* y, const std::int64_t* t, double* loss, T* V,
              std::int64_t ldv, int threads) {
    const std::int64_t N = S.rows, C = S.cols;
    if (N == 0 || C < 1) return;
    const std::int64_t rows_per_task = std::max<std::int64_t>(64, 65536 / C);
    parallel_for((N + rows_per_task - 1) / rows_per_task, threads, [&](std::int64_t task, int) {
        const std::int64_t i_end = std::min(N, (task + 1) * rows_per_task);
        for (std::int64_t i = task * rows_per_task; i < i_end; ++i) {
            const T* r = S.data + i * S.rs;
            auto z = [&](std::int64_t j) { return double(r[j * S.cs]); };
            // the first four ranks of a stable descending sort: a value enters before the first
            // strictly smaller one (ties keep the lower index first); NaN ranks last, in order
            std::int64_t id[4] = {-1, -1, -1, -1};
            double val[4] = {0, 0, 0, 0};
            int n = 0;
            for (std::int64_t j = 0; j < C; ++j) {
                const double v = z(j);
                if (std::isnan(v)) continue;
                int k = n < 4 ? n : 4;
                while (k > 0 && v > val[k - 1]) --k;
                if (k >= 4) continue;
                for (int m = (n < 4 ? n : 3); m > k; --m) {
                    val[m] = val[m - 1];
                    id[m] = id[m - 1];
                }
                val[k] = v;
                id[k] = j;
                if (n < 4) ++n;
            }
            for (std::int64_t j = 0; j < C && n < 4; ++j)
                if (std::isnan(z(j))) id[n++] = j;
            const auto rank = [&](std::int64_t k) {
                return id[std::clamp<std::int64_t>(k, 0, std::min<std::int64_t>(C, 4) - 1)];
            };
            const std::int64_t yi = y[i];
            std::int64_t u;
            double den, w3, w4;
            if (!t) {
                u = rank(0) == yi ? rank(1) : rank(0);
                den = z(rank(0)) - z(rank(2)) + 1e-12;
                w3 = 1.0;
                w4 = 0.0;
            } else {
                u = t[i];
                den = z(rank(0)) - 0.5 * (z(rank(2)) + z(rank(3))) + 1e-12;
                w3 = 0.5;
                w4 = 0.5;
            }
            const double num = z(yi) - z(u);
            loss[i] = -num / den;
            // the reference's updates in its order, on the (at most five) columns they touch
            std::int64_t col[5];
            double acc[5];
            int nc = 0;
            auto add = [&](std::int64_t c, double d) {
                for (int k = 0; k < nc; ++k)
                    if (col[k] == c) {
                        acc[k] += d;
                        return;
                    }
                col[nc] = c;
                acc[nc++] = 0.0 + d;
            };
            const double den2 = den * den;
            add(yi, -(1.0 / den));
            add(u, 1.0 / den);
            add(rank(0), num / den2);
            add(rank(2), -w3 * num / den2);
            if (t) add(rank(3), -w4 * num / den2);
            T* v = V + i * ldv;
            for (std::int64_t j = 0; j < C; ++j) v[j] = T(0);
            for (int k = 0; k < nc; ++k) v[col[k]] = static_cast<T>(acc[k]);
        }
    });
}

template <class T>
void softmax_at(const MatView<T>& S, const std::int64_t* idx, double* out, int threads) {
    const std::int64_t N = S.rows, C = S.cols;
    if (C < 1 || N == 0) return;
    const MicroKernel<double>& mk = micro_kernel<double>();
    // rows per task: one vector exp over all of a task's shifted scores (8K values, in L2)
    const std::int64_t rows_per_task = std::max<std::int64_t>(1, 8192 / C);
    parallel_for((N + rows_per_task - 1) / rows_per_task, threads, [&](std::int64_t task, int) {
        const std::int64_t i0 = task * rows_per_task, i_end = std::min(N, i0 + rows_per_task);
        const std::int64_t n = i_end - i0;
        std::vector<double> e(static_cast<std::size_t>(n * C)), m(static_cast<std::size_t>(n));
        std::int64_t i = 0;
        for (; i + 4 <= n; i += 4) shifted_group<4>(S, i0 + i, e.data() + i * C, m.data() + i);
        for (; i < n; ++i) shifted_group<1>(S, i0 + i, e.data() + i * C, m.data() + i);
        mk.vexp(e.data(), n * C);
        // the sums, four rows' chains interleaved (each row's own order: j = 0 .. C - 1)
        for (i = 0; i < n; i += 4) {
            const int K = int(std::min<std::int64_t>(4, n - i));
            double sum[4] = {0, 0, 0, 0};
            for (std::int64_t j = 0; j < C; ++j)
                for (int k = 0; k < K; ++k) sum[k] += e[(i + k) * C + j];
            for (int k = 0; k < K; ++k)
                out[i0 + i + k] = std::isfinite(m[i + k])
                                      ? e[(i + k) * C + idx[i0 + i + k]] / sum[k]
                                      : std::numeric_limits<double>::quiet_NaN();
        }
    });
}

namespace {
template <class T>
struct Bits;
template <>
struct Bits<float> {
    using U = std::uint32_t;
    static constexpr U exp = 0x7f800000u;
};
template <>
struct Bits<double> {
    using U = std::uint64_t;
    static constexpr U exp = 0x7ff0000000000000ull;
};
}  // namespace

template <class T>
bool all_finite(const MatView<T>& X, int threads) {
    using U = typename Bits<T>::U;
    const std::int64_t N = X.rows, D = X.cols;
    std::atomic<std::int64_t> bad{0};
    const std::int64_t rows_per_task =
        std::max<std::int64_t>(1, 262144 / std::max<std::int64_t>(D, 1));
    const std::int64_t ntasks = (N + rows_per_task - 1) / rows_per_task;
    parallel_for(ntasks, threads, [&](std::int64_t task, int) {
        std::int64_t count = 0;
        const std::int64_t i_end = std::min(N, (task + 1) * rows_per_task);
        for (std::int64_t i = task * rows_per_task; i < i_end; ++i) {
            const T* x = X.data + i * X.rs;
            for (std::int64_t j = 0; j < D; ++j) {
                U u;
                std::memcpy(&u, x + j * X.cs, sizeof(U));
                count += (u & Bits<T>::exp) == Bits<T>::exp;  // all-ones exponent: inf or NaN
            }
        }
        bad += count;
    });
    return bad.load() == 0;
}

#define FASTFOOL_INSTANTIATE(T)                                                                \
    template void diff_norms<T>(const MatView<T>&, const MatView<T>&, T*, T*, int, T*);        \
    template void argmax_rows<T>(const MatView<T>&, std::int64_t*, T*, int);                   \
    template void max_abs_rows<T>(const MatView<T>&, T*, int);                                 \
    template void top2_rows<T>(const MatView<T>&, const std::int64_t*, std::int64_t*, double*, \
                               double*, int);                                                  \
    template void softmax_at<T>(const MatView<T>&, const std::int64_t*, double*, int);         \
    template void dlr_rows<T>(const MatView<T>&, const std::int64_t*, const std::int64_t*,     \
                              double*, T*, std::int64_t, int);                                 \
    template bool all_finite<T>(const MatView<T>&, int);
FASTFOOL_INSTANTIATE(float)
FASTFOOL_INSTANTIATE(double)
#undef FASTFOOL_INSTANTIATE

}  // namespace fastfool
