// The least-norm move of a point onto a hyperplane inside a box (FAB's projection, Croce & Hein
// 2020), per row: d minimising ||d||_p subject to w . (x + d) = b and lo <= x + d <= hi.
//
// Each coordinate moves only in the direction that brings w . (x + d) toward b, by e_j >= 0, at
// most its room in the box cap_j; with v = |w| the constraint is v . e = r, r = |b - w . x|.
//   L-inf: e_j = min(tau, cap_j);  L2: e_j = min(lam v_j, cap_j)  (the optimality conditions);
// v . e is piecewise linear, increasing and concave in the scalar, with breakpoints cap_j (L-inf)
// or cap_j / v_j (L2): the scalar where it reaches r by Newton's method from 0. L1: the
// coordinates of largest v are filled to their room first (quickselect). Where even the whole room
// falls short (the hyperplane misses the box), every coordinate goes to its room: the box corner
// furthest toward the plane. Rows with a non-finite x, w or b (or w . x overflowing) do not move.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "fastfool/kernels.hpp"
#include "fastfool/threads.hpp"

namespace fastfool {
namespace {

// One coordinate that can move: its sort key (breakpoint, or |w_j| for L1), the progress when
// it is at its room (v_j cap_j), its slope below the breakpoint, and its index.
struct Item {
    double k, full, slope;
    std::int64_t j;
};

// a if c else b, by bit masks (no branch)
inline double pick(bool c, double a, double b) {
    std::uint64_t ua, ub;
    std::memcpy(&ua, &a, 8);
    std::memcpy(&ub, &b, 8);
    const std::uint64_t mask = std::uint64_t(0) - std::uint64_t(c);
    const std::uint64_t u = (ua & mask) | (ub & ~mask);
    double out;
    std::memcpy(&out, &u, 8);
    return out;
}

struct Scratch {
    std::vector<double> v, cap;
    std::vector<Item> items;
    std::vector<double> sg, key, full, slope;
    void resize(std::int64_t D) {
        v.resize(D);
        cap.resize(D);
        items.resize(D);
        sg.resize(D);
        key.resize(D);
        full.resize(D);
        slope.resize(D);
    }
};

// The scalar s with sum_j min(s m_j, cap_j) v_j = r (L-inf: m = 1; L2: m = v), by Newton's
// method on S(s) from s = 0: S is increasing, concave and piecewise linear, so every tangent lies
// above it and each step lands at or below the crossing, on it as soon as no breakpoint lies
// between (exact up to the sums' rounding). Each step is one branch-free pass over the D
// coordinates (key: the breakpoint, full: v_j cap_j, slope: the slope below the breakpoint;
// coordinates with v_j = 0 have key +inf and slope 0); on FAB's planes 3.3 passes on average, 7 at
// most in 3000 drawn rows (a quickselect on the breakpoints, the earlier way, was 2-3x slower:
// data-dependent partitions of 32-byte items). +inf when even full room falls short.
double crossing_newton(const double* key, const double* full, const double* slope, std::int64_t D,
                       double r) {
    double s = 0.0;
    for (std::int64_t pass = 0; pass <= D + 1; ++pass) {
        double S = 0.0, dS = 0.0;
        for (std::int64_t j = 0; j < D; ++j) {  // 0 / 1 weights, not branches: vectorised
            const double below = key[j] > s ? 1.0 : 0.0;
            S += below * (s * slope[j]) + (1.0 - below) * full[j];
            dS += below * slope[j];
        }
        if (!(S < r)) return s;  // on the crossing (or past it by rounding)
        if (!(dS > 0)) return std::numeric_limits<double>::infinity();
        const double next = s + (r - S) / dS;
        if (!(next > s)) return s;  // no progress left: the crossing to rounding
        s = next;
    }
    return s;
}

// Branch-free partition of it[lo, hi): the items with before(key) first, in a Lomuto pass that
// always swaps (a data-dependent branch per item was most of the time). Returns the split;
// adds the full progress of the items moved first to *full_first and the slopes of the others
// to *slope_rest.
template <class Before>
std::int64_t split(Item* it, std::int64_t lo, std::int64_t hi, Before before, double* full_first,
                   double* slope_rest) {
    std::int64_t i = lo;
    double ff = 0.0, sr = 0.0;
    for (std::int64_t k = lo; k < hi; ++k) {
        const Item t = it[k];
        const bool c = before(t.k);
        ff += pick(c, t.full, 0.0);
        sr += pick(c, 0.0, t.slope);
        it[k] = it[i];
        it[i] = t;
        i += c;
    }
    if (full_first) *full_first += ff;
    if (slope_rest) *slope_rest += sr;
    return i;
}

void project_row(const double* x, std::int64_t xs, const double* w, std::int64_t ws, double b,
                 const double* lo, const double* hi, std::int64_t D, int norm, double* d,
                 Scratch& s) {
    double dot = 0.0;
    for (std::int64_t j = 0; j < D; ++j) dot += w[j * ws] * x[j * xs];
    double r = b - dot;
    std::fill(d, d + D, 0.0);
    // on the plane, or a row with NaN / inf (no order to sort by, no meaningful move): d = 0.
    // A non-finite w_j or x_j makes the dot product NaN or infinite (inf * 0 is NaN)
    if (!(std::abs(r) > 0.0) || !std::isfinite(r)) return;
    const double sign = r < 0 ? -1.0 : 1.0;
    r = std::abs(r);
    const bool l2 = norm == 2;
    Item* it = s.items.data();
    double* sv = s.v.data();
    double* scap = s.cap.data();
    double* ssg = s.sg.data();
    std::int64_t m = 0;  // coordinates that can move (w_j != 0), in order
    for (std::int64_t j = 0; j < D; ++j) {
        const double wj = w[j * ws] * sign;
        const double xj = x[j * xs];
        // selects, not branches: the sign of w_j is a coin toss for the branch predictor (GCC
        // turns a ternary on doubles into a jump: 35 cycles a coordinate, mostly mispredictions)
        const double toward = pick(wj > 0, hi[j] - xj, xj - lo[j]);
        const double room = pick(toward > 0, toward, 0.0);
        const double v = std::abs(wj);
        sv[j] = v;
        scap[j] = room;
        ssg[j] = std::copysign(1.0, wj);
        if (norm == 1) it[m] = {v, v * room, v, j};  // L1's quickselect items
        m += wj != 0.0;
    }
    if (m == 0) return;
    if (norm != 1) {
        double* key = s.key.data();
        double* full = s.full.data();
        double* slope = s.slope.data();
        const double inf = std::numeric_limits<double>::infinity();
        for (std::int64_t j = 0; j < D; ++j) {
            const double v = sv[j], cap = scap[j];
            const bool moves = v > 0;
            key[j] = pick(moves, l2 ? cap / pick(moves, v, 1.0) : cap, inf);
            // a room without bound is never full: 0 there, so that 0 * full stays 0
            full[j] = pick(moves && cap < inf, v * cap, 0.0);
            slope[j] = l2 ? v * v : v;
        }
        const double sc = crossing_newton(key, full, slope, D, r);
        for (std::int64_t j = 0; j < D; ++j)
            d[j] = pick(sv[j] > 0, ssg[j] * std::min(l2 ? sc * sv[j] : sc, scap[j]), 0.0);
        return;
    }
    // L1: the largest |w_j| filled first; quickselect for the one that crosses r
    std::int64_t lo_i = 0, hi_i = m;
    double A = 0.0;
    auto fill = [&](std::int64_t from, std::int64_t to) {
        for (std::int64_t i = from; i < to; ++i) d[it[i].j] = s.sg[it[i].j] * s.cap[it[i].j];
    };
    while (lo_i < hi_i) {
        const double p = it[lo_i + (hi_i - lo_i) / 2].k;
        double fullG = 0.0;
        const std::int64_t a =
            split(it, lo_i, hi_i, [p](double k) { return k > p; }, &fullG, nullptr);
        if (A + fullG >= r) {  // crosses among the larger ones
            hi_i = a;
            continue;
        }
        fill(lo_i, a);
        A += fullG;
        double fullE = 0.0;
        const std::int64_t b2 =
            split(it, a, hi_i, [p](double k) { return k >= p; }, &fullE, nullptr);
        if (A + fullE >= r) {  // crosses among the ties: filled in index order
            std::sort(it + a, it + b2, [](const Item& u, const Item& q) { return u.j < q.j; });
            double left = r - A;
            for (std::int64_t i = a; i < b2 && left > 0; ++i) {
                const std::int64_t j = it[i].j;
                if (s.cap[j] * s.v[j] >= left) {
                    d[j] = s.sg[j] * (left / s.v[j]);
                    break;
                }
                d[j] = s.sg[j] * s.cap[j];
                left -= s.cap[j] * s.v[j];
            }
            return;
        }
        fill(a, b2);
        A += fullE;
        lo_i = b2;
    }
}

// The bounds of one task: unbounded sides as infinite bounds (no per-coordinate test).
struct Bounds {
    std::vector<double> lo_inf, hi_inf;
    const double *lo, *hi;
    Bounds(const double* l, const double* h, std::int64_t D) : lo(l), hi(h) {
        if (!lo) {
            lo_inf.assign(D, -std::numeric_limits<double>::infinity());
            lo = lo_inf.data();
        }
        if (!hi) {
            hi_inf.assign(D, std::numeric_limits<double>::infinity());
            hi = hi_inf.data();
        }
    }
};

double norm_of(const double* d, std::int64_t D, int norm) {
    double acc = 0.0;
    for (std::int64_t j = 0; j < D; ++j) {
        const double a = std::abs(d[j]);
        acc = norm == 0 ? std::max(acc, a) : acc + (norm == 2 ? a * a : a);
    }
    return norm == 2 ? std::sqrt(acc) : acc;
}

std::int64_t task_rows(std::int64_t D) {
    return std::max<std::int64_t>(4, 4096 / std::max<std::int64_t>(D, 1));  // ~2 us a row of 64
}

}  // namespace

void project_plane(const MatView<double>& X, const MatView<double>& W, const double* b,
                   const double* lo, const double* hi, int norm, double* out, std::int64_t ldo,
                   int threads) {
    const std::int64_t N = X.rows, D = X.cols;
    if (N == 0 || D == 0) return;
    const std::int64_t rows = task_rows(D);
    parallel_for((N + rows - 1) / rows, threads, [&](std::int64_t task, int) {
        Scratch s;
        s.resize(D);
        const Bounds bx(lo, hi, D);
        const std::int64_t i_end = std::min(N, (task + 1) * rows);
        for (std::int64_t i = task * rows; i < i_end; ++i)
            project_row(X.data + i * X.rs, X.cs, W.data + i * W.rs, W.cs, b[i], bx.lo, bx.hi, D,
                        norm, out + i * ldo, s);
    });
}

void fab_step(const MatView<double>& X, const MatView<double>& X0, const MatView<double>& W,
              const double* b, const double* lo, const double* hi, int norm, double eta,
              double alpha_max, const double* reach, double* out, std::int64_t ldo, int threads) {
    const std::int64_t N = X.rows, D = X.cols;
    if (N == 0 || D == 0) return;
    const std::int64_t rows = task_rows(D);
    parallel_for((N + rows - 1) / rows, threads, [&](std::int64_t task, int) {
        Scratch s;
        s.resize(D);
        const Bounds bx(lo, hi, D);
        std::vector<double> d1(D), d2(D);
        const std::int64_t i_end = std::min(N, (task + 1) * rows);
        for (std::int64_t i = task * rows; i < i_end; ++i) {
            const double* x = X.data + i * X.rs;
            const double* x0 = X0.data + i * X0.rs;
            const double* w = W.data + i * W.rs;
            project_row(x, X.cs, w, W.cs, b[i], bx.lo, bx.hi, D, norm, d1.data(), s);
            project_row(x0, X0.cs, w, W.cs, b[i], bx.lo, bx.hi, D, norm, d2.data(), s);
            const double a1 = std::max(norm_of(d1.data(), D, norm), 1e-8);
            const double a2 = std::max(norm_of(d2.data(), D, norm), 1e-8);
            const double a = std::min(a1 / (a1 + a2), alpha_max);
            double* o = out + i * ldo;
            bool keep = true;
            for (std::int64_t j = 0; j < D; ++j) {
                const double xj = x[j * X.cs], x0j = x0[j * X0.cs];
                double z = (xj + eta * d1[j]) * (1 - a) + (x0j + eta * d2[j]) * a;
                z = std::min(std::max(z, bx.lo[j]), bx.hi[j]);
                keep &= std::abs(z - x0j) <= reach[i];  // false for NaN too
                o[j] = z;
            }
            if (!keep)  // the move left the trust region (or is not finite): not taken
                for (std::int64_t j = 0; j < D; ++j) o[j] = x[j * X.cs];
        }
    });
}

}  // namespace fastfool
