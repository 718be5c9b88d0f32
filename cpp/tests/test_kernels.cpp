// C++ tests of the CPU kernels against plain loops, without Python: `fastfool_cpp_tests ISA`
// forces that instruction set (generic, avx2, avx512) and checks every kernel over odd shapes (0,
// 1, 7, 97 rows; narrow and wide outputs), strided views, float and double, 1 and 3 threads; the
// lane path against the row path bit for bit; and that the ISA's table has every slot filled. Exit
// status 0: all passed; 77: the ISA is not available on this CPU (ctest: skipped).
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "fastfool/dispatch.hpp"
#include "fastfool/interrupt.hpp"
#include "fastfool/kernels.hpp"
#include "fastfool/threads.hpp"

namespace ff = fastfool;

namespace {

int g_failures = 0;
int g_checks = 0;

#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        ++g_checks;                                                                       \
        if (!(cond)) {                                                                    \
            ++g_failures;                                                                 \
            std::fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            std::fprintf(stderr, __VA_ARGS__);                                            \
            std::fprintf(stderr, "\n");                                                   \
        }                                                                                 \
    } while (0)

template <class T>
struct Mat {
    std::int64_t rows = 0, cols = 0, ld = 0;
    std::vector<T> v;
    Mat(std::int64_t r, std::int64_t c, std::int64_t pad = 0) : rows(r), cols(c), ld(c + pad) {
        v.assign(static_cast<std::size_t>(std::max<std::int64_t>(1, r * ld)), T(0));
    }
    T& operator()(std::int64_t i, std::int64_t j) {
        return v[static_cast<std::size_t>(i * ld + j)];
    }
    T operator()(std::int64_t i, std::int64_t j) const {
        return v[static_cast<std::size_t>(i * ld + j)];
    }
    ff::MatView<T> view() const { return {v.data(), rows, cols, ld, 1}; }
};

template <class T>
Mat<T> random_mat(std::mt19937_64& rng, std::int64_t r, std::int64_t c, double scale,
                  std::int64_t pad = 0) {
    std::normal_distribution<double> n(0.0, scale);
    Mat<T> m(r, c, pad);
    for (std::int64_t i = 0; i < r; ++i)
        for (std::int64_t j = 0; j < c; ++j) m(i, j) = T(n(rng));
    return m;
}

// |a - b| <= tol * (1 + |b|), with tol a few thousand ulps of T times the depth of the sums.
template <class T>
bool close(T a, double b, double tol) {
    return std::abs(double(a) - b) <= tol * (1.0 + std::abs(b));
}
template <class T>
double tol_for(std::int64_t depth) {
    const double u = sizeof(T) == 4 ? 6e-8 : 1.2e-16;
    return 64.0 * u * double(std::max<std::int64_t>(depth, 1)) + (sizeof(T) == 4 ? 1e-6 : 1e-13);
}

double act(ff::Act a, double v) {
    switch (a) {
        case ff::Act::relu:
            return v > 0 ? v : 0;
        case ff::Act::tanh:
            return std::tanh(v);
        case ff::Act::logistic:
            return 1 / (1 + std::exp(-v));
        default:
            return v;
    }
}
double act_grad(ff::Act a, double h) {
    switch (a) {
        case ff::Act::relu:
            return h > 0 ? 1 : 0;
        case ff::Act::tanh:
            return 1 - h * h;
        case ff::Act::logistic:
            return h * (1 - h);
        default:
            return 1;
    }
}

// Reference MLP: every layer's activations in double.
struct RefNet {
    std::vector<std::vector<std::vector<double>>> acts;  // [layer][row][unit]
};
template <class T>
RefNet ref_forward(const Mat<T>& X, const std::vector<Mat<T>>& Ws,
                   const std::vector<std::vector<T>>& bs, const std::vector<ff::Act>& acts) {
    RefNet r;
    std::vector<std::vector<double>> in(static_cast<std::size_t>(X.rows));
    for (std::int64_t i = 0; i < X.rows; ++i)
        for (std::int64_t j = 0; j < X.cols; ++j)
            in[static_cast<std::size_t>(i)].push_back(double(X(i, j)));
    for (std::size_t l = 0; l < Ws.size(); ++l) {
        std::vector<std::vector<double>> out(
            in.size(), std::vector<double>(static_cast<std::size_t>(Ws[l].cols)));
        for (std::size_t i = 0; i < in.size(); ++i)
            for (std::int64_t o = 0; o < Ws[l].cols; ++o) {
                double s = double(bs[l][static_cast<std::size_t>(o)]);
                for (std::int64_t k = 0; k < Ws[l].rows; ++k)
                    s += in[i][static_cast<std::size_t>(k)] * double(Ws[l](k, o));
                out[i][static_cast<std::size_t>(o)] = act(acts[l], s);
            }
        r.acts.push_back(out);
        in = out;
    }
    return r;
}

template <class T>
std::vector<ff::Dense<T>> dense_layers(const std::vector<Mat<T>>& Ws,
                                       const std::vector<std::vector<T>>& bs,
                                       const std::vector<ff::Act>& acts) {
    std::vector<ff::Dense<T>> layers;
    for (std::size_t l = 0; l < Ws.size(); ++l)
        layers.push_back({Ws[l].view(), {bs[l].data(), std::int64_t(bs[l].size()), 1}, acts[l]});
    return layers;
}

template <class T>
void test_scores(std::mt19937_64& rng, const char* name) {
    for (std::int64_t N : {0, 1, 7, 97})
        for (std::int64_t C : {1, 3, 10, 37})
            for (std::int64_t D : {1, 9, 130})
                for (int threads : {1, 3}) {
                    const Mat<T> X = random_mat<T>(rng, N, D, 1.0, D % 2);  // odd: a strided row
                    const Mat<T> W = random_mat<T>(rng, C, D, 1.0 / std::sqrt(double(D)));
                    std::vector<T> b(static_cast<std::size_t>(C));
                    for (auto& v : b) v = T(std::normal_distribution<double>(0, 1)(rng));
                    Mat<T> S(N, C), P(N, C);
                    ff::scores<T>(X.view(), W.view(), {b.data(), C, 1}, ff::Epilogue::none,
                                  S.v.data(), C, threads);
                    ff::scores<T>(X.view(), W.view(), {b.data(), C, 1}, ff::Epilogue::softmax,
                                  P.v.data(), C, threads);
                    for (std::int64_t i = 0; i < N; ++i) {
                        std::vector<double> s(static_cast<std::size_t>(C));
                        double mx = -INFINITY, z = 0;
                        for (std::int64_t c = 0; c < C; ++c) {
                            double a = double(b[static_cast<std::size_t>(c)]);
                            for (std::int64_t p = 0; p < D; ++p)
                                a += double(X(i, p)) * double(W(c, p));
                            s[static_cast<std::size_t>(c)] = a;
                            mx = std::max(mx, a);
                        }
                        for (double v : s) z += std::exp(v - mx);
                        for (std::int64_t c = 0; c < C; ++c) {
                            CHECK(close(S(i, c), s[static_cast<std::size_t>(c)], tol_for<T>(D)),
                                  "%s scores N=%ld C=%ld D=%ld", name, long(N), long(C), long(D));
                            CHECK(close(P(i, c), std::exp(s[static_cast<std::size_t>(c)] - mx) / z,
                                        tol_for<T>(D)),
                                  "%s softmax N=%ld C=%ld D=%ld", name, long(N), long(C), long(D));
                        }
                    }
                }
}

template <class T>
void test_ce_linear(std::mt19937_64& rng, const char* name) {
    for (std::int64_t N : {0, 1, 7, 97})
        for (std::int64_t C : {2, 10, 19})
            for (std::int64_t D : {3, 64, 130}) {
                const Mat<T> X = random_mat<T>(rng, N, D, 1.0);
                const Mat<T> W = random_mat<T>(rng, C, D, 1.0 / std::sqrt(double(D)));
                std::vector<T> b(static_cast<std::size_t>(C), T(0.1));
                std::vector<std::int64_t> y(static_cast<std::size_t>(std::max<std::int64_t>(N, 1)));
                for (std::int64_t i = 0; i < N; ++i)
                    y[static_cast<std::size_t>(i)] = std::int64_t(rng() % std::uint64_t(C));
                Mat<T> G(N, D);
                std::vector<T> loss(static_cast<std::size_t>(std::max<std::int64_t>(N, 1)));
                ff::ce_grad_linear<T>(X.view(), W.view(), {b.data(), C, 1}, y.data(), G.v.data(), D,
                                      loss.data(), nullptr, 0, 2);
                for (std::int64_t i = 0; i < N; ++i) {
                    std::vector<double> s(static_cast<std::size_t>(C));
                    double mx = -INFINITY, z = 0;
                    for (std::int64_t c = 0; c < C; ++c) {
                        double a = 0.1;
                        for (std::int64_t p = 0; p < D; ++p) a += double(X(i, p)) * double(W(c, p));
                        s[static_cast<std::size_t>(c)] = a;
                        mx = std::max(mx, a);
                    }
                    for (double v : s) z += std::exp(v - mx);
                    const double L = mx + std::log(z) -
                                     s[static_cast<std::size_t>(y[static_cast<std::size_t>(i)])];
                    CHECK(close(loss[static_cast<std::size_t>(i)], L, tol_for<T>(D)), "%s ce loss",
                          name);
                    for (std::int64_t p = 0; p < D; ++p) {
                        double g = 0;
                        for (std::int64_t c = 0; c < C; ++c)
                            g += (std::exp(s[static_cast<std::size_t>(c)] - mx) / z -
                                  (c == y[static_cast<std::size_t>(i)] ? 1 : 0)) *
                                 double(W(c, p));
                        CHECK(close(G(i, p), g, tol_for<T>(D + C)), "%s ce grad N=%ld C=%ld D=%ld",
                              name, long(N), long(C), long(D));
                    }
                }
            }
}

template <class T>
void test_mlp(std::mt19937_64& rng, const char* name) {
    const std::vector<std::vector<std::int64_t>> shapes = {
        {64, 50, 20, 10}, {9, 7, 3}, {130, 16, 4}, {5, 70, 2}};
    for (const auto& sz : shapes)
        for (std::int64_t N : {1, 7, 97}) {
            std::vector<Mat<T>> Ws;
            std::vector<std::vector<T>> bs;
            std::vector<ff::Act> acts;
            for (std::size_t l = 0; l + 1 < sz.size(); ++l) {
                Ws.push_back(random_mat<T>(rng, sz[l], sz[l + 1], 1.5 / std::sqrt(double(sz[l]))));
                bs.emplace_back(static_cast<std::size_t>(sz[l + 1]), T(0.05));
                acts.push_back(l + 2 == sz.size() ? ff::Act::identity : ff::Act(1 + int(l % 3)));
            }
            const auto layers = dense_layers(Ws, bs, acts);
            const std::int64_t D = sz.front(), C = sz.back();
            const Mat<T> X = random_mat<T>(rng, N, D, 1.0);
            const RefNet ref = ref_forward(X, Ws, bs, acts);
            Mat<T> out(N, C), G(N, D), G2(N, D), out2(N, C);
            std::vector<std::int64_t> y(static_cast<std::size_t>(N));
            for (auto& v : y) v = std::int64_t(rng() % std::uint64_t(C));
            std::vector<T> loss(static_cast<std::size_t>(N)), loss2(static_cast<std::size_t>(N));
            const double tol = tol_for<T>(D * 8);
            for (bool lanes : {true, false}) {
                ff::set_lane_steps(lanes);
                Mat<T>& o = lanes ? out : out2;
                Mat<T>& g = lanes ? G : G2;
                ff::mlp_forward<T>(X.view(), layers, ff::Epilogue::none, o.v.data(), C, 2);
                ff::ce_grad_mlp<T>(X.view(), layers, y.data(), g.v.data(), D,
                                   (lanes ? loss : loss2).data(), nullptr, 0, 2);
            }
            ff::set_lane_steps(true);
            // the lane path gives the row path's bits
            CHECK(std::memcmp(out.v.data(), out2.v.data(), sizeof(T) * out.v.size()) == 0,
                  "%s lanes forward bits", name);
            CHECK(std::memcmp(G.v.data(), G2.v.data(), sizeof(T) * G.v.size()) == 0,
                  "%s lanes grad bits", name);
            CHECK(std::memcmp(loss.data(), loss2.data(), sizeof(T) * loss.size()) == 0,
                  "%s lanes loss bits", name);
            const auto& z = ref.acts.back();
            for (std::int64_t i = 0; i < N; ++i) {
                for (std::int64_t c = 0; c < C; ++c)
                    CHECK(close(out(i, c),
                                z[static_cast<std::size_t>(i)][static_cast<std::size_t>(c)], tol),
                          "%s mlp forward", name);
                // reference backprop of P - onehot
                double mx = -INFINITY, s = 0;
                for (double v : z[static_cast<std::size_t>(i)]) mx = std::max(mx, v);
                for (double v : z[static_cast<std::size_t>(i)]) s += std::exp(v - mx);
                std::vector<double> delta(static_cast<std::size_t>(C));
                for (std::int64_t c = 0; c < C; ++c)
                    delta[static_cast<std::size_t>(c)] =
                        std::exp(z[static_cast<std::size_t>(i)][static_cast<std::size_t>(c)] - mx) /
                            s -
                        (c == y[static_cast<std::size_t>(i)] ? 1 : 0);
                for (std::size_t l = Ws.size(); l-- > 0;) {
                    std::vector<double> prev(static_cast<std::size_t>(Ws[l].rows), 0.0);
                    for (std::int64_t k = 0; k < Ws[l].rows; ++k) {
                        for (std::int64_t o = 0; o < Ws[l].cols; ++o)
                            prev[static_cast<std::size_t>(k)] +=
                                delta[static_cast<std::size_t>(o)] * double(Ws[l](k, o));
                        if (l > 0)
                            prev[static_cast<std::size_t>(k)] *=
                                act_grad(acts[l - 1], ref.acts[l - 1][static_cast<std::size_t>(i)]
                                                              [static_cast<std::size_t>(k)]);
                    }
                    delta = prev;
                }
                for (std::int64_t p = 0; p < D; ++p)
                    CHECK(close(G(i, p), delta[static_cast<std::size_t>(p)], tol), "%s mlp grad",
                          name);
            }
        }
}

template <class T>
void test_update_and_reductions(std::mt19937_64& rng, const char* name) {
    for (std::int64_t N : {0, 1, 7, 97})
        for (std::int64_t D : {1, 8, 33})
            for (bool l2 : {false, true}) {
                const Mat<T> X = random_mat<T>(rng, N, D, 1.0), G = random_mat<T>(rng, N, D, 1.0);
                const Mat<T> X0 = random_mat<T>(rng, N, D, 1.0);
                const T lo = T(-1), hi = T(1), alpha = T(0.3), eps = T(0.5);
                Mat<T> O(N, D);
                ff::fused_update<T>(X.view(), G.view(), X0.view(), l2, alpha, eps, {&lo, 1, 0},
                                    {&hi, 1, 0}, T(0), O.v.data(), D, 2);
                for (std::int64_t i = 0; i < N; ++i) {
                    std::vector<double> o(static_cast<std::size_t>(D));
                    double gn = 0, dn = 0;
                    for (std::int64_t j = 0; j < D; ++j) gn += double(G(i, j)) * double(G(i, j));
                    gn = std::sqrt(gn);
                    for (std::int64_t j = 0; j < D; ++j) {
                        const double g = double(G(i, j));
                        double v = double(X(i, j)) + (l2 ? (gn > 0 ? double(alpha) * g / gn : 0.0)
                                                         : double(alpha) * ((g > 0) - (g < 0)));
                        if (!l2)
                            v = std::min(std::max(v, double(X0(i, j)) - double(eps)),
                                         double(X0(i, j)) + double(eps));
                        o[static_cast<std::size_t>(j)] = v;
                        dn += (v - double(X0(i, j))) * (v - double(X0(i, j)));
                    }
                    dn = std::sqrt(dn);
                    for (std::int64_t j = 0; j < D; ++j) {
                        double v = o[static_cast<std::size_t>(j)];
                        if (l2 && dn > double(eps))
                            v = double(X0(i, j)) + (v - double(X0(i, j))) * double(eps) / dn;
                        v = std::min(std::max(v, -1.0), 1.0);
                        CHECK(close(O(i, j), v, tol_for<T>(D)), "%s fused_update l2=%d", name,
                              int(l2));
                    }
                }
                std::vector<T> n2(static_cast<std::size_t>(std::max<std::int64_t>(N, 1))),
                    ni(n2.size());
                std::vector<std::int64_t> idx(n2.size());
                ff::diff_norms<T>(X.view(), X0.view(), n2.data(), ni.data(), 3);
                ff::argmax_rows<T>(X.view(), idx.data(), nullptr, 3);
                for (std::int64_t i = 0; i < N; ++i) {
                    double s = 0, m = 0;
                    std::int64_t best = 0;
                    for (std::int64_t j = 0; j < D; ++j) {
                        const double d = double(X(i, j)) - double(X0(i, j));
                        s += d * d;
                        m = std::max(m, std::abs(d));
                        if (X(i, j) > X(i, best)) best = j;
                    }
                    CHECK(close(n2[static_cast<std::size_t>(i)], std::sqrt(s), tol_for<T>(D)),
                          "%s diff_norms l2", name);
                    CHECK(close(ni[static_cast<std::size_t>(i)], m, tol_for<T>(1)),
                          "%s diff_norms linf", name);
                    CHECK(idx[static_cast<std::size_t>(i)] == best, "%s argmax_rows", name);
                }
                CHECK(ff::all_finite<T>(X.view(), 2), "%s all_finite", name);
            }
    Mat<T> Z(5, 9);
    CHECK(ff::all_finite<T>(Z.view(), 2), "%s all_finite zeros", name);
    Z(3, 7) = std::numeric_limits<T>::quiet_NaN();
    CHECK(!ff::all_finite<T>(Z.view(), 2), "%s all_finite NaN", name);
    Z(3, 7) = -std::numeric_limits<T>::infinity();
    CHECK(!ff::all_finite<T>(Z.view(), 2), "%s all_finite -inf", name);
}

template <class T>
void test_backproject(std::mt19937_64& rng, const char* name) {
    // one identity step: out = (H - b) P
    for (std::int64_t N : {1, 7, 97}) {
        const std::int64_t k = 5, w = 13;
        const Mat<T> H = random_mat<T>(rng, N, k, 1.0), P = random_mat<T>(rng, k, w, 1.0);
        std::vector<T> b(static_cast<std::size_t>(k), T(0.25));
        std::vector<ff::BackStep<T>> steps{{P.view(), {b.data(), k, 1}, ff::Act::identity}};
        Mat<T> O(N, w);
        const std::int64_t clamped =
            ff::backproject<T>(H.view(), steps, T(1e-6), ff::MatView<T>{}, O.v.data(), w, 2);
        CHECK(clamped == 0, "%s backproject clamped", name);
        for (std::int64_t i = 0; i < N; ++i)
            for (std::int64_t j = 0; j < w; ++j) {
                double s = 0;
                for (std::int64_t q = 0; q < k; ++q)
                    s += (double(H(i, q)) - 0.25) * double(P(q, j));
                CHECK(close(O(i, j), s, tol_for<T>(k)), "%s backproject", name);
            }
    }
}

// The margin z_y - max_{c != y} z_c of the reference forward at one row.
template <class T>
double ref_margin(const std::vector<T>& x, const std::vector<Mat<T>>& Ws,
                  const std::vector<std::vector<T>>& bs, const std::vector<ff::Act>& acts,
                  std::int64_t y) {
    Mat<T> row(1, std::int64_t(x.size()));
    for (std::size_t j = 0; j < x.size(); ++j) row.v[j] = x[j];
    const auto z = ref_forward(row, Ws, bs, acts).acts.back()[0];
    double rival = -INFINITY;
    for (std::size_t c = 0; c < z.size(); ++c)
        if (std::int64_t(c) != y) rival = std::max(rival, z[c]);
    return z[static_cast<std::size_t>(y)] - rival;
}

// The shared-window Square loop against the same loop row by row with a full reference forward
// per query: in double the same iterates and query counts (tanh / logistic layers: no exact ties),
// in float the returned margins are the stack's at the returned points; 1 and 3 threads the same
// bits (a row's lanes never depend on its neighbours).
template <class T>
void test_square(std::mt19937_64& rng, const char* name) {
    const std::vector<std::vector<std::int64_t>> shapes = {{12, 9, 4}, {12, 5}, {12, 7, 6, 3}};
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (const auto& sz : shapes)
        for (std::int64_t N : {1, 7, 37}) {
            std::vector<Mat<T>> Ws;
            std::vector<std::vector<T>> bs;
            std::vector<ff::Act> acts;
            for (std::size_t l = 0; l + 1 < sz.size(); ++l) {
                Ws.push_back(random_mat<T>(rng, sz[l], sz[l + 1], 2.0 / std::sqrt(double(sz[l]))));
                bs.emplace_back(static_cast<std::size_t>(sz[l + 1]), T(0.05));
                acts.push_back(l + 2 == sz.size() ? ff::Act::identity
                                                  : (l % 2 ? ff::Act::logistic : ff::Act::tanh));
            }
            const auto layers = dense_layers(Ws, bs, acts);
            const std::int64_t D = sz.front(), C = sz.back(), n_iter = 60;
            Mat<T> X(N, D);
            for (auto& v : X.v) v = T(u(rng));
            std::vector<std::int64_t> y(static_cast<std::size_t>(N)), idx, start{0};
            for (auto& v : y) v = std::int64_t(rng() % std::uint64_t(C));
            std::vector<T> val, lo(static_cast<std::size_t>(D), T(0)),
                hi(static_cast<std::size_t>(D), T(1));
            for (std::int64_t it = 0; it < n_iter; ++it) {
                const std::int64_t k = 1 + std::int64_t(rng() % 4), j0 = std::int64_t(rng() % 9);
                for (std::int64_t e = 0; e < k; ++e) {
                    idx.push_back(j0 + e);
                    val.push_back(T(rng() % 2 ? 0.3 : -0.3));
                }
                start.push_back(std::int64_t(idx.size()));
            }
            std::vector<double> m0(static_cast<std::size_t>(N));
            for (std::int64_t i = 0; i < N; ++i) {
                std::vector<T> x(X.v.begin() + i * D, X.v.begin() + (i + 1) * D);
                m0[static_cast<std::size_t>(i)] = ref_margin(x, Ws, bs, acts, y[i]);
            }
            Mat<T> B1 = X, B3 = X;
            std::vector<double> g1 = m0, g3 = m0;
            std::vector<std::int64_t> q1(static_cast<std::size_t>(N), 0), q3 = q1;
            ff::square_linf_mlp<T>(X.view(), B1.v.data(), D, g1.data(), y.data(), layers,
                                   idx.data(), start.data(), val.data(), n_iter, 5, lo.data(),
                                   hi.data(), q1.data(), 1);
            ff::square_linf_mlp<T>(X.view(), B3.v.data(), D, g3.data(), y.data(), layers,
                                   idx.data(), start.data(), val.data(), n_iter, 5, lo.data(),
                                   hi.data(), q3.data(), 3);
            CHECK(std::memcmp(B1.v.data(), B3.v.data(), sizeof(T) * B1.v.size()) == 0 && q1 == q3 &&
                      std::memcmp(g1.data(), g3.data(), sizeof(double) * g1.size()) == 0,
                  "%s square 1 vs 3 threads", name);
            const double tol = tol_for<T>(D * 4);
            for (std::int64_t i = 0; i < N; ++i) {
                const auto si = static_cast<std::size_t>(i);
                std::vector<T> x0(X.v.begin() + i * D, X.v.begin() + (i + 1) * D),
                    xb = x0, got(B1.v.begin() + i * D, B1.v.begin() + (i + 1) * D);
                if (!(m0[si] > 0)) {
                    CHECK(q1[si] == 0 && got == x0, "%s square: a row out of play was written",
                          name);
                    continue;
                }
                CHECK(
                    close(T(g1[si]), ref_margin(got, Ws, bs, acts, y[i]), tol) && g1[si] <= m0[si],
                    "%s square: the margin returned is not the stack's", name);
                for (std::int64_t j = 0; j < D; ++j)
                    CHECK(got[std::size_t(j)] >= lo[std::size_t(j)] &&
                              got[std::size_t(j)] <= hi[std::size_t(j)] &&
                              std::abs(double(got[std::size_t(j)]) - double(x0[std::size_t(j)])) <=
                                  0.3 + 1e-6,
                          "%s square: outside the box or the ball", name);
                if (sizeof(T) == 4) {  // float: the accept decisions round differently
                    CHECK(q1[si] >= 2 && q1[si] <= n_iter + 6 &&
                              (g1[si] <= 0) == (q1[si] < n_iter + 6),
                          "%s square: queries %lld", name, (long long)q1[si]);
                    continue;
                }
                double best = m0[si];
                std::int64_t q = 5 + n_iter + 1;
                for (std::int64_t it = 0; it < n_iter; ++it) {
                    std::vector<T> xn = xb;
                    for (std::int64_t e = start[std::size_t(it)]; e < start[std::size_t(it) + 1];
                         ++e) {
                        const auto j = std::size_t(idx[std::size_t(e)]);
                        xn[j] = std::min(hi[j], std::max(lo[j], T(x0[j] + val[std::size_t(e)])));
                    }
                    if (xn == xb) continue;
                    const double mn = ref_margin(xn, Ws, bs, acts, y[i]);
                    if (!(mn < best)) continue;
                    best = mn;
                    xb = xn;
                    if (mn <= 0) {
                        q = 5 + it + 2;
                        break;
                    }
                }
                CHECK(got == xb && q1[si] == q, "%s square: row %lld left the reference path", name,
                      (long long)i);
            }
        }
}

template <class T>
void run_all(const char* name) {
    std::mt19937_64 rng(12345);
    CHECK(ff::complete(ff::micro_kernel<T>()), "%s: the table has an empty slot", name);
    test_scores<T>(rng, name);
    test_ce_linear<T>(rng, name);
    test_mlp<T>(rng, name);
    test_update_and_reductions<T>(rng, name);
    test_backproject<T>(rng, name);
    test_square<T>(rng, name);
}

// Stopping a call: a poll that says stop after `after` calls ends parallel_for with
// Interrupted, no task starts after it returns, and the tasks that ran are whole.
struct PollCount {
    int calls = 0, after = 0;
};
bool poll_counted(void* ctx) {
    auto* p = static_cast<PollCount*>(ctx);
    return ++p->calls > p->after;
}

void test_interrupts() {
    for (int threads : {1, 2, 3}) {
        for (int after : {0, 1, 5}) {
            PollCount pc{0, after};
            std::atomic<int> started{0}, finished{0};
            bool thrown = false;
            {
                ff::InterruptScope scope(&poll_counted, &pc, std::chrono::microseconds(0));
                try {
                    ff::parallel_for(10000, threads, [&](std::int64_t, int) {
                        started.fetch_add(1);
                        ff::checkpoint();
                        volatile double x = 0;
                        for (int i = 0; i < 20000; ++i) x = x + 1.0;
                        finished.fetch_add(1);
                    });
                } catch (const ff::Interrupted&) {
                    thrown = true;
                }
            }
            const int s0 = started.load();
            CHECK(thrown, "threads=%d after=%d: parallel_for did not throw Interrupted", threads,
                  after);
            CHECK(s0 < 10000, "threads=%d after=%d: all %d tasks ran", threads, after, s0);
            CHECK(pc.calls >= after + 1, "poll called %d times, wanted > %d", pc.calls, after);
            // nothing runs once the call has returned
            volatile double y = 0;
            for (int i = 0; i < 2000000; ++i) y = y + 1.0;
            CHECK(started.load() == s0, "threads=%d: a task started after the call returned",
                  threads);
            CHECK(finished.load() <= s0, "finished %d > started %d", finished.load(), s0);
        }
        // a poll that never says stop changes nothing; no scope: nothing to stop
        PollCount never{0, 1 << 30};
        std::atomic<int> ran{0};
        {
            ff::InterruptScope scope(&poll_counted, &never, std::chrono::microseconds(0));
            ff::parallel_for(500, threads, [&](std::int64_t, int) {
                ff::checkpoint();
                ran.fetch_add(1);
            });
        }
        CHECK(ran.load() == 500, "threads=%d: %d of 500 tasks ran without a stop", threads,
              ran.load());
        CHECK(!ff::stop_requested(), "a stop outlived its scope");
    }
    // a kernel stopped in its step loop (the fused PGD step of the linear model)
    Mat<double> X(300, 40), W(10, 40), G(300, 40);
    for (auto& v : X.v) v = 0.5;
    for (auto& v : W.v) v = 0.1;
    std::vector<std::int64_t> y(300, 1);
    PollCount now{0, 0};
    bool thrown = false;
    {
        ff::InterruptScope scope(&poll_counted, &now, std::chrono::microseconds(0));
        try {
            ff::scores<double>(X.view(), W.view(), ff::VecView<double>{}, ff::Epilogue::none,
                               G.v.data(), G.ld, 2);
        } catch (const ff::Interrupted&) {
            thrown = true;
        }
    }
    CHECK(thrown, "scores ran to the end under a poll that said stop at once");
}

// forest_predict against a plain walk of randomly grown trees (children after their parent, a
// leaf linking to itself), rows at the thresholds and beside them, a strided view, 1 and 3
// threads: the same labels and the same quotient bits.
void test_forest(std::mt19937_64& rng) {
    const std::int64_t D = 5, C = 3;
    std::uniform_real_distribution<double> u(0.0, 1.0);
    std::vector<ff::TreeNode> nodes;
    std::vector<double> value;
    std::vector<std::int64_t> roots;
    std::vector<int> depth;
    for (int t = 0; t < 9; ++t) {
        const auto root = static_cast<std::int32_t>(nodes.size());
        roots.push_back(root);
        // grow breadth first: a node splits with probability 0.7 down to depth 6
        std::vector<std::pair<std::int32_t, int>> open{{root, 0}};
        nodes.push_back({});
        int deepest = 0;
        for (std::size_t q = 0; q < open.size(); ++q) {
            const auto [id, d] = open[q];
            deepest = std::max(deepest, d);
            if (d < 6 && u(rng) < 0.7) {
                const auto l = static_cast<std::int32_t>(nodes.size());
                nodes.push_back({});
                nodes.push_back({});
                ff::TreeNode& nd = nodes[static_cast<std::size_t>(id)];
                nd.threshold = std::round(u(rng) * 8) / 8;  // shared by many rows
                nd.feature = static_cast<std::int32_t>(rng() % D);
                nd.child[0] = l;
                nd.child[1] = l + 1;
                open.push_back({l, d + 1});
                open.push_back({l + 1, d + 1});
            } else {
                ff::TreeNode& nd = nodes[static_cast<std::size_t>(id)];
                nd.threshold = 0;
                nd.feature = 0;
                nd.child[0] = nd.child[1] = id;
            }
        }
        depth.push_back(deepest);
    }
    for (std::size_t i = 0; i < nodes.size(); ++i)
        for (std::int64_t c = 0; c < C; ++c) value.push_back(std::round(u(rng) * 16) / 16);
    const ff::Forest f{nodes.data(), roots.data(), depth.data(), 9, value.data(), C, 9.0};
    for (std::int64_t N : {0, 1, 7, 64, 65, 200}) {
        Mat<float> X(N, D, 3);
        for (std::int64_t i = 0; i < N; ++i)
            for (std::int64_t j = 0; j < D; ++j) {
                const float g = static_cast<float>(std::round(u(rng) * 8) / 8);
                const int k = static_cast<int>(rng() % 3);  // at a threshold, or one ulp off
                X(i, j) = k == 0 ? g : std::nextafter(g, k == 1 ? -1.0f : 2.0f);
            }
        for (int threads : {1, 3}) {
            std::vector<std::int64_t> label(static_cast<std::size_t>(N) + 1, -1);
            std::vector<double> proba(static_cast<std::size_t>(N * C) + 1, -1);
            ff::forest_predict(X.view(), f, label.data(), proba.data(), C, threads);
            for (std::int64_t i = 0; i < N; ++i) {
                std::vector<double> acc(C, 0.0);
                for (int t = 0; t < 9; ++t) {
                    std::int32_t at = static_cast<std::int32_t>(roots[static_cast<std::size_t>(t)]);
                    while (nodes[static_cast<std::size_t>(at)].child[0] != at) {
                        const ff::TreeNode& nd = nodes[static_cast<std::size_t>(at)];
                        at = double(X(i, nd.feature)) <= nd.threshold ? nd.child[0] : nd.child[1];
                    }
                    for (std::int64_t c = 0; c < C; ++c)
                        acc[static_cast<std::size_t>(c)] +=
                            value[static_cast<std::size_t>(at * C + c)];
                }
                std::int64_t best = 0;
                for (std::int64_t c = 0; c < C; ++c) {
                    acc[static_cast<std::size_t>(c)] /= 9.0;
                    if (acc[static_cast<std::size_t>(c)] > acc[static_cast<std::size_t>(best)])
                        best = c;
                }
                CHECK(label[static_cast<std::size_t>(i)] == best, "forest label N=%ld row %ld",
                      static_cast<long>(N), static_cast<long>(i));
                CHECK(std::memcmp(acc.data(), proba.data() + i * C, sizeof(double) * C) == 0,
                      "forest proba bits N=%ld row %ld", static_cast<long>(N),
                      static_cast<long>(i));
            }
            CHECK(label[static_cast<std::size_t>(N)] == -1, "forest wrote past the labels");
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    const std::string want = argc > 1 ? argv[1] : "generic";
    ff::Isa isa;
    if (want == "generic") {
        isa = ff::Isa::generic;
    } else if (want == "avx2") {
        isa = ff::Isa::avx2;
    } else if (want == "avx512") {
        isa = ff::Isa::avx512;
    } else {
        std::fprintf(stderr, "usage: %s generic|avx2|avx512\n", argv[0]);
        return 2;
    }
    if (!ff::force_isa(isa)) {
        std::printf("%s: not available on this CPU, skipped\n", want.c_str());
        return 77;
    }
    CHECK(ff::active_isa() == isa, "force_isa(%s) did not take", want.c_str());
    run_all<float>((want + " float").c_str());
    run_all<double>((want + " double").c_str());
    test_interrupts();
    std::mt19937_64 rng(20261202);
    test_forest(rng);
    std::printf("%s: %d checks, %d failed\n", want.c_str(), g_checks, g_failures);
    return g_failures == 0 ? 0 : 1;
}
