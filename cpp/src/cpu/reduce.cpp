// Row reductions: the L2 / L-inf norms of row differences, numpy-compatible argmax, and the
// all-finite check. One pass over the data, rows in tasks of ~64K elements.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "fastfool/kernels.hpp"
#include "fastfool/threads.hpp"

#include "detail/norms.hpp"

namespace fastfool {
namespace {
// ||a - b||_2 and ||a - b||_inf of one row. max |d| first (it is the L-inf norm); when it is in
// a range where squares can neither overflow nor lose anything that matters (always for float,
// summed in double), the squares are summed directly; otherwise scaled_norm's division by the
// max. Unit: both rows contiguous, so the loops vectorise.
template <class T, bool Unit>
void row_diff_norms(const T* a, std::int64_t as, const T* b, std::int64_t bs, std::int64_t D, T* l2,
                    T* linf) {
    if (Unit) as = bs = 1;
    // four interleaved partial results (a single dependent chain per row was the cost)
    T m4[4] = {0, 0, 0, 0};
    std::int64_t j = 0;
    for (; j + 4 <= D; j += 4)
        for (int u = 0; u < 4; ++u)
            m4[u] = std::max(m4[u], std::abs(a[(j + u) * as] - b[(j + u) * bs]));
    for (; j < D; ++j) m4[0] = std::max(m4[0], std::abs(a[j * as] - b[j * bs]));
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
void diff_norms(const MatView<T>& A, const MatView<T>& B, T* l2, T* linf, int threads) {
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
            if (unit)
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

#define FASTFOOL_INSTANTIATE(T)                                                     \
    template void diff_norms<T>(const MatView<T>&, const MatView<T>&, T*, T*, int); \
    template void argmax_rows<T>(const MatView<T>&, std::int64_t*, T*, int);        \
    template bool all_finite<T>(const MatView<T>&, int);
FASTFOOL_INSTANTIATE(float)
FASTFOOL_INSTANTIATE(double)
#undef FASTFOOL_INSTANTIATE

}  // namespace fastfool
