// Kernel drivers: threads take blocks of mc rows; inside a block every product goes through
// gemm_rows and the epilogues (bias, activation, softmax, P - onehot, inverse activation) run on
// the block's output while it is in L2. Large temporaries are bounded by mc x width per thread.
#include "fastfool/kernels.hpp"

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>

#include "fastfool/gemm.hpp"

// Element-wise loops of the lane path compiled twice, for the baseline and for AVX2 (no FMA:
// the same roundings as the baseline), the loader picking one by the CPU (an ifunc). GCC on
// x86-64 glibc Linux only (tested with GCC 12; other compilers and C libraries get the baseline
// loop), not under ASan.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__) && \
    defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
#define FASTFOOL_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FASTFOOL_CLONES
#endif

namespace fastfool {
namespace {

template <class T>
MatView<T> rows_of(const MatView<T>& A, std::int64_t r0, std::int64_t r1) {
    return {A.data + r0 * A.rs, r1 - r0, A.cols, A.rs, A.cs};
}

template <class T>
MatView<T> dense_view(const T* p, std::int64_t rows, std::int64_t cols, std::int64_t ld) {
    return {p, rows, cols, ld, 1};
}

// Runs body(r0, r1, workspace) over blocks of mc rows on up to `threads` threads. Workspaces
// are made before the parallel region so that allocation failures surface as exceptions.
// Returns the workspaces so callers can reduce per-thread counters.
// Blocks have mc rows, fewer (a multiple of mr) when N is small, so that every thread gets at
// least two blocks: a 96-row batch on 2 threads would otherwise leave one core idle.
template <class WS, class Make, class Body>
std::vector<WS> for_row_blocks(std::int64_t N, std::int64_t mc, std::int64_t mr, int threads,
                               Make make, Body body) {
    if (threads > 1) {
        const std::int64_t want = (N + 2 * threads - 1) / (2 * threads);
        mc = std::max(mr, std::min(mc, (want + mr - 1) / mr * mr));
    }
    const std::int64_t nblocks = (N + mc - 1) / mc;
    if (nblocks <= 0) return {};
    const int nt = static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(threads, nblocks)));
    std::vector<WS> ws;
    ws.reserve(nt);
    for (int t = 0; t < nt; ++t) ws.emplace_back(make());
    parallel_for(nblocks, nt, [&](std::int64_t blk, int worker) {
        const std::int64_t r0 = blk * mc, r1 = std::min(N, r0 + mc);
        body(r0, r1, ws[worker]);
    });
    return ws;
}

template <class T>
void add_bias(T* row, std::int64_t n, const VecView<T>& b) {
    if (!b.data) return;
    if (b.stride == 1)
        for (std::int64_t j = 0; j < n; ++j) row[j] += b.data[j];
    else
        for (std::int64_t j = 0; j < n; ++j) row[j] += b.data[j * b.stride];
}

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
void softmax_block(T* s, std::int64_t M, std::int64_t C, std::int64_t ld, const MicroKernel<T>& mk) {
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
        case Act::identity: break;
        case Act::relu:
            for (std::int64_t j = 0; j < n; ++j) v[j] = v[j] > T(0) ? v[j] : T(0);
            break;
        case Act::tanh: mk.vtanh(v, n); break;
        case Act::logistic: mk.vlogistic(v, n); break;
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

// delta *= act'(pre-activation), written in terms of the activation's output h.
template <class T>
FASTFOOL_CLONES void times_act_derivative(T* delta, const T* h, std::int64_t n, Act act) {
    switch (act) {
        case Act::identity: break;
        case Act::relu:
            for (std::int64_t j = 0; j < n; ++j) delta[j] = h[j] > T(0) ? delta[j] : T(0);
            break;
        case Act::tanh:
            for (std::int64_t j = 0; j < n; ++j) delta[j] *= (T(1) - h[j]) * (T(1) + h[j]);
            break;
        case Act::logistic:
            for (std::int64_t j = 0; j < n; ++j) delta[j] *= h[j] * (T(1) - h[j]);
            break;
    }
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

// Whether narrow MLPs take the batch-in-lanes path (LaneNet) and cross-entropy rows go through
// lane panels (ce_rows). Test hook: off compares with the row path / ce_block, which must give
// the same bits.
std::atomic<bool> g_lane_steps{true};

// ce_block on a lane panel: the logits z (C x nr, row stride nr) of lanes < m, replaced by
// P - onehot(y) (lanes >= m: 0), with each lane's loss and probabilities. Every lane goes
// through ce_block's operations for its row in the same order (four interleaved partial maxima
// and sums, the same vector exp and log1p, the same top-class split), so the bits are the
// same, with the lanes as the vector dimension instead of one row at a time (C = 10: per-row
// bookkeeping was most of ce_block's time). A panel row is one GCC vector of NR lanes (the
// arrays-of-lanes form kept its running maxima and sums in memory: store-forwarding chains).
// Returns false, writing nothing, when a logit of lanes < m is NaN or infinite (or nr is not
// one or two 32-byte vectors): the caller then uses ce_block (its scalar IEEE path).
template <class T, int NR>
FASTFOOL_CLONES bool ce_lanes_n(T* z, std::int64_t C, std::int64_t m, const std::int64_t* y,
                                T* loss, T* prob, std::int64_t ldp, const MicroKernel<T>& mk) {
    // W lanes (32 bytes) at a time: the running maxima and sums stay in registers
    constexpr int W = 32 / sizeof(T), G = NR / W;
    static_assert(NR % W == 0);
    using Int = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
    typedef T V __attribute__((vector_size(32)));
    typedef Int IV __attribute__((vector_size(32)));
    static_assert(sizeof(Int) == sizeof(T));
#define FF_LD(v, c, g) std::memcpy(&(v), z + (c) * NR + (g) * W, 32)
#define FF_ST(c, g, v) std::memcpy(z + (c) * NR + (g) * W, &(v), 32)
    if (C == 0 || C > std::numeric_limits<Int>::max()) return false;
    for (int g = 0; g < G; ++g) {  // v * 0 is 0 for finite v, NaN for NaN or inf
        V nf = V{}, r;
        for (std::int64_t c = 0; c < C; ++c) {
            FF_LD(r, c, g);
            nf += r * T(0);
        }
        for (int j = 0; j < W && g * W + j < m; ++j)
            if (nf[j] != T(0)) return false;
    }
    const T ninf = -std::numeric_limits<T>::infinity();
    const V zero = V{};
    IV yl[G];
    V base[G], arg[G];
    for (int g = 0; g < G; ++g) {
        for (int j = 0; j < W; ++j) {
            const int l = g * W + j;
            yl[g][j] = l < m ? Int(y[l]) : Int(0);
        }
        V m0 = zero + ninf, m1 = m0, m2 = m0, m3 = m0, r0, r1, r2, r3;
        std::int64_t c = 0;
        for (; c + 4 <= C; c += 4) {
            FF_LD(r0, c, g);
            FF_LD(r1, c + 1, g);
            FF_LD(r2, c + 2, g);
            FF_LD(r3, c + 3, g);
            m0 = r0 > m0 ? r0 : m0;
            m1 = r1 > m1 ? r1 : m1;
            m2 = r2 > m2 ? r2 : m2;
            m3 = r3 > m3 ? r3 : m3;
        }
        for (; c < C; ++c) {
            FF_LD(r0, c, g);
            m0 = r0 > m0 ? r0 : m0;
        }
        m0 = m1 > m0 ? m1 : m0;
        m2 = m3 > m2 ? m3 : m2;
        m0 = m2 > m0 ? m2 : m0;  // the row's max
        V sy;  // the label's logit, before the shift
        for (int j = 0; j < W; ++j) sy[j] = z[std::int64_t(yl[g][j]) * NR + g * W + j];
        base[g] = m0 - sy;
        for (c = 0; c < C; ++c) {
            FF_LD(r0, c, g);
            r0 -= m0;
            FF_ST(c, g, r0);
        }
    }
    mk.vexp(z, C * NR);
    for (int g = 0; g < G; ++g) {
        const IV y0 = yl[g];
        V s0 = zero, s1 = zero, s2 = zero, s3 = zero, r0, r1, r2, r3;
        std::int64_t c = 0;
        for (; c + 4 <= C; c += 4) {
            const Int k = Int(c);
            FF_LD(r0, c, g);
            FF_LD(r1, c + 1, g);
            FF_LD(r2, c + 2, g);
            FF_LD(r3, c + 3, g);
            s0 += y0 == k ? zero : r0;
            s1 += y0 == k + 1 ? zero : r1;
            s2 += y0 == k + 2 ? zero : r2;
            s3 += y0 == k + 3 ? zero : r3;
        }
        for (; c < C; ++c) {
            FF_LD(r0, c, g);
            s0 += y0 == Int(c) ? zero : r0;
        }
        V ey;
        for (int j = 0; j < W; ++j) ey[j] = z[std::int64_t(y0[j]) * NR + g * W + j];
        const V rest = (s0 + s1) + (s2 + s3), sum = rest + ey;
        const IV top = ey >= T(0.5);
        base[g] = top ? zero : base[g];
        arg[g] = top ? rest / ey : sum - T(1);
        const V inv = T(1) / sum;
        IV lane;
        for (int j = 0; j < W; ++j) lane[j] = Int(g * W + j);
        const IV live = lane < Int(m);
        for (c = 0; c < C; ++c) {
            FF_LD(r0, c, g);
            r0 = live ? r0 * inv : zero;
            FF_ST(c, g, r0);
        }
    }
#undef FF_LD
#undef FF_ST
    if (prob)
        for (std::int64_t j = 0; j < m; ++j)
            for (std::int64_t c = 0; c < C; ++c) prob[j * ldp + c] = z[c * NR + j];
    for (std::int64_t j = 0; j < m; ++j) z[std::int64_t(y[j]) * NR + j] -= T(1);
    if (loss) {
        T a[NR], b[NR];
        std::memcpy(a, arg, sizeof a);
        std::memcpy(b, base, sizeof b);
        mk.vlog1p(a, m);
        for (std::int64_t j = 0; j < m; ++j) loss[j] = b[j] + a[j];
    }
    return true;
}
template <class T>
bool ce_lanes(T* z, std::int64_t C, std::int64_t nr, std::int64_t m, const std::int64_t* y,
              T* loss, T* prob, std::int64_t ldp, const MicroKernel<T>& mk) {
    constexpr int W = 32 / sizeof(T);  // whole 32-byte vectors of lanes
    switch (nr) {
        case W: return ce_lanes_n<T, W>(z, C, m, y, loss, prob, ldp, mk);
        case 2 * W: return ce_lanes_n<T, 2 * W>(z, C, m, y, loss, prob, ldp, mk);
        default: return false;
    }
}

// Panel row o (nr lanes) of h += b[o], for o < w (nr at run time: a compile-time 16 gets the
// inner loop unrolled and the outer one vectorised with strided stores).
template <class T>
FASTFOOL_CLONES void add_bias_lanes(T* h, std::int64_t w, std::int64_t nr, const VecView<T>& b) {
    const T* bd = b.data;
    const std::int64_t bs = b.stride;
    for (std::int64_t o = 0; o < w; ++o) {
        const T bo = bd[o * bs];
        T* r = h + o * nr;
        for (std::int64_t j = 0; j < nr; ++j) r[j] += bo;
    }
}

// Rows q0 .. q0 + m of X (m <= nr) into the panel p (D x nr), lanes >= m zero.
template <class T>
void to_lanes(const MatView<T>& X, std::int64_t q0, std::int64_t m, std::int64_t nr, T* p,
              const MicroKernel<T>& mk) {
    const std::int64_t D = X.cols;
    if (m < nr) std::fill(p, p + D * nr, T(0));
    if (X.cs == 1 && mk.transpose) {
        mk.transpose(X.data + q0 * X.rs, X.rs, p, nr, m, D);
    } else if (X.cs == 1) {
        for (std::int64_t j = 0; j < m; ++j) {
            const T* r = X.data + (q0 + j) * X.rs;
            for (std::int64_t k = 0; k < D; ++k) p[k * nr + j] = r[k];
        }
    } else {
        for (std::int64_t j = 0; j < m; ++j)
            for (std::int64_t k = 0; k < D; ++k) p[k * nr + j] = X(q0 + j, k);
    }
}

// Lanes < m of the panel p (n x nr) into rows o, o + ldo, ... (n values each).
template <class T>
void from_lanes(const T* p, std::int64_t n, std::int64_t m, std::int64_t nr, T* o,
                std::int64_t ldo, const MicroKernel<T>& mk) {
    if (mk.transpose) {
        mk.transpose(p, nr, o, ldo, n, m);
        return;
    }
    for (std::int64_t j = 0; j < m; ++j)
        for (std::int64_t k = 0; k < n; ++k) o[j * ldo + k] = p[k * nr + j];
}

// ce_block's results (bits included) through lane panels: nr rows at a time transposed, the
// bias added per class, ce_lanes across the lanes (~40x less per-row bookkeeping at C = 10),
// and back; a panel with NaN or infinite scores (or a kernel without lanes for ce_lanes) goes
// through ce_block itself.
template <class T>
void ce_rows(T* s, std::int64_t M, std::int64_t C, std::int64_t ld, bool scratch,
             const VecView<T>& b, const std::int64_t* y, T* loss, T* prob, std::int64_t ldp,
             const MicroKernel<T>& mk) {
    const std::int64_t nr = mk.nr;
    if (C == 0 || C > 64 || nr > 16 || !g_lane_steps.load(std::memory_order_relaxed))
        return ce_block(s, M, C, ld, scratch, b, y, loss, prob, ldp, mk);
    T panel[64 * 16];
    const MatView<T> S{s, M, C, ld, 1};
    for (std::int64_t q = 0; q < M; q += nr) {
        const std::int64_t m = std::min(nr, M - q);
        to_lanes(S, q, m, nr, panel, mk);
        if (b.data) add_bias_lanes(panel, C, nr, b);
        if (ce_lanes(panel, C, nr, m, y + q, loss ? loss + q : nullptr,
                     prob ? prob + q * ldp : nullptr, ldp, mk))
            from_lanes(panel, C, m, nr, s + q * ld, ld, mk);
        else
            ce_block(s + q * ld, m, C, ld, scratch, b, y + q, loss ? loss + q : nullptr,
                     prob ? prob + q * ldp : nullptr, ldp, mk);
    }
}

// The narrow-product path (the ISA's dot_rows) for C outputs over D inputs: outputs narrow
// enough that a register tile would be mostly padding, inputs deep enough that the horizontal
// sums closing each dot product are a small part. (In cache, 3000 x 784 x 10 float: 71
// GFLOP/s useful against 60 on the tile; D = 64: even.) The choice depends on the shapes only,
// never on the layout, so results do not change with the memory layout: W with strided
// columns is copied once (Narrow), row blocks of such an X into scratch (rows_for_dot).
template <class T>
struct Narrow {
    bool on = false;
    Buffer<T> copy;
    const T* w = nullptr;
    std::int64_t C = 0, ldw = 0;
    // W: C x D (rows are the outputs).
    Narrow(const MatView<T>& W, std::int64_t D, const MicroKernel<T>& mk) : C(W.rows) {
        on = mk.dot_rows && C <= mk.dot_max_c && D >= 128;
        if (!on) return;
        w = W.data;
        ldw = W.rs;
        if (W.cs != 1) {
            copy.resize(std::size_t(W.rows * D));
            for (std::int64_t c = 0; c < W.rows; ++c)
                for (std::int64_t p = 0; p < D; ++p) copy.data()[c * D + p] = W(c, p);
            w = copy.data();
            ldw = D;
        }
    }
    // S rows r0..r1 of X times W^T; X rows with strided columns go through `scratch` (mc x D).
    void run(const MatView<T>& X, std::int64_t r0, std::int64_t r1, T* scratch, T* S,
             std::int64_t lds, const MicroKernel<T>& mk) const {
        const std::int64_t D = X.cols, M = r1 - r0;
        const T* x = X.data + r0 * X.rs;
        std::int64_t ldx = X.rs;
        if (X.cs != 1) {
            for (std::int64_t i = 0; i < M; ++i)
                for (std::int64_t p = 0; p < D; ++p) scratch[i * D + p] = X(r0 + i, p);
            x = scratch;
            ldx = D;
        }
        mk.dot_rows(M, C, D, x, ldx, w, ldw, S, lds);
    }
    // Per-thread scratch run() needs for X.
    std::size_t scratch_size(const MatView<T>& X, const MicroKernel<T>& mk) const {
        return on && X.cs != 1 ? std::size_t(mk.mc) * X.cols : 0;
    }
};

// Whether a kernel writes its N x D gradient with streaming stores (where gemm_rows can: see
// its `stream`): only outputs far larger than the caches, which the stores would otherwise
// read in first (200k x 784 x 10 float CE gradient into a 64-byte aligned G: 71-76 -> 63-66 ms
// on 2 threads, 130 -> 117 ms on 1). A smaller output is likely read again soon: from cache.
inline bool streams(std::int64_t N, std::int64_t D, std::size_t elem) {
    return double(N) * double(D) * double(elem) >= double(32 << 20);
}

template <class T>
struct BlockWS {
    GemmScratch<T> g;
    Buffer<T> a, b, c;
    std::int64_t counter = 0;
    BlockWS(const MicroKernel<T>& mk, std::size_t na, std::size_t nb, std::size_t nc = 0)
        : g(mk), a(na), b(nb), c(nc) {}
};

}  // namespace

template <class T>
void scores(const MatView<T>& X, const MatView<T>& W, const VecView<T>& b, Epilogue ep, T* S,
            std::int64_t lds, int threads) {
    const MicroKernel<T> mk = micro_kernel<T>();
    const std::int64_t C = W.rows;
    if (X.rows == 0 || C == 0) return;
    const Narrow<T> narrow(W, X.cols, mk);
    const PackedB<T> pb = narrow.on ? PackedB<T>{} : pack_b(W.transposed(), mk, threads);
    const std::size_t nx = narrow.scratch_size(X, mk);
    for_row_blocks<BlockWS<T>>(
        X.rows, mk.mc, mk.mr, threads, [&] { return BlockWS<T>(mk, 0, 0, nx); },
        [&](std::int64_t r0, std::int64_t r1, BlockWS<T>& ws) {
            T* out = S + r0 * lds;
            if (narrow.on)
                narrow.run(X, r0, r1, ws.c.data(), out, lds, mk);
            else
                gemm_rows(rows_of(X, r0, r1), pb, out, lds, false, mk, ws.g);
            for (std::int64_t i = 0; i < r1 - r0; ++i) add_bias(out + i * lds, C, b);
            epilogue_block(out, r1 - r0, C, lds, ep, mk);
        });
}

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
T sign_of(T v) { return T((v > T(0)) - (v < T(0))); }

// Rounds delta = o - x0 to multiples of q without leaving the eps-ball (see fused_update).
template <class T>
void quantize_row(T* o, const T* x0, std::int64_t x0s, std::int64_t D, bool l2, T eps, T q) {
    if (!l2) {
        for (std::int64_t j = 0; j < D; ++j) {
            const T c = x0[j * x0s];
            T d = std::nearbyint((o[j] - c) / q) * q;
            if (std::abs(d) > eps) d -= sign_of(d) * q;
            o[j] = c + d;
        }
        return;
    }
    T sum = 0;
    for (std::int64_t j = 0; j < D; ++j) {
        const T c = x0[j * x0s];
        const T d = std::nearbyint((o[j] - c) / q) * q;
        sum += d * d;
    }
    const bool truncate = std::sqrt(sum) > eps;
    for (std::int64_t j = 0; j < D; ++j) {
        const T c = x0[j * x0s];
        const T r = (o[j] - c) / q;
        o[j] = c + (truncate ? std::trunc(r) : std::nearbyint(r)) * q;
    }
}
// o = max(o, lo) (Upper: min(o, hi)) with the bound a scalar (stride 0), a contiguous array or
// strided: one plain loop per case, so that the common ones vectorise.
template <bool Upper, class T>
void clip_row(T* o, std::int64_t D, const VecView<T>& v) {
    auto one = [](T a, T b) { return Upper ? std::min(a, b) : std::max(a, b); };
    if (!v.data) return;
    if (v.stride == 0) {
        const T c = v.data[0];
        for (std::int64_t j = 0; j < D; ++j) o[j] = one(o[j], c);
    } else if (v.stride == 1) {
        for (std::int64_t j = 0; j < D; ++j) o[j] = one(o[j], v.data[j]);
    } else {
        for (std::int64_t j = 0; j < D; ++j) o[j] = one(o[j], v.data[j * v.stride]);
    }
}

// One row of the fused update (fused_update's semantics); o may alias x. Unit: x, g and x0
// contiguous (the common case), as constant strides the compiler vectorises (same loops).
template <class T, bool Unit>
void update_row_impl(const T* x, std::int64_t xs, const T* g, std::int64_t gs, const T* x0,
                     std::int64_t x0s, std::int64_t D, bool l2, T alpha, T eps,
                     const VecView<T>& lo, const VecView<T>& hi, T quantum, T* o) {
    if (Unit) xs = gs = x0s = 1;
    if (!l2) {
        for (std::int64_t j = 0; j < D; ++j) {
            const T c = x0[j * x0s];
            T v = x[j * xs] + alpha * sign_of(g[j * gs]);
            v = std::min(std::max(v, c - eps), c + eps);
            o[j] = v;
        }
    } else {
        const T gn = scaled_norm<T>(D, [&](std::int64_t j) { return g[j * gs]; });
        const T step = gn > T(0) ? alpha / gn : T(0);
        if (std::isfinite(step))
            for (std::int64_t j = 0; j < D; ++j) o[j] = x[j * xs] + step * g[j * gs];
        else  // alpha / |g| overflows (a subnormal gradient): g / |g| first
            for (std::int64_t j = 0; j < D; ++j) o[j] = x[j * xs] + alpha * (g[j * gs] / gn);
        const T dn = scaled_norm<T>(D, [&](std::int64_t j) { return o[j] - x0[j * x0s]; });
        if (dn > eps) {
            const T f = eps / dn;
            for (std::int64_t j = 0; j < D; ++j) {
                const T c = x0[j * x0s];
                o[j] = c + (o[j] - c) * f;
            }
        }
    }
    if (quantum > T(0)) quantize_row(o, x0, x0s, D, l2, eps, quantum);
    clip_row<false>(o, D, lo);
    clip_row<true>(o, D, hi);
}
template <class T>
void update_row(const T* x, std::int64_t xs, const T* g, std::int64_t gs, const T* x0,
                std::int64_t x0s, std::int64_t D, bool l2, T alpha, T eps, const VecView<T>& lo,
                const VecView<T>& hi, T quantum, T* o) {
    if (xs == 1 && gs == 1 && x0s == 1)
        update_row_impl<T, true>(x, 1, g, 1, x0, 1, D, l2, alpha, eps, lo, hi, quantum, o);
    else
        update_row_impl<T, false>(x, xs, g, gs, x0, x0s, D, l2, alpha, eps, lo, hi, quantum, o);
}

// The gradient rows of a block (dense, ld = D) applied to X rows r0.. through the step.
template <class T>
void step_block(const MatView<T>& X, const T* g, std::int64_t r0, std::int64_t M,
                const StepSpec<T>& st) {
    const std::int64_t D = X.cols;
    for (std::int64_t i = 0; i < M; ++i) {
        const std::int64_t r = r0 + i;
        update_row(X.data + r * X.rs, X.cs, g + i * D, std::int64_t(1), st.X0.data + r * st.X0.rs,
                   st.X0.cs, D, st.l2, st.alpha, st.eps, st.lo, st.hi, st.quantum,
                   st.out + r * st.ldo);
    }
}
}  // namespace


template <class T>
void ce_grad_linear(const MatView<T>& X, const MatView<T>& W, const VecView<T>& b,
                    const std::int64_t* y, T* G, std::int64_t ldg, T* loss, T* prob,
                    std::int64_t ldp, int threads, const StepSpec<T>* step) {
    const MicroKernel<T> mk = micro_kernel<T>();
    const std::int64_t C = W.rows, D = W.cols;
    if (X.rows == 0) return;
    const Narrow<T> narrow(W, D, mk);
    const PackedB<T> pbs = narrow.on ? PackedB<T>{} : pack_b(W.transposed(), mk, threads);  // D x C
    const PackedB<T> pbg = pack_b(W, mk, threads);               // C x D: gradient
    const std::int64_t ldsc = padded_width(C, mk);               // scores scratch: whole tiles
    const std::size_t rows = padded_rows(mk);
    const bool stream = streams(X.rows, D, sizeof(T));
    for_row_blocks<BlockWS<T>>(
        X.rows, mk.mc, mk.mr, threads,
        [&] {
            return BlockWS<T>(mk, rows * ldsc, step ? std::size_t(mk.mc) * D : 0,
                              narrow.scratch_size(X, mk));
        },
        [&](std::int64_t r0, std::int64_t r1, BlockWS<T>& ws) {
            const std::int64_t M = r1 - r0;
            T* s = ws.a.data();
            const int nsteps = step ? step->steps : 1;
            for (int it = 0; it < nsteps; ++it) {
                const MatView<T> cur = it == 0 ? X : step->current(X.rows, D);
                if (narrow.on)
                    narrow.run(cur, r0, r1, ws.c.data(), s, ldsc, mk);
                else
                    gemm_rows(rows_of(cur, r0, r1), pbs, s, ldsc, false, mk, ws.g, true);
                ce_rows(s, M, C, ldsc, true, b, y + r0, loss ? loss + r0 : nullptr,
                        prob ? prob + r0 * ldp : nullptr, ldp, mk);
                if (D == 0) break;  // no gradient to write or step
                if (step) {  // the block's gradient stays in cache and is applied right away
                    gemm_rows(MatView<T>{s, M, C, ldsc, 1}, pbg, ws.b.data(), D, false, mk, ws.g);
                    step_block(cur, ws.b.data(), r0, M, *step);
                } else {
                    gemm_rows(MatView<T>{s, M, C, ldsc, 1}, pbg, G + r0 * ldg, ldg, false, mk,
                              ws.g, false, stream);
                }
            }
        });
}

namespace {
// The lane path where it saves padded work: every layer at most 64 wide, and the products'
// multiply-adds with outputs padded to mr (lanes) at most 93% of those padded to nr (rows; the
// backward products too when `backward`). Measured (20k rows, 2 threads, forward with softmax,
// rows / lanes time): 64-50-20-10 1.08, 784-50-20-10 1.06, 20-10-3 1.18 (ratios 0.81, 0.84,
// 0.63: lanes), 64-32-10 0.90, 784-64-10 0.92 (ratios 1.05, 1.03: rows, whose widths are
// multiples of 16 already). 10 fused steps: 64-50-20-10 36.4 -> 28.0 ms, 20-10-3 38.2 -> 23.7.
// (The rule as calibrated with mr-row tiles; the 4- and 5-row tiles, which came later, only make
// the paths it picks cheaper.)
template <class T>
bool lane_path(const std::vector<Dense<T>>& layers, std::int64_t D, bool backward,
               const MicroKernel<T>& mk) {
    if (!g_lane_steps.load(std::memory_order_relaxed) || layers.empty() || D == 0) return false;
    auto up = [](std::int64_t n, std::int64_t m) { return (n + m - 1) / m * m; };
    double rows = 0, lanes = 0;
    std::int64_t in = D;
    for (const auto& l : layers) {
        const std::int64_t out = l.W.cols;
        if (out > 64) return false;
        rows += double(in) * up(out, mk.nr);
        lanes += double(in) * up(out, mk.mr);
        if (backward) {
            rows += double(out) * up(in, mk.nr);
            lanes += double(out) * up(in, mk.mr);
        }
        in = out;
    }
    return lanes <= 0.93 * rows;
}

// A (rows x K) packed as zero-padded mr-row slivers, each K x mr (element (i, p) at p * mr + i),
// so that a kc-deep chunk of sliver s starts at s * K * mr + pc * mr.
template <class T>
Buffer<T> pack_slivers(const MatView<T>& A, std::int64_t mr) {
    const std::int64_t ns = (A.rows + mr - 1) / mr, K = A.cols;
    Buffer<T> buf(static_cast<std::size_t>(std::max<std::int64_t>(1, ns * K * mr)));
    T* d = buf.data();
    for (std::int64_t s = 0; s < ns; ++s)
        for (std::int64_t p = 0; p < K; ++p)
            for (std::int64_t i = 0; i < mr; ++i) {
                const std::int64_t r = s * mr + i;
                d[(s * K + p) * mr + i] = r < A.rows ? A(r, p) : T(0);
            }
    return buf;
}

// The register tile of a lane product with n outputs: mr rows, or 5 or 4 where the ISA has
// those kernels and they pad n at least 2% less (50 = 10 x 5, 20 = 4 x 5, 64 = 16 x 4; a 6-row
// tile pads them to 54, 24, 66). Not for a sliver or two of padding on a wide layer: 784 stays
// on 6-row tiles (786), whose 12 accumulators run faster than a 4-row tile's 8 (784-50-20-2-4
// steps: 1.020). The tile shape never changes a result (lane_kernel_f32).
template <class T>
struct LaneTile {
    std::int64_t mr;
    MicroKernelFn<T> fn;
    typename MicroKernel<T>::LanePanelFn panel;  // null: fn per sliver
    std::int64_t pad(std::int64_t n) const { return (n + mr - 1) / mr * mr; }
};
template <class T>
LaneTile<T> lane_tile(std::int64_t n, const MicroKernel<T>& mk) {
    LaneTile<T> best{mk.mr, mk.fn, mk.lane_panel_mr};
    for (const LaneTile<T> t : {LaneTile<T>{5, mk.lane_fn5, mk.lane_panel5},
                                LaneTile<T>{4, mk.lane_fn4, mk.lane_panel4}})
        if (t.fn && double(t.pad(n)) < 0.98 * double(best.pad(n))) best = t;
    return best;
}

// A (rows x K) packed for lane products: slivers of its tile's rows (pack_slivers).
template <class T>
struct LanePack {
    LaneTile<T> tile;
    Buffer<T> a;
    LanePack(const MatView<T>& A, const MicroKernel<T>& mk)
        : tile(lane_tile(A.rows, mk)), a(pack_slivers(A, tile.mr)) {}
};

// out (tile.pad(rows) x nr, row stride nr) = A * B for A packed by LanePack (rows x K) and B
// one K x nr lane panel, in kc-deep chunks exactly as gemm_rows takes them: every entry is the
// same chain of fused multiply-adds as the row path's.
template <class T>
void lane_product(const LanePack<T>& A, std::int64_t rows, std::int64_t K, const T* b, T* out,
                  const MicroKernel<T>& mk) {
    const std::int64_t mr = A.tile.mr, nr = mk.nr, ns = (rows + mr - 1) / mr;
    const T* a = A.a.data();
    if (A.tile.panel && K > 0 && K <= mk.kc) return A.tile.panel(ns, K, a, b, out);
    for (std::int64_t s = 0; s < ns; ++s)
        for (std::int64_t pc = 0; pc < K; pc += mk.kc) {
            const std::int64_t kcb = std::min<std::int64_t>(mk.kc, K - pc);
            A.tile.fn(kcb, a + (s * K + pc) * mr, 1, mr, b + pc * nr, out + s * mr * nr, nr,
                      pc > 0);
        }
    if (K == 0) std::fill(out, out + ns * mr * nr, T(0));
}

// A narrow MLP with the batch in the vector lanes: a panel of nr rows is held transposed
// (features x nr, row stride nr), so every layer is a product whose register tile spans nr rows
// of the batch and mr outputs (outputs padded to a multiple of mr, not of nr: 64-50-20-10 does
// 12% fewer multiply-adds and 19% fewer activations than on row tiles padded to 16 columns),
// and the bias and activation run over whole contiguous panels. The products are the row
// path's chains of fused multiply-adds (same kc chunks) and the element-wise functions the same,
// so the activations have the same bits.
template <class T>
struct LaneNet {
    const std::vector<Dense<T>>& layers;
    const MicroKernel<T>& mk;
    std::vector<LanePack<T>> fwd;     // W_l^T (out x in) as output slivers
    std::vector<std::int64_t> off;    // layer l's activations: panel rows off[l] ..
    std::int64_t maxpad = 0;          // the most rows a padded output or input may take
    LaneNet(const std::vector<Dense<T>>& ls, std::int64_t D, const MicroKernel<T>& k)
        : layers(ls), mk(k), off(ls.size() + 1, 0) {
        maxpad = pad(D);
        for (std::size_t l = 0; l < ls.size(); ++l) {
            fwd.emplace_back(ls[l].W.transposed(), mk);
            off[l + 1] = off[l] + fwd[l].tile.pad(ls[l].W.cols);
            maxpad = std::max(maxpad, pad(ls[l].W.cols));
        }
    }
    // At least any tile's padding of n rows (the largest tile: mr).
    std::int64_t pad(std::int64_t n) const { return (n + mk.mr - 1) / mk.mr * mk.mr; }
    // Values in a panel of every layer's activations.
    std::size_t acts_size() const { return std::size_t(mk.nr) * off.back(); }
    // Forward of the panel x (D x nr) into acts; returns the last layer's output (C x nr).
    T* forward(const T* x, std::int64_t D, T* acts) const {
        const std::int64_t nr = mk.nr;
        const T* in = x;
        std::int64_t K = D;
        T* h = acts;
        for (std::size_t l = 0; l < layers.size(); ++l) {
            const std::int64_t w = layers[l].W.cols;
            h = acts + off[l] * nr;
            lane_product(fwd[l], w, K, in, h, mk);
            if (layers[l].b.data) add_bias_lanes(h, w, nr, layers[l].b);
            apply_act(h, w * nr, layers[l].act, mk);
            in = h;
            K = w;
        }
        return h;
    }
};

template <class T>
std::int64_t max_width(const std::vector<Dense<T>>& layers) {
    std::int64_t w = 1;
    for (const auto& l : layers) w = std::max(w, l.W.cols);
    return w;
}
}  // namespace

template <class T>
void mlp_forward(const MatView<T>& X, const std::vector<Dense<T>>& layers, Epilogue ep, T* out,
                 std::int64_t ldo, int threads) {
    const MicroKernel<T> mk = micro_kernel<T>();
    if (X.rows == 0 || layers.empty()) return;
    if (mk.transpose && lane_path(layers, X.cols, false, mk)) {  // the row path's bits (LaneNet)
        const LaneNet<T> net(layers, X.cols, mk);
        const std::int64_t C = layers.back().W.cols, nr = mk.nr;
        struct WS {  // a panel of inputs and its activations (no GEMM scratch: no gemm_rows)
            Buffer<T> x, acts;
        };
        for_row_blocks<WS>(
            X.rows, mk.mc, nr, threads,
            [&] { return WS{Buffer<T>(std::size_t(nr) * X.cols), Buffer<T>(net.acts_size())}; },
            [&](std::int64_t r0, std::int64_t r1, WS& ws) {
                for (std::int64_t q0 = r0; q0 < r1; q0 += nr) {
                    const std::int64_t m = std::min(nr, r1 - q0);
                    to_lanes(X, q0, m, nr, ws.x.data(), mk);
                    const T* z = net.forward(ws.x.data(), X.cols, ws.acts.data());
                    from_lanes(z, C, m, nr, out + q0 * ldo, ldo, mk);
                }
                epilogue_block(out + r0 * ldo, r1 - r0, C, ldo, ep, mk);
            });
        return;
    }
    std::vector<PackedB<T>> pb;
    for (const auto& l : layers) pb.push_back(pack_b(l.W, mk, threads));
    const std::int64_t mw = max_width(layers);
    const std::size_t nbuf = std::size_t(mk.mc) * mw;
    const std::size_t L = layers.size();
    for_row_blocks<BlockWS<T>>(
        X.rows, mk.mc, mk.mr, threads, [&] { return BlockWS<T>(mk, nbuf, nbuf); },
        [&](std::int64_t r0, std::int64_t r1, BlockWS<T>& ws) {
            const std::int64_t M = r1 - r0;
            MatView<T> in = rows_of(X, r0, r1);
            for (std::size_t l = 0; l < L; ++l) {
                const std::int64_t w = layers[l].W.cols;
                const bool last = l + 1 == L;
                T* dst = last ? out + r0 * ldo : (l % 2 ? ws.b.data() : ws.a.data());
                const std::int64_t ld = last ? ldo : w;
                gemm_rows(in, pb[l], dst, ld, false, mk, ws.g);
                bias_act_block(dst, M, w, ld, layers[l].b, layers[l].act, mk);
                if (last) epilogue_block(dst, M, w, ld, ep, mk);
                in = dense_view<T>(dst, M, w, ld);
            }
        });
}

namespace {
// Feature p's clip bounds (clip_row's max then min) over a panel row of nr lanes.
template <class T>
inline void lane_clip(T* xv, std::int64_t nr, const StepSpec<T>& st, std::int64_t p) {
    if (st.lo.data) {
        const T lo = st.lo[p];
        for (std::int64_t j = 0; j < nr; ++j) xv[j] = std::max(xv[j], lo);
    }
    if (st.hi.data) {
        const T hi = st.hi[p];
        for (std::int64_t j = 0; j < nr; ++j) xv[j] = std::min(xv[j], hi);
    }
}

// The L-inf step on lane panels (D x nr): x += alpha sign(g), projected onto the eps-box of x0,
// clipped to lo / hi (per feature: per panel row), each value as update_row_impl computes it,
// in one pass (an absent bound is -inf / +inf: std::max(v, -inf) and std::min(v, inf) are v,
// NaN included). NR: the panel width when known at compile time (whole-vector inner loops).
template <class T, std::int64_t NR>
FASTFOOL_CLONES void lane_step_linf_n(T* x, const T* g, const T* x0, std::int64_t D,
                                      std::int64_t nr, const StepSpec<T>& st) {
    if (NR) nr = NR;
    const T alpha = st.alpha, eps = st.eps, inf = std::numeric_limits<T>::infinity();
    for (std::int64_t p = 0; p < D; ++p) {
        T* xv = x + p * nr;
        const T* gv = g + p * nr;
        const T* cv = x0 + p * nr;
        const T lo = st.lo.data ? st.lo[p] : -inf, hi = st.hi.data ? st.hi[p] : inf;
        for (std::int64_t j = 0; j < nr; ++j) {
            const T c = cv[j];
            const T v = xv[j] + alpha * sign_of(gv[j]);
            xv[j] = std::min(std::max(std::min(std::max(v, c - eps), c + eps), lo), hi);
        }
    }
}
template <class T>
void lane_step_linf(T* x, const T* g, const T* x0, std::int64_t D, std::int64_t nr,
                    const StepSpec<T>& st) {
    if (nr == 16) return lane_step_linf_n<T, 16>(x, g, x0, D, nr, st);
    if (nr == 8) return lane_step_linf_n<T, 8>(x, g, x0, D, nr, st);
    lane_step_linf_n<T, 0>(x, g, x0, D, nr, st);
}

// The L2 step on lane panels: per lane (row) what update_row_impl's L2 branch computes, in the
// same order (scaled_norm: the max of |v| over the features, then the squares of v scaled by
// the max in kNormParts partial sums, feature p in part p % kNormParts), so the same bits;
// lanes are independent, the feature loop is outermost.
template <class T>
FASTFOOL_CLONES void lane_step_l2(T* x, const T* g, const T* x0, std::int64_t D, std::int64_t nr,
                                  const StepSpec<T>& st) {
    constexpr std::int64_t kMax = 16;
    constexpr int P = kNormParts;
    T mx[kMax], inv[kMax], sum[P][kMax], step[kMax];
    // scaled_norm over the panel rows of value(p, j), per lane j, into out[j]
    auto norms = [&](auto value, T* out) {
        for (std::int64_t j = 0; j < nr; ++j) mx[j] = T(0);
        for (int u = 0; u < P; ++u)
            for (std::int64_t j = 0; j < nr; ++j) sum[u][j] = T(0);
        for (std::int64_t p = 0; p < D; ++p)
            for (std::int64_t j = 0; j < nr; ++j) mx[j] = std::max(mx[j], std::abs(value(p, j)));
        bool all_mul = true;  // every lane's reciprocal finite: the vector loop
        for (std::int64_t j = 0; j < nr; ++j) {
            inv[j] = T(1) / mx[j];
            all_mul &= std::isfinite(inv[j]) || mx[j] == T(0) || !std::isfinite(mx[j]);
        }
        if (all_mul) {
            for (std::int64_t p = 0; p < D; ++p) {
                T* su = sum[p % P];
                for (std::int64_t j = 0; j < nr; ++j) {
                    const T v = value(p, j) * inv[j];
                    su[j] += v * v;
                }
            }
        } else {
            for (std::int64_t p = 0; p < D; ++p)
                for (std::int64_t j = 0; j < nr; ++j) {
                    const T v = std::isfinite(inv[j]) ? value(p, j) * inv[j] : value(p, j) / mx[j];
                    sum[p % P][j] += v * v;
                }
        }
        for (std::int64_t j = 0; j < nr; ++j) {
            T parts[P];
            for (int u = 0; u < P; ++u) parts[u] = sum[u][j];
            out[j] = (mx[j] == T(0) || !std::isfinite(mx[j])) ? mx[j]
                                                               : mx[j] * std::sqrt(norm_parts_sum(parts));
        }
    };
    T gn[kMax], dn[kMax];
    norms([&](std::int64_t p, std::int64_t j) { return g[p * nr + j]; }, gn);
    bool finite = true;
    for (std::int64_t j = 0; j < nr; ++j) {
        step[j] = gn[j] > T(0) ? st.alpha / gn[j] : T(0);
        finite &= std::isfinite(step[j]);
    }
    if (finite)
        for (std::int64_t p = 0; p < D; ++p)
            for (std::int64_t j = 0; j < nr; ++j) x[p * nr + j] = x[p * nr + j] + step[j] * g[p * nr + j];
    else  // as the row path: g / |g| first where alpha / |g| overflows
        for (std::int64_t p = 0; p < D; ++p)
            for (std::int64_t j = 0; j < nr; ++j)
                x[p * nr + j] = std::isfinite(step[j]) ? x[p * nr + j] + step[j] * g[p * nr + j]
                                                       : x[p * nr + j] + st.alpha * (g[p * nr + j] / gn[j]);
    norms([&](std::int64_t p, std::int64_t j) { return x[p * nr + j] - x0[p * nr + j]; }, dn);
    for (std::int64_t j = 0; j < nr; ++j) {
        if (!(dn[j] > st.eps)) continue;
        const T f = st.eps / dn[j];
        for (std::int64_t p = 0; p < D; ++p) {
            const T c = x0[p * nr + j];
            x[p * nr + j] = c + (x[p * nr + j] - c) * f;
        }
    }
    for (std::int64_t p = 0; p < D; ++p) lane_clip(x + p * nr, nr, st, p);
}

// L-inf / L2 steps of a narrow MLP on lane panels (LaneNet), or (step null) its cross-entropy
// input gradient into G (with V: the vector-Jacobian product V^T dlogits/dX, and the logits):
// the iterate stays transposed through all steps (one transpose in and one out per call), the
// derivatives and the step run over whole panels, and the softmax cross-entropy runs across
// the lanes (ce_lanes; ce_block on the rows for non-finite logits). Bit-identical to the row
// path.
template <class T>
void mlp_lanes(const MatView<T>& X, const std::vector<Dense<T>>& layers, const std::int64_t* y,
               T* loss, T* prob, std::int64_t ldp, int threads, const StepSpec<T>* step, T* G,
               std::int64_t ldg, const MatView<T>* V = nullptr, T* logits_out = nullptr,
               std::int64_t ldl = 0) {
    const MicroKernel<T> mk = micro_kernel<T>();
    const std::size_t L = layers.size();
    const std::int64_t nr = mk.nr, D = X.cols, C = layers.back().W.cols;
    const LaneNet<T> net(layers, D, mk);
    std::vector<LanePack<T>> bwd;  // W_l (in x out) as input slivers
    for (std::size_t l = 0; l < L; ++l) bwd.emplace_back(layers[l].W, mk);
    struct WS {
        Buffer<T> x, x0, acts, d, ce;
    };
    const std::size_t P = std::size_t(nr);
    for_row_blocks<WS>(
        X.rows, mk.mc, nr, threads,
        [&] {
            WS w;
            w.x.resize(P * D);
            if (step) w.x0.resize(P * D);
            w.acts.resize(net.acts_size());
            w.d.resize(P * net.maxpad * 2);
            w.ce.resize(P * C);
            return w;
        },
        [&](std::int64_t r0, std::int64_t r1, WS& ws) {
            T* x = ws.x.data();
            T* x0 = ws.x0.data();
            T* ce = ws.ce.data();
            for (std::int64_t q0 = r0; q0 < r1; q0 += nr) {
                const std::int64_t m = std::min(nr, r1 - q0);
                to_lanes(X, q0, m, nr, x, mk);
                if (step) to_lanes(step->X0, q0, m, nr, x0, mk);
                const int nsteps = step ? step->steps : 1;
                for (int it = 0; it < nsteps; ++it) {
                    const bool last = it + 1 == nsteps;
                    const T* z = net.forward(x, D, ws.acts.data());
                    T* delta = ws.d.data();
                    T* lq = last && loss ? loss + q0 : nullptr;
                    T* pq = last && prob ? prob + q0 * ldp : nullptr;
                    if (V) {  // a vector-Jacobian product: the cotangent V instead of P - onehot
                        if (logits_out) from_lanes(z, C, m, nr, logits_out + q0 * ldl, ldl, mk);
                        to_lanes(*V, q0, m, nr, delta, mk);
                    } else {
                        std::memcpy(delta, z, sizeof(T) * C * nr);
                        if (!ce_lanes(delta, C, nr, m, y + q0, lq, pq, ldp, mk)) {
                            // NaN or infinite logits: ce_block on the rows, P - onehot back
                            from_lanes(z, C, m, nr, ce, C, mk);
                            ce_block(ce, m, C, C, true, VecView<T>{}, y + q0, lq, pq, ldp, mk);
                            for (std::int64_t c = 0; c < C; ++c)
                                for (std::int64_t j = 0; j < nr; ++j)
                                    delta[c * nr + j] = j < m ? ce[j * C + c] : T(0);
                        }
                    }
                    T* spare = ws.d.data() + net.maxpad * nr;
                    for (std::size_t l = L; l-- > 0;) {
                        const std::int64_t wi = l ? layers[l - 1].W.cols : D;
                        lane_product(bwd[l], wi, layers[l].W.cols, delta, spare, mk);
                        if (l)
                            times_act_derivative(spare, ws.acts.data() + net.off[l - 1] * nr,
                                                 wi * nr, layers[l - 1].act);
                        std::swap(delta, spare);
                    }
                    if (!step) {  // delta: the input gradient
                        from_lanes(delta, D, m, nr, G + q0 * ldg, ldg, mk);
                        break;
                    }
                    if (step->l2)
                        lane_step_l2(x, delta, x0, D, nr, *step);
                    else
                        lane_step_linf(x, delta, x0, D, nr, *step);
                }
                if (!step) continue;
                from_lanes(x, D, m, nr, step->out + q0 * step->ldo, step->ldo, mk);
                if (step->final_prob)
                    from_lanes(net.forward(x, D, ws.acts.data()), C, m, nr,
                               step->final_prob + q0 * step->ldf, step->ldf, mk);
            }
            if (step && step->final_prob)
                softmax_block(step->final_prob + r0 * step->ldf, r1 - r0, C, step->ldf, mk);
        });
}

// Forward a row block through the stack, keep every activation, then back-propagate a
// cotangent of the logits to the input: either P - onehot(y) (cross-entropy) or rows of V.
template <class T>
void mlp_backprop(const MatView<T>& X, const std::vector<Dense<T>>& layers,
                  const std::int64_t* y, const MatView<T>* V, T* G, std::int64_t ldg, T* loss,
                  T* prob, std::int64_t ldp, T* logits_out, std::int64_t ldl, int threads,
                  const StepSpec<T>* step) {
    const MicroKernel<T> mk = micro_kernel<T>();
    if (layers.empty()) throw std::invalid_argument("ce_grad_mlp: no layers");
    if (layers.back().act != Act::identity)
        throw std::invalid_argument("ce_grad_mlp: the last layer must produce logits (identity)");
    if (X.rows == 0) return;
    const std::size_t L = layers.size();
    // The lane path for L-inf steps and for CE gradients written with plain stores (the row
    // path streams outputs far larger than the caches).
    const bool lanes_ok = step ? step->quantum == T(0) && mk.nr <= 16
                               : !streams(X.rows, X.cols, sizeof(T)) && mk.transpose;
    if (lanes_ok && lane_path(layers, X.cols, true, mk)) {
        mlp_lanes(X, layers, y, loss, prob, ldp, threads, step, G, ldg, V, logits_out, ldl);
        return;
    }
    std::vector<PackedB<T>> fwd, bwd;
    // Scratch rows are padded to whole tiles (gemm_rows' padded): layer l's activations start
    // at off[l] * rows with row stride pw[l].
    std::vector<std::int64_t> off(L + 1, 0), pw(L);
    for (std::size_t l = 0; l < L; ++l) {
        fwd.push_back(pack_b(layers[l].W, mk, threads));
        bwd.push_back(pack_b(layers[l].W.transposed(), mk, threads));
        pw[l] = padded_width(layers[l].W.cols, mk);
        off[l + 1] = off[l] + pw[l];
    }
    const std::int64_t C = layers.back().W.cols, D = X.cols;
    const std::int64_t pmw = padded_width(max_width(layers), mk);
    const std::size_t rows = padded_rows(mk);
    const std::size_t nacts = rows * off[L], ndelta = rows * pmw * 2;
    const bool stream = streams(X.rows, X.cols, sizeof(T));
    const std::size_t ngrad = step ? std::size_t(mk.mc) * D : 0;
    for_row_blocks<BlockWS<T>>(
        X.rows, mk.mc, mk.mr, threads, [&] { return BlockWS<T>(mk, nacts, ndelta, ngrad); },
        [&](std::int64_t r0, std::int64_t r1, BlockWS<T>& ws) {
            const std::int64_t M = r1 - r0;
            auto act_buf = [&](std::size_t l) { return ws.a.data() + rows * off[l]; };
            auto forward = [&](MatView<T> in) {  // every layer's activations into act_buf
                for (std::size_t l = 0; l < L; ++l) {
                    const std::int64_t w = layers[l].W.cols;
                    T* dst = act_buf(l);
                    gemm_rows(in, fwd[l], dst, pw[l], false, mk, ws.g, true);
                    bias_act_block(dst, M, w, pw[l], layers[l].b, layers[l].act, mk, true);
                    in = MatView<T>{dst, M, w, pw[l], 1};
                }
            };
            const int nsteps = step ? step->steps : 1;
            for (int it = 0; it < nsteps; ++it) {
                const MatView<T> cur = it == 0 ? X : step->current(X.rows, D);
                forward(rows_of(cur, r0, r1));
                T* logits = act_buf(L - 1);
                const std::int64_t ldz = pw[L - 1];
                if (logits_out)
                    for (std::int64_t i = 0; i < M; ++i)
                        std::memcpy(logits_out + (r0 + i) * ldl, logits + i * ldz,
                                    sizeof(T) * C);
                if (V) {
                    for (std::int64_t i = 0; i < M; ++i)
                        for (std::int64_t j = 0; j < C; ++j)
                            logits[i * ldz + j] = (*V)(r0 + i, j);
                } else {
                    ce_rows(logits, M, C, ldz, true, VecView<T>{}, y + r0,
                            loss ? loss + r0 : nullptr, prob ? prob + r0 * ldp : nullptr, ldp,
                            mk);
                }
                // Back-propagate delta = dLoss/dz_l from the logits down to the input.
                MatView<T> delta{logits, M, C, ldz, 1};
                T* spare[2] = {ws.b.data(), ws.b.data() + rows * pmw};
                for (std::size_t l = L - 1; l >= 1; --l) {
                    const std::int64_t w = layers[l - 1].W.cols, ld = pw[l - 1];
                    T* next = spare[l % 2];
                    gemm_rows(delta, bwd[l], next, ld, false, mk, ws.g, true);
                    const T* h = act_buf(l - 1);
                    if (layers[l - 1].act != Act::identity)  // padding columns: never read
                        times_act_derivative(next, h, M * ld, layers[l - 1].act);
                    delta = MatView<T>{next, M, w, ld, 1};
                }
                if (D == 0) break;  // nothing to step (the final forward below still runs)
                if (step) {
                    gemm_rows(delta, bwd[0], ws.c.data(), D, false, mk, ws.g);
                    step_block(cur, ws.c.data(), r0, M, *step);
                } else {
                    gemm_rows(delta, bwd[0], G + r0 * ldg, ldg, false, mk, ws.g, false, stream);
                }
            }
            if (step && step->final_prob) {  // the forward of the returned rows, as mlp_forward
                forward(rows_of(step->current(X.rows, D), r0, r1));
                T* fp = step->final_prob + r0 * step->ldf;
                for (std::int64_t i = 0; i < M; ++i)
                    std::memcpy(fp + i * step->ldf, act_buf(L - 1) + i * pw[L - 1], sizeof(T) * C);
                softmax_block(fp, M, C, step->ldf, mk);
            }
        });
}

}  // namespace

template <class T>
void ce_grad_mlp(const MatView<T>& X, const std::vector<Dense<T>>& layers,
                 const std::int64_t* y, T* G, std::int64_t ldg, T* loss, T* prob,
                 std::int64_t ldp, int threads, const StepSpec<T>* step) {
    mlp_backprop<T>(X, layers, y, nullptr, G, ldg, loss, prob, ldp, nullptr, 0, threads, step);
}

template <class T>
void mlp_vjp(const MatView<T>& X, const std::vector<Dense<T>>& layers, const MatView<T>& V,
             T* G, std::int64_t ldg, T* logits, std::int64_t ldl, int threads) {
    mlp_backprop<T>(X, layers, nullptr, &V, G, ldg, nullptr, nullptr, 0, logits, ldl, threads,
                    nullptr);
}

namespace {
// Inverse activation with clamping into the open range; returns how many values were clamped.
template <class T>
std::int64_t inverse_act_minus_bias(const T* src, std::int64_t cs, T* dst, std::int64_t n,
                                    Act act, T margin, const VecView<T>& b) {
    std::int64_t clamped = 0;
    T lo = 0, hi = 0;
    if (act == Act::tanh) {
        lo = T(-1) + margin;
        hi = T(1) - margin;
    } else if (act == Act::logistic) {
        lo = margin;
        hi = T(1) - margin;
    }
    for (std::int64_t j = 0; j < n; ++j) {
        T v = src[j * cs];
        if (act != Act::identity) {
            if (v < lo) { v = lo; ++clamped; }
            if (v > hi) { v = hi; ++clamped; }
            v = act == Act::tanh ? std::atanh(v) : std::log(v) - std::log1p(-v);
        }
        dst[j] = v - b[j];
    }
    return clamped;
}
}  // namespace

template <class T>
std::int64_t backproject(const MatView<T>& H, const std::vector<BackStep<T>>& steps, T margin,
                         const MatView<T>& base, T* out, std::int64_t ldo, int threads) {
    for (const auto& s : steps)
        if (s.act == Act::relu)
            throw std::invalid_argument("backproject: relu is not invertible");
    if (steps.empty()) throw std::invalid_argument("backproject: no steps");
    const MicroKernel<T> mk = micro_kernel<T>();
    if (H.rows == 0) return 0;
    std::vector<PackedB<T>> pb;
    std::int64_t mw = 1;
    for (const auto& s : steps) {
        pb.push_back(pack_b(s.P, mk, threads));
        mw = std::max({mw, s.P.rows, s.P.cols});
    }
    const std::size_t nbuf = std::size_t(mk.mc) * mw;
    const std::int64_t D = steps.back().P.cols;
    // a large output (100k x 784 float: 313 MB) streamed out, not read in first
    const bool stream = streams(H.rows, D, sizeof(T));
    const auto ws_all = for_row_blocks<BlockWS<T>>(
        H.rows, mk.mc, mk.mr, threads, [&] { return BlockWS<T>(mk, nbuf, nbuf); },
        [&](std::int64_t r0, std::int64_t r1, BlockWS<T>& ws) {
            const std::int64_t M = r1 - r0;
            MatView<T> cur = rows_of(H, r0, r1);
            T* z = ws.a.data();  // act^-1(cur) - b
            T* h = ws.b.data();  // the layer below; z never aliases cur
            for (std::size_t s = 0; s < steps.size(); ++s) {
                const std::int64_t k = steps[s].P.rows, w = steps[s].P.cols;
                for (std::int64_t i = 0; i < M; ++i)
                    ws.counter += inverse_act_minus_bias(cur.data + i * cur.rs, cur.cs, z + i * k, k,
                                                         steps[s].act, margin, steps[s].b);
                if (s + 1 < steps.size()) {
                    gemm_rows(dense_view<T>(z, M, k, k), pb[s], h, w, false, mk, ws.g);
                    cur = dense_view<T>(h, M, w, w);
                    continue;
                }
                T* dst = out + r0 * ldo;
                const bool add = base.data != nullptr;
                if (add)
                    for (std::int64_t i = 0; i < M; ++i)
                        for (std::int64_t j = 0; j < D; ++j) dst[i * ldo + j] = base(r0 + i, j);
                gemm_rows(dense_view<T>(z, M, k, k), pb[s], dst, ldo, add, mk, ws.g, false,
                          stream);
            }
        });
    std::int64_t clamped = 0;
    for (const auto& ws : ws_all) clamped += ws.counter;
    return clamped;
}

template <class T>
void fused_update(const MatView<T>& X, const MatView<T>& G, const MatView<T>& X0, bool l2,
                  T alpha, T eps, const VecView<T>& lo, const VecView<T>& hi, T quantum, T* out,
                  std::int64_t ldo, int threads) {
    const std::int64_t N = X.rows, D = X.cols;
    // tasks of ~64K elements: enough work per task to amortise the hand-off
    const std::int64_t rows_per_task = std::max<std::int64_t>(1, 65536 / std::max<std::int64_t>(D, 1));
    const std::int64_t ntasks = (N + rows_per_task - 1) / rows_per_task;
    parallel_for(ntasks, threads, [&](std::int64_t task, int) {
        const std::int64_t i_end = std::min(N, (task + 1) * rows_per_task);
        for (std::int64_t i = task * rows_per_task; i < i_end; ++i)
            update_row(X.data + i * X.rs, X.cs, G.data + i * G.rs, G.cs, X0.data + i * X0.rs, X0.cs,
                       D, l2, alpha, eps, lo, hi, quantum, out + i * ldo);
    });
}

namespace {
// ||a - b||_2 and ||a - b||_inf of one row. max |d| first (it is the L-inf norm); when it is in
// a range where squares can neither overflow nor lose anything that matters (always for float,
// summed in double), the squares are summed directly; otherwise scaled_norm's division by the
// max. Unit: both rows contiguous, so the loops vectorise.
template <class T, bool Unit>
void row_diff_norms(const T* a, std::int64_t as, const T* b, std::int64_t bs, std::int64_t D,
                    T* l2, T* linf) {
    if (Unit) as = bs = 1;
    // four interleaved partial results (a single dependent chain per row was the cost)
    T m4[4] = {0, 0, 0, 0};
    std::int64_t j = 0;
    for (; j + 4 <= D; j += 4)
        for (int u = 0; u < 4; ++u) m4[u] = std::max(m4[u], std::abs(a[(j + u) * as] - b[(j + u) * bs]));
    for (; j < D; ++j) m4[0] = std::max(m4[0], std::abs(a[j * as] - b[j * bs]));
    const T mx = std::max(std::max(m4[0], m4[1]), std::max(m4[2], m4[3]));
    T n2;
    using Acc = double;  // float rows: squares of floats cannot overflow a double
    // (max skips NaN: a row whose only non-zero differences are NaN has mx = 0 and takes the
    // direct sum, where the NaN shows)
    const bool direct = std::isfinite(mx) && (sizeof(T) == 4 || mx == T(0) ||
                                              (mx > T(1e-140) && mx < T(1e140)));
    if (!direct) {  // huge, tiny or infinite: the scaled form (rare; it finds the max again)
        n2 = scaled_norm<T>(D, [&](std::int64_t j) { return a[j * as] - b[j * bs]; });
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
    const std::int64_t rows_per_task = std::max<std::int64_t>(1, 65536 / std::max<std::int64_t>(D, 1));
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
template <class T> struct Bits;
template <> struct Bits<float> { using U = std::uint32_t; static constexpr U exp = 0x7f800000u; };
template <> struct Bits<double> { using U = std::uint64_t; static constexpr U exp = 0x7ff0000000000000ull; };
}  // namespace

template <class T>
bool all_finite(const MatView<T>& X, int threads) {
    using U = typename Bits<T>::U;
    const std::int64_t N = X.rows, D = X.cols;
    std::atomic<std::int64_t> bad{0};
    const std::int64_t rows_per_task = std::max<std::int64_t>(1, 262144 / std::max<std::int64_t>(D, 1));
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

#define FASTFOOL_INSTANTIATE(T)                                                                   \
    template void scores<T>(const MatView<T>&, const MatView<T>&, const VecView<T>&, Epilogue, T*, \
                            std::int64_t, int);                                                   \
    template void ce_grad_linear<T>(const MatView<T>&, const MatView<T>&, const VecView<T>&,      \
                                    const std::int64_t*, T*, std::int64_t, T*, T*, std::int64_t,  \
                                    int, const StepSpec<T>*);                                     \
    template void mlp_forward<T>(const MatView<T>&, const std::vector<Dense<T>>&, Epilogue, T*,   \
                                 std::int64_t, int);                                              \
    template void ce_grad_mlp<T>(const MatView<T>&, const std::vector<Dense<T>>&,                 \
                                 const std::int64_t*, T*, std::int64_t, T*, T*, std::int64_t,     \
                                 int, const StepSpec<T>*);                                        \
    template void mlp_vjp<T>(const MatView<T>&, const std::vector<Dense<T>>&, const MatView<T>&,  \
                             T*, std::int64_t, T*, std::int64_t, int);                            \
    template std::int64_t backproject<T>(const MatView<T>&, const std::vector<BackStep<T>>&, T,   \
                                         const MatView<T>&, T*, std::int64_t, int);               \
    template void fused_update<T>(const MatView<T>&, const MatView<T>&, const MatView<T>&, bool,  \
                                  T, T, const VecView<T>&, const VecView<T>&, T, T*,              \
                                  std::int64_t, int);                                             \
    template void diff_norms<T>(const MatView<T>&, const MatView<T>&, T*, T*, int);               \
    template void argmax_rows<T>(const MatView<T>&, std::int64_t*, T*, int);                     \
    template bool all_finite<T>(const MatView<T>&, int);

void set_lane_steps(bool on) { g_lane_steps.store(on); }
bool lane_steps() { return g_lane_steps.load(); }

FASTFOOL_INSTANTIATE(float)
FASTFOOL_INSTANTIATE(double)

}  // namespace fastfool
