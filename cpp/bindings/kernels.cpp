// Bindings of the CPU kernels. Arguments are checked with the GIL held; the GIL is released
// around each kernel, which only touches the views built here, and the py::array arguments
// keep their buffers alive for the whole call.
#include "fastfool/kernels.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "pybind.hpp"

namespace fastfool::bind {
namespace {

bool is_f32(const py::array& a) { return a.dtype().equal(py::dtype::of<float>()); }
bool is_f64(const py::array& a) { return a.dtype().equal(py::dtype::of<double>()); }

[[noreturn]] void bad_dtype(const py::array& a, const char* name) {
    throw py::type_error(std::string(name) + ": expected float32 or float64, got " +
                         std::string(py::str(a.dtype())));
}

Epilogue to_epilogue(int e) {
    if (e < 0 || e > 2)
        throw py::value_error("epilogue: expected 0 (none), 1 (softmax) or 2 (log_softmax)");
    return static_cast<Epilogue>(e);
}

Act to_act(int a) {
    if (a < 0 || a > 3) throw py::value_error("activation code: expected 0..3");
    return static_cast<Act>(a);
}

void check_cols(std::int64_t got, std::int64_t want, const char* name, const char* what) {
    if (got != want)
        throw py::value_error(std::string(name) + ": has " + std::to_string(got) + " columns but " +
                              what + " " + std::to_string(want));
}

const std::int64_t* labels(const py::array& y, std::int64_t n, std::int64_t C) {
    if (!y.dtype().equal(py::dtype::of<std::int64_t>()))
        throw py::type_error("y: expected int64 class indices, got " +
                             std::string(py::str(y.dtype())));
    if (y.ndim() != 1 || y.shape(0) != n)
        throw py::value_error("y: expected shape (" + std::to_string(n) + ",), got " +
                              shape_str(y));
    if (n > 1 && y.strides(0) != static_cast<py::ssize_t>(sizeof(std::int64_t)))
        throw py::value_error("y: must be contiguous");
    const auto* p = static_cast<const std::int64_t*>(y.data());
    for (std::int64_t i = 0; i < n; ++i)
        if (p[i] < 0 || p[i] >= C)
            throw py::value_error("y: class index " + std::to_string(p[i]) + " at row " +
                                  std::to_string(i) + " is outside [0, " + std::to_string(C) + ")");
    return p;
}

template <class T>
void scores_impl(const py::array& X, const py::array& W, const py::object& b, int ep,
                 const py::array& out, int threads) {
    auto x = in_mat<T>(X, "X");
    auto w = in_mat<T>(W, "W");
    check_cols(x.cols, w.cols, "X", "W has");
    auto bv = in_vec<T>(b, w.rows, "b");
    std::int64_t lds;
    T* s = out_mat<T>(out, x.rows, w.rows, lds, "out");
    const Epilogue e = to_epilogue(ep);
    KernelCall nogil;
    scores<T>(x, w, bv, e, s, lds, threads);
}

template <class T>
void ce_linear_impl(const py::array& X, const py::array& W, const py::object& b, const py::array& y,
                    const py::array& G, const py::object& loss, const py::object& prob,
                    int threads) {
    auto x = in_mat<T>(X, "X");
    auto w = in_mat<T>(W, "W");
    check_cols(x.cols, w.cols, "X", "W has");
    auto bv = in_vec<T>(b, w.rows, "b");
    const std::int64_t* yp = labels(y, x.rows, w.rows);
    std::int64_t ldg, ldp = 0;
    T* g = out_mat<T>(G, x.rows, x.cols, ldg, "grad");
    T* l = out_vec<T>(loss, x.rows, "loss");
    T* p = prob.is_none()
               ? nullptr
               : out_mat<T>(py::reinterpret_borrow<py::array>(prob), x.rows, w.rows, ldp, "prob");
    KernelCall nogil;
    ce_grad_linear<T>(x, w, bv, yp, g, ldg, l, p, ldp, threads);
}

// The fused step's arguments (the same checks as fused_update); out may be X itself.
template <class T>
StepSpec<T> step_spec(const MatView<T>& x, const py::array& X0, bool l2, double alpha, double eps,
                      const py::object& lo, const py::object& hi, double quantum,
                      const py::array& out, int steps = 1) {
    StepSpec<T> st;
    if (steps < 1) throw py::value_error("steps: must be >= 1, got " + std::to_string(steps));
    st.steps = steps;
    st.X0 = in_mat<T>(X0, "x0");
    if (st.X0.rows != x.rows || st.X0.cols != x.cols)
        throw py::value_error("x0: expected shape (" + std::to_string(x.rows) + ", " +
                              std::to_string(x.cols) + "), got " + shape_str(X0));
    if (!(eps >= 0.0))
        throw py::value_error("eps: must be >= 0 (inf allowed), not NaN or negative");
    if (!std::isfinite(alpha)) throw py::value_error("step: must be finite");
    if (!(quantum >= 0.0) || !std::isfinite(quantum))
        throw py::value_error("quantum: must be a finite value >= 0 (0 = no quantisation)");
    auto bound = [&](const py::object& o, const char* name) -> VecView<T> {
        if (o.is_none()) return {};
        auto a = py::reinterpret_borrow<py::array>(o);
        check_dtype<T>(a, name);
        if (a.ndim() == 0) return {static_cast<const T*>(a.data()), x.cols, 0};
        return in_vec<T>(o, x.cols, name);
    };
    st.lo = bound(lo, "lo");
    st.hi = bound(hi, "hi");
    st.l2 = l2;
    st.alpha = static_cast<T>(alpha);
    st.eps = static_cast<T>(eps);
    st.quantum = static_cast<T>(quantum);
    st.out = out_mat<T>(out, x.rows, x.cols, st.ldo, "out");
    return st;
}

template <class T>
void ce_step_linear_impl(const py::array& X, const py::array& W, const py::object& b,
                         const py::array& y, const py::array& X0, bool l2, double alpha, double eps,
                         const py::object& lo, const py::object& hi, double quantum,
                         const py::array& out, const py::object& loss, const py::object& prob,
                         int threads, int steps) {
    auto x = in_mat<T>(X, "X");
    auto w = in_mat<T>(W, "W");
    check_cols(x.cols, w.cols, "X", "W has");
    auto bv = in_vec<T>(b, w.rows, "b");
    const std::int64_t* yp = labels(y, x.rows, w.rows);
    const StepSpec<T> st = step_spec<T>(x, X0, l2, alpha, eps, lo, hi, quantum, out, steps);
    std::int64_t ldp = 0;
    T* l = out_vec<T>(loss, x.rows, "loss");
    T* p = prob.is_none()
               ? nullptr
               : out_mat<T>(py::reinterpret_borrow<py::array>(prob), x.rows, w.rows, ldp, "prob");
    KernelCall nogil;
    ce_grad_linear<T>(x, w, bv, yp, nullptr, 0, l, p, ldp, threads, &st);
}

template <class T>
std::vector<Dense<T>> dense_layers(std::int64_t in, const std::vector<py::array>& Ws,
                                   const std::vector<py::object>& bs,
                                   const std::vector<int>& acts) {
    if (Ws.empty()) throw py::value_error("weights: need at least one layer");
    if (bs.size() != Ws.size() || acts.size() != Ws.size())
        throw py::value_error("weights, biases and activations must have the same length");
    std::vector<Dense<T>> layers;
    for (std::size_t i = 0; i < Ws.size(); ++i) {
        const std::string wn = "weights[" + std::to_string(i) + "]";
        auto w = in_mat<T>(Ws[i], wn.c_str());
        if (w.rows != in)
            throw py::value_error(wn + ": expected " + std::to_string(in) +
                                  " input rows, got shape " + shape_str(Ws[i]));
        const std::string bn = "biases[" + std::to_string(i) + "]";
        layers.push_back({w, in_vec<T>(bs[i], w.cols, bn.c_str()), to_act(acts[i])});
        in = w.cols;
    }
    return layers;
}

// A dense stack whose last layer produces the logits (identity activation).
template <class T>
std::vector<Dense<T>> logit_layers(std::int64_t in, const std::vector<py::array>& Ws,
                                   const std::vector<py::object>& bs,
                                   const std::vector<int>& acts) {
    auto layers = dense_layers<T>(in, Ws, bs, acts);
    if (layers.back().act != Act::identity)
        throw py::value_error("activations: the last layer must be identity (it produces logits)");
    return layers;
}

template <class T>
void mlp_forward_impl(const py::array& X, const std::vector<py::array>& Ws,
                      const std::vector<py::object>& bs, const std::vector<int>& acts, int ep,
                      const py::array& out, int threads) {
    auto x = in_mat<T>(X, "X");
    auto layers = dense_layers<T>(x.cols, Ws, bs, acts);
    std::int64_t ldo;
    T* o = out_mat<T>(out, x.rows, layers.back().W.cols, ldo, "out");
    const Epilogue e = to_epilogue(ep);
    KernelCall nogil;
    mlp_forward<T>(x, layers, e, o, ldo, threads);
}

template <class T>
void ce_mlp_impl(const py::array& X, const std::vector<py::array>& Ws,
                 const std::vector<py::object>& bs, const std::vector<int>& acts,
                 const py::array& y, const py::array& G, const py::object& loss,
                 const py::object& prob, int threads) {
    auto x = in_mat<T>(X, "X");
    auto layers = logit_layers<T>(x.cols, Ws, bs, acts);
    const std::int64_t C = layers.back().W.cols;
    const std::int64_t* yp = labels(y, x.rows, C);
    std::int64_t ldg, ldp = 0;
    T* g = out_mat<T>(G, x.rows, x.cols, ldg, "grad");
    T* l = out_vec<T>(loss, x.rows, "loss");
    T* p = prob.is_none()
               ? nullptr
               : out_mat<T>(py::reinterpret_borrow<py::array>(prob), x.rows, C, ldp, "prob");
    KernelCall nogil;
    ce_grad_mlp<T>(x, layers, yp, g, ldg, l, p, ldp, threads);
}

template <class T>
void ce_step_mlp_impl(const py::array& X, const std::vector<py::array>& Ws,
                      const std::vector<py::object>& bs, const std::vector<int>& acts,
                      const py::array& y, const py::array& X0, bool l2, double alpha, double eps,
                      const py::object& lo, const py::object& hi, double quantum,
                      const py::array& out, const py::object& loss, const py::object& prob,
                      int threads, int steps, const py::object& final_prob) {
    auto x = in_mat<T>(X, "X");
    auto layers = logit_layers<T>(x.cols, Ws, bs, acts);
    const std::int64_t C = layers.back().W.cols;
    const std::int64_t* yp = labels(y, x.rows, C);
    StepSpec<T> st = step_spec<T>(x, X0, l2, alpha, eps, lo, hi, quantum, out, steps);
    if (!final_prob.is_none())
        st.final_prob = out_mat<T>(py::reinterpret_borrow<py::array>(final_prob), x.rows, C, st.ldf,
                                   "final_prob");
    std::int64_t ldp = 0;
    T* l = out_vec<T>(loss, x.rows, "loss");
    T* p = prob.is_none()
               ? nullptr
               : out_mat<T>(py::reinterpret_borrow<py::array>(prob), x.rows, C, ldp, "prob");
    KernelCall nogil;
    ce_grad_mlp<T>(x, layers, yp, nullptr, 0, l, p, ldp, threads, &st);
}

template <class T>
void vjp_impl(const py::array& X, const std::vector<py::array>& Ws,
              const std::vector<py::object>& bs, const std::vector<int>& acts, const py::array& V,
              const py::array& G, const py::object& logits, int threads) {
    auto x = in_mat<T>(X, "X");
    auto layers = logit_layers<T>(x.cols, Ws, bs, acts);
    const std::int64_t C = layers.back().W.cols;
    auto v = in_mat<T>(V, "V");
    if (v.rows != x.rows || v.cols != C)
        throw py::value_error("V: expected shape (" + std::to_string(x.rows) + ", " +
                              std::to_string(C) + "), got " + shape_str(V));
    std::int64_t ldg, ldl = 0;
    T* g = out_mat<T>(G, x.rows, x.cols, ldg, "grad");
    T* l = logits.is_none()
               ? nullptr
               : out_mat<T>(py::reinterpret_borrow<py::array>(logits), x.rows, C, ldl, "logits");
    KernelCall nogil;
    mlp_vjp<T>(x, layers, v, g, ldg, l, ldl, threads);
}

template <class T>
std::int64_t backproject_impl(const py::array& H, const std::vector<py::array>& Ps,
                              const std::vector<py::object>& bs, const std::vector<int>& acts,
                              double margin, const py::object& base, const py::array& out,
                              int threads) {
    auto h = in_mat<T>(H, "H");
    if (Ps.empty()) throw py::value_error("pinvs: need at least one step");
    if (bs.size() != Ps.size() || acts.size() != Ps.size())
        throw py::value_error("pinvs, biases and activations must have the same length");
    if (!(margin > 0.0 && margin < 0.5))
        throw py::value_error("margin: must be in (0, 0.5), got " + std::to_string(margin));
    std::vector<BackStep<T>> steps;
    std::int64_t k = h.cols;
    for (std::size_t i = 0; i < Ps.size(); ++i) {
        const std::string pn = "pinvs[" + std::to_string(i) + "]";
        auto p = in_mat<T>(Ps[i], pn.c_str());
        if (p.rows != k)
            throw py::value_error(pn + ": expected " + std::to_string(k) + " rows, got shape " +
                                  shape_str(Ps[i]));
        const Act a = to_act(acts[i]);
        if (a == Act::relu)
            throw py::value_error("activations[" + std::to_string(i) + "]: relu is not invertible");
        const std::string bn = "biases[" + std::to_string(i) + "]";
        steps.push_back({p, in_vec<T>(bs[i], k, bn.c_str()), a});
        k = p.cols;
    }
    MatView<T> bv{};
    if (!base.is_none()) {
        auto ba = py::reinterpret_borrow<py::array>(base);
        bv = in_mat<T>(ba, "base");
        if (bv.rows != h.rows || bv.cols != k)
            throw py::value_error("base: expected shape (" + std::to_string(h.rows) + ", " +
                                  std::to_string(k) + "), got " + shape_str(ba));
    }
    std::int64_t ldo;
    T* o = out_mat<T>(out, h.rows, k, ldo, "out");
    KernelCall nogil;
    return backproject<T>(h, steps, static_cast<T>(margin), bv, o, ldo, threads);
}

template <class T>
void update_impl(const py::array& X, const py::array& G, const py::array& X0, bool l2, double alpha,
                 double eps, const py::object& lo, const py::object& hi, double quantum,
                 const py::array& out, int threads) {
    auto x = in_mat<T>(X, "x");
    auto g = in_mat<T>(G, "grad");
    if (g.rows != x.rows || g.cols != x.cols)
        throw py::value_error("grad: expected shape " + shape_str(X) + ", got " + shape_str(G));
    const StepSpec<T> st = step_spec<T>(x, X0, l2, alpha, eps, lo, hi, quantum, out);
    KernelCall nogil;
    fused_update<T>(x, g, st.X0, st.l2, st.alpha, st.eps, st.lo, st.hi, st.quantum, st.out, st.ldo,
                    threads);
}

template <class T>
void norms_impl(const py::array& A, const py::array& B, const py::object& l2,
                const py::object& linf, int threads, const py::object& amax) {
    auto a = in_mat<T>(A, "A");
    auto b = in_mat<T>(B, "B");
    if (a.rows != b.rows || a.cols != b.cols)
        throw py::value_error("B: expected shape " + shape_str(A) + ", got " + shape_str(B));
    T* p2 = out_vec<T>(l2, a.rows, "l2");
    T* pi = out_vec<T>(linf, a.rows, "linf");
    T* pm = out_vec<T>(amax, a.rows, "amax");
    KernelCall nogil;
    diff_norms<T>(a, b, p2, pi, threads, pm);
}

template <class T>
void argmax_impl(const py::array& P, const py::array& idx, const py::object& val, int threads) {
    auto p = in_mat<T>(P, "P");
    if (p.cols < 1 && p.rows > 0) throw py::value_error("P: needs at least one column");
    if (idx.dtype().kind() != 'i' || idx.itemsize() != 8)
        throw py::type_error("idx: expected int64 values, got " +
                             std::string(py::str(idx.dtype())));
    if (idx.ndim() != 1 || idx.shape(0) != p.rows)
        throw py::value_error("idx: expected shape (" + std::to_string(p.rows) + ",), got " +
                              shape_str(idx));
    if (!idx.writeable()) throw py::value_error("idx: array is read-only");
    if (p.rows > 1 && idx.strides(0) != 8) throw py::value_error("idx: must be contiguous");
    auto* pi = static_cast<std::int64_t*>(const_cast<void*>(idx.data()));
    T* pv = out_vec<T>(val, p.rows, "val");
    KernelCall nogil;
    argmax_rows<T>(p, pi, pv, threads);
}

// A contiguous int64 vector of n values (an input), or null for None when `optional`.
const std::int64_t* index_vec(const py::object& o, std::int64_t n, const char* name,
                              bool optional) {
    if (o.is_none()) {
        if (optional) return nullptr;
        throw py::type_error(std::string(name) + ": expected an int64 array, got None");
    }
    auto a = py::reinterpret_borrow<py::array>(o);
    check_dtype<std::int64_t>(a, name);
    if (a.ndim() != 1 || a.shape(0) != n)
        throw py::value_error(std::string(name) + ": expected shape (" + std::to_string(n) +
                              ",), got " + shape_str(a));
    if (n > 1 && a.strides(0) != 8)
        throw py::value_error(std::string(name) + ": must be contiguous");
    return static_cast<const std::int64_t*>(a.data());
}

template <class T>
void max_abs_impl(const py::array& X, const py::array& out, int threads) {
    auto x = in_mat<T>(X, "X");
    T* po = out_vec<T>(out, x.rows, "out");
    KernelCall nogil;
    max_abs_rows<T>(x, po, threads);
}

template <class T>
void top2_impl(const py::array& S, const py::object& dup, const py::array& idx,
               const py::array& top, const py::array& second, int threads) {
    auto s = in_mat<T>(S, "S");
    if (s.cols < 1 && s.rows > 0) throw py::value_error("S: needs at least one column");
    const std::int64_t* pd = index_vec(dup, s.cols, "dup", true);
    if (pd)
        for (std::int64_t j = 0; j < s.cols; ++j)
            if (pd[j] < 0 || pd[j] >= s.cols)
                throw py::value_error("dup: values must be class indices in [0, " +
                                      std::to_string(s.cols) + ")");
    auto* pi = out_vec<std::int64_t>(idx, s.rows, "idx");
    double* pt = out_vec<double>(top, s.rows, "top");
    double* ps = out_vec<double>(second, s.rows, "second");
    KernelCall nogil;
    top2_rows<T>(s, pd, pi, pt, ps, threads);
}

template <class T>
void dlr_impl(const py::array& S, const py::array& y, const py::object& t, const py::array& loss,
              const py::array& V, int threads) {
    auto s = in_mat<T>(S, "S");
    const std::int64_t need = t.is_none() ? 3 : 4;
    if (s.rows > 0 && s.cols < need)
        throw py::value_error("S: the DLR loss needs at least " + std::to_string(need) +
                              " classes, got " + std::to_string(s.cols));
    const std::int64_t* py_ = index_vec(y, s.rows, "y", false);
    const std::int64_t* pt = index_vec(t, s.rows, "t", true);
    for (std::int64_t i = 0; i < s.rows; ++i)
        if (py_[i] < 0 || py_[i] >= s.cols || (pt && (pt[i] < 0 || pt[i] >= s.cols)))
            throw py::value_error("y, t: values must be class indices in [0, " +
                                  std::to_string(s.cols) + ")");
    double* pl = out_vec<double>(loss, s.rows, "loss");
    std::int64_t ldv = 0;
    T* pv = out_mat<T>(V, s.rows, s.cols, ldv, "V");
    KernelCall nogil;
    dlr_rows<T>(s, py_, pt, pl, pv, ldv, threads);
}

template <class T>
void softmax_at_impl(const py::array& S, const py::array& idx, const py::array& out, int threads) {
    auto s = in_mat<T>(S, "S");
    if (s.cols < 1 && s.rows > 0) throw py::value_error("S: needs at least one column");
    const std::int64_t* pi = index_vec(idx, s.rows, "idx", false);
    for (std::int64_t i = 0; i < s.rows; ++i)
        if (pi[i] < 0 || pi[i] >= s.cols)
            throw py::value_error("idx: values must be column indices in [0, " +
                                  std::to_string(s.cols) + "), got " + std::to_string(pi[i]) +
                                  " in row " + std::to_string(i));
    double* po = out_vec<double>(out, s.rows, "out");
    KernelCall nogil;
    softmax_at<T>(s, pi, po, threads);
}

template <class T>
bool finite_impl(const py::array& X, int threads) {
    auto x = in_mat<T>(X, "X");
    KernelCall nogil;
    return all_finite<T>(x, threads);
}

// A float64 vector of n values with unit stride (None: nullptr).
const double* unit_vec(const py::object& o, std::int64_t n, const char* name) {
    auto v = in_vec<double>(o, n, name);
    if (v.data && n > 1 && v.stride != 1)
        throw py::value_error(std::string(name) + ": must be contiguous");
    return v.data;
}

void project_plane_impl(const py::array& X, const py::array& W, const py::array& b,
                        const py::object& lo, const py::object& hi, int norm, const py::array& out,
                        int threads) {
    auto x = in_mat<double>(X, "X");
    auto w = in_mat<double>(W, "W");
    if (w.rows != x.rows || w.cols != x.cols)
        throw py::value_error("W: expected the shape of X (" + std::to_string(x.rows) + ", " +
                              std::to_string(x.cols) + "), got " + shape_str(W));
    if (norm != 0 && norm != 1 && norm != 2)
        throw py::value_error("norm: expected 0 (L-inf), 1 or 2, got " + std::to_string(norm));
    const double* pb = unit_vec(b, x.rows, "b");
    const double* pl = unit_vec(lo, x.cols, "lo");
    const double* ph = unit_vec(hi, x.cols, "hi");
    std::int64_t ldo = 0;
    double* po = out_mat<double>(out, x.rows, x.cols, ldo, "out");
    KernelCall nogil;  // views checked above; the arrays stay alive in the caller's frame
    project_plane(x, w, pb, pl, ph, norm, po, ldo, threads);
}

void fab_step_impl(const py::array& X, const py::array& X0, const py::array& W, const py::array& b,
                   const py::object& lo, const py::object& hi, int norm, double eta,
                   double alpha_max, const py::array& reach, const py::array& out, int threads) {
    auto x = in_mat<double>(X, "X");
    auto x0 = in_mat<double>(X0, "X0");
    auto w = in_mat<double>(W, "W");
    for (const auto* v : {&x0, &w})
        if (v->rows != x.rows || v->cols != x.cols)
            throw py::value_error("X0, W: expected the shape of X (" + std::to_string(x.rows) +
                                  ", " + std::to_string(x.cols) + ")");
    if (norm != 0 && norm != 1 && norm != 2)
        throw py::value_error("norm: expected 0 (L-inf), 1 or 2, got " + std::to_string(norm));
    if (!(eta > 0) || !std::isfinite(eta)) throw py::value_error("eta: must be > 0 and finite");
    if (!(alpha_max >= 0 && alpha_max <= 1)) throw py::value_error("alpha_max: must lie in [0, 1]");
    const double* pb = unit_vec(b, x.rows, "b");
    const double* pl = unit_vec(lo, x.cols, "lo");
    const double* ph = unit_vec(hi, x.cols, "hi");
    const double* pr = unit_vec(reach, x.rows, "reach");
    std::int64_t ldo = 0;
    double* po = out_mat<double>(out, x.rows, x.cols, ldo, "out");
    KernelCall nogil;  // views checked above; the arrays stay alive in the caller's frame
    fab_step(x, x0, w, pb, pl, ph, norm, eta, alpha_max, pr, po, ldo, threads);
}

template <class T>
void square_impl(const py::array& X, const py::array& Xb, const py::array& margin,
                 const py::array& y, const std::vector<py::array>& Ws,
                 const std::vector<py::object>& bs, const std::vector<int>& acts,
                 const py::array& idx, const py::array& start, const py::array& val, int it0,
                 const py::object& lo, const py::object& hi, const py::array& queries,
                 int threads) {
    auto x = in_mat<T>(X, "X");
    auto layers = logit_layers<T>(x.cols, Ws, bs, acts);
    const std::int64_t C = layers.back().W.cols;
    const std::int64_t* yp = labels(y, x.rows, C);
    std::int64_t ldb = 0;
    T* pb = out_mat<T>(Xb, x.rows, x.cols, ldb, "Xb");
    double* pm = out_vec<double>(margin, x.rows, "margin");
    auto* pq = out_vec<std::int64_t>(queries, x.rows, "queries");
    check_dtype<std::int64_t>(start, "start");
    if (start.ndim() != 1 || start.shape(0) < 1)
        throw py::value_error("start: expected a 1-D array of n_iter + 1 offsets");
    const std::int64_t n_iter = start.shape(0) - 1;
    const std::int64_t* ps = index_vec(start, n_iter + 1, "start", false);
    check_dtype<std::int64_t>(idx, "idx");
    if (idx.ndim() != 1) throw py::value_error("idx: expected a 1-D array");
    const std::int64_t ne = idx.shape(0);
    const std::int64_t* pi = index_vec(idx, ne, "idx", false);
    auto v = in_vec<T>(val, ne, "val");
    if (ne > 1 && v.stride != 1) throw py::value_error("val: must be contiguous");
    if (ps[0] != 0 || ps[n_iter] != ne)
        throw py::value_error("start: must run from 0 to the length of idx");
    for (std::int64_t it = 0; it < n_iter; ++it)
        if (ps[it + 1] < ps[it]) throw py::value_error("start: offsets must not decrease");
    for (std::int64_t e = 0; e < ne; ++e)
        if (pi[e] < 0 || pi[e] >= x.cols)
            throw py::value_error("idx: feature indices must lie in [0, " + std::to_string(x.cols) +
                                  ")");
    if (it0 < 0) throw py::value_error("it0: must be >= 0");
    auto l = in_vec<T>(lo, x.cols, "lo");
    auto h = in_vec<T>(hi, x.cols, "hi");
    for (const auto* b : {&l, &h})
        if (b->data && x.cols > 1 && b->stride != 1)
            throw py::value_error("lo, hi: must be contiguous");
    KernelCall nogil;
    square_linf_mlp<T>(x, pb, ldb, pm, yp, layers, pi, ps, v.data, n_iter, it0, l.data, h.data, pq,
                       threads);
}

// A tree ensemble packed once for forest_predict: scikit-learn's per-tree arrays (concatenated,
// tree t's nodes at [offsets[t], offsets[t + 1]), children local to the tree, -1 at a leaf)
// are checked here - children after their parent inside the tree, features in range - so the
// packed trees are finite and every walk stays in bounds.
class PackedForest {
public:
    PackedForest(const py::array& feature, const py::array& threshold, const py::array& left,
                 const py::array& right, const py::array& value, const py::array& offsets,
                 std::int64_t features, double divisor) {
        check_dtype<std::int64_t>(offsets, "offsets");
        if (offsets.ndim() != 1 || offsets.shape(0) < 1)
            throw py::value_error("offsets: expected a 1-D array of trees + 1 offsets");
        const std::int64_t T = offsets.shape(0) - 1;
        const std::int64_t* po = index_vec(offsets, T + 1, "offsets", false);
        check_dtype<std::int64_t>(feature, "feature");
        if (feature.ndim() != 1) throw py::value_error("feature: expected a 1-D array");
        const std::int64_t n = feature.shape(0);
        const std::int64_t* pf = index_vec(feature, n, "feature", false);
        const std::int64_t* pl = index_vec(left, n, "left", false);
        const std::int64_t* pr = index_vec(right, n, "right", false);
        const double* pt = unit_vec(threshold, n, "threshold");
        auto v = in_mat<double>(value, "value");
        if (v.rows != n)
            throw py::value_error("value: expected " + std::to_string(n) + " rows, got " +
                                  shape_str(value));
        if (v.cols < 1) throw py::value_error("value: needs at least one class column");
        if (features < 0) throw py::value_error("features: must be >= 0");
        if (!(divisor > 0) || !std::isfinite(divisor))
            throw py::value_error("divisor: must be a positive finite number");
        if (n >= (std::int64_t(1) << 31))
            throw py::value_error("feature: more than 2**31 - 1 nodes");
        if (po[0] != 0 || po[T] != n)
            throw py::value_error("offsets: must run from 0 to the number of nodes");
        nodes_.resize(static_cast<std::size_t>(n));
        roots_.resize(static_cast<std::size_t>(T));
        depth_.assign(static_cast<std::size_t>(T), 0);
        std::vector<int> d(static_cast<std::size_t>(n), 0);
        for (std::int64_t t = 0; t < T; ++t) {
            const std::int64_t a = po[t], e = po[t + 1];
            if (e <= a) throw py::value_error("offsets: every tree needs at least one node");
            roots_[t] = a;
            for (std::int64_t i = a; i < e; ++i) {
                TreeNode& nd = nodes_[i];
                nd.threshold = pt[i];
                nd.pad = 0;
                const std::int64_t li = pl[i], ri = pr[i];
                const auto at = [&] {
                    return " at node " + std::to_string(i - a) + " of tree " + std::to_string(t);
                };
                if (li == -1 || ri == -1) {
                    if (li != ri) throw py::value_error("left, right: one child is -1" + at());
                    nd.feature = 0;
                    nd.child[0] = nd.child[1] = static_cast<std::int32_t>(i);
                    continue;
                }
                if (li <= i - a || ri <= i - a || li >= e - a || ri >= e - a)
                    throw py::value_error(
                        "left, right: children must come after their parent "
                        "inside the tree" +
                        at());
                if (pf[i] < 0 || pf[i] >= features)
                    throw py::value_error("feature: " + std::to_string(pf[i]) + at() +
                                          " is outside [0, " + std::to_string(features) + ")");
                if (!(pt[i] == pt[i])) throw py::value_error("threshold: NaN" + at());
                nd.feature = static_cast<std::int32_t>(pf[i]);
                nd.child[0] = static_cast<std::int32_t>(a + li);
                nd.child[1] = static_cast<std::int32_t>(a + ri);
                d[a + li] = std::max(d[a + li], d[i] + 1);
                d[a + ri] = std::max(d[a + ri], d[i] + 1);
                depth_[t] = std::max(depth_[t], d[i] + 1);
            }
        }
        value_.resize(static_cast<std::size_t>(n * v.cols));
        for (std::int64_t i = 0; i < n; ++i)
            for (std::int64_t c = 0; c < v.cols; ++c) value_[i * v.cols + c] = v(i, c);
        features_ = features;
        f_ = Forest{nodes_.data(), roots_.data(), depth_.data(), T, value_.data(), v.cols, divisor};
    }

    void predict(const py::array& X, const py::array& label, const py::object& proba,
                 int threads) const {
        check_threads(threads);
        auto x = in_mat<float>(X, "X");
        check_cols(x.cols, features_, "X", "the trees were fitted on");
        auto* pl = out_vec<std::int64_t>(label, x.rows, "label");
        std::int64_t ldp = 0;
        double* pp = nullptr;
        if (!proba.is_none())
            pp = out_mat<double>(py::reinterpret_borrow<py::array>(proba), x.rows, f_.classes, ldp,
                                 "proba");
        KernelCall nogil;
        forest_predict(x, f_, pl, pp, ldp, threads);
    }

    std::int64_t trees() const { return f_.trees; }
    std::int64_t classes() const { return f_.classes; }
    std::int64_t features() const { return features_; }
    std::vector<int> depths() const { return depth_; }

private:
    std::vector<TreeNode> nodes_;
    std::vector<std::int64_t> roots_;
    std::vector<int> depth_;
    std::vector<double> value_;
    std::int64_t features_ = 0;
    Forest f_;
};

}  // namespace

void bind_kernels(py::module_& m) {
    m.def(
        "scores",
        [](const py::array& X, const py::array& W, const py::object& b, int ep,
           const py::array& out, int threads) {
            check_threads(threads);
            if (is_f32(X)) return scores_impl<float>(X, W, b, ep, out, threads);
            if (is_f64(X)) return scores_impl<double>(X, W, b, ep, out, threads);
            bad_dtype(X, "X");
        },
        py::arg("X"), py::arg("W"), py::arg("b"), py::arg("epilogue"), py::arg("out"),
        py::arg("threads"));
    m.def(
        "ce_grad_linear",
        [](const py::array& X, const py::array& W, const py::object& b, const py::array& y,
           const py::array& G, const py::object& loss, const py::object& prob, int threads) {
            check_threads(threads);
            if (is_f32(X)) return ce_linear_impl<float>(X, W, b, y, G, loss, prob, threads);
            if (is_f64(X)) return ce_linear_impl<double>(X, W, b, y, G, loss, prob, threads);
            bad_dtype(X, "X");
        },
        py::arg("X"), py::arg("W"), py::arg("b"), py::arg("y"), py::arg("grad"), py::arg("loss"),
        py::arg("prob"), py::arg("threads"));
    m.def(
        "mlp_forward",
        [](const py::array& X, const std::vector<py::array>& Ws, const std::vector<py::object>& bs,
           const std::vector<int>& acts, int ep, const py::array& out, int threads) {
            check_threads(threads);
            if (is_f32(X)) return mlp_forward_impl<float>(X, Ws, bs, acts, ep, out, threads);
            if (is_f64(X)) return mlp_forward_impl<double>(X, Ws, bs, acts, ep, out, threads);
            bad_dtype(X, "X");
        },
        py::arg("X"), py::arg("weights"), py::arg("biases"), py::arg("activations"),
        py::arg("epilogue"), py::arg("out"), py::arg("threads"));
    m.def(
        "ce_grad_mlp",
        [](const py::array& X, const std::vector<py::array>& Ws, const std::vector<py::object>& bs,
           const std::vector<int>& acts, const py::array& y, const py::array& G,
           const py::object& loss, const py::object& prob, int threads) {
            check_threads(threads);
            if (is_f32(X)) return ce_mlp_impl<float>(X, Ws, bs, acts, y, G, loss, prob, threads);
            if (is_f64(X)) return ce_mlp_impl<double>(X, Ws, bs, acts, y, G, loss, prob, threads);
            bad_dtype(X, "X");
        },
        py::arg("X"), py::arg("weights"), py::arg("biases"), py::arg("activations"), py::arg("y"),
        py::arg("grad"), py::arg("loss"), py::arg("prob"), py::arg("threads"));
    m.def(
        "ce_step_linear",
        [](const py::array& X, const py::array& W, const py::object& b, const py::array& y,
           const py::array& X0, bool l2, double alpha, double eps, const py::object& lo,
           const py::object& hi, double quantum, const py::array& out, const py::object& loss,
           const py::object& prob, int threads, int steps) {
            check_threads(threads);
            if (is_f32(X))
                return ce_step_linear_impl<float>(X, W, b, y, X0, l2, alpha, eps, lo, hi, quantum,
                                                  out, loss, prob, threads, steps);
            if (is_f64(X))
                return ce_step_linear_impl<double>(X, W, b, y, X0, l2, alpha, eps, lo, hi, quantum,
                                                   out, loss, prob, threads, steps);
            bad_dtype(X, "X");
        },
        py::arg("X"), py::arg("W"), py::arg("b"), py::arg("y"), py::arg("x0"), py::arg("l2"),
        py::arg("step"), py::arg("eps"), py::arg("lo"), py::arg("hi"), py::arg("quantum"),
        py::arg("out"), py::arg("loss"), py::arg("prob"), py::arg("threads"), py::arg("steps") = 1);
    m.def(
        "ce_step_mlp",
        [](const py::array& X, const std::vector<py::array>& Ws, const std::vector<py::object>& bs,
           const std::vector<int>& acts, const py::array& y, const py::array& X0, bool l2,
           double alpha, double eps, const py::object& lo, const py::object& hi, double quantum,
           const py::array& out, const py::object& loss, const py::object& prob, int threads,
           int steps, const py::object& final_prob) {
            check_threads(threads);
            if (is_f32(X))
                return ce_step_mlp_impl<float>(X, Ws, bs, acts, y, X0, l2, alpha, eps, lo, hi,
                                               quantum, out, loss, prob, threads, steps,
                                               final_prob);
            if (is_f64(X))
                return ce_step_mlp_impl<double>(X, Ws, bs, acts, y, X0, l2, alpha, eps, lo, hi,
                                                quantum, out, loss, prob, threads, steps,
                                                final_prob);
            bad_dtype(X, "X");
        },
        py::arg("X"), py::arg("weights"), py::arg("biases"), py::arg("activations"), py::arg("y"),
        py::arg("x0"), py::arg("l2"), py::arg("step"), py::arg("eps"), py::arg("lo"), py::arg("hi"),
        py::arg("quantum"), py::arg("out"), py::arg("loss"), py::arg("prob"), py::arg("threads"),
        py::arg("steps") = 1, py::arg("final_prob") = py::none());
    m.def(
        "mlp_vjp",
        [](const py::array& X, const std::vector<py::array>& Ws, const std::vector<py::object>& bs,
           const std::vector<int>& acts, const py::array& V, const py::array& G,
           const py::object& logits, int threads) {
            check_threads(threads);
            if (is_f32(X)) return vjp_impl<float>(X, Ws, bs, acts, V, G, logits, threads);
            if (is_f64(X)) return vjp_impl<double>(X, Ws, bs, acts, V, G, logits, threads);
            bad_dtype(X, "X");
        },
        py::arg("X"), py::arg("weights"), py::arg("biases"), py::arg("activations"), py::arg("V"),
        py::arg("grad"), py::arg("logits"), py::arg("threads"));
    m.def(
        "backproject",
        [](const py::array& H, const std::vector<py::array>& Ps, const std::vector<py::object>& bs,
           const std::vector<int>& acts, double margin, const py::object& base,
           const py::array& out, int threads) -> std::int64_t {
            check_threads(threads);
            if (is_f32(H))
                return backproject_impl<float>(H, Ps, bs, acts, margin, base, out, threads);
            if (is_f64(H))
                return backproject_impl<double>(H, Ps, bs, acts, margin, base, out, threads);
            bad_dtype(H, "H");
        },
        py::arg("H"), py::arg("pinvs"), py::arg("biases"), py::arg("activations"),
        py::arg("margin"), py::arg("base"), py::arg("out"), py::arg("threads"));
    m.def(
        "fused_update",
        [](const py::array& X, const py::array& G, const py::array& X0, bool l2, double alpha,
           double eps, const py::object& lo, const py::object& hi, double quantum,
           const py::array& out, int threads) {
            check_threads(threads);
            if (is_f32(X))
                return update_impl<float>(X, G, X0, l2, alpha, eps, lo, hi, quantum, out, threads);
            if (is_f64(X))
                return update_impl<double>(X, G, X0, l2, alpha, eps, lo, hi, quantum, out, threads);
            bad_dtype(X, "x");
        },
        py::arg("x"), py::arg("grad"), py::arg("x0"), py::arg("l2"), py::arg("step"),
        py::arg("eps"), py::arg("lo"), py::arg("hi"), py::arg("quantum"), py::arg("out"),
        py::arg("threads"));
    m.def(
        "diff_norms",
        [](const py::array& A, const py::array& B, const py::object& l2, const py::object& linf,
           int threads, const py::object& amax) {
            check_threads(threads);
            if (is_f32(A)) return norms_impl<float>(A, B, l2, linf, threads, amax);
            if (is_f64(A)) return norms_impl<double>(A, B, l2, linf, threads, amax);
            bad_dtype(A, "A");
        },
        py::arg("A"), py::arg("B"), py::arg("l2"), py::arg("linf"), py::arg("threads"),
        py::arg("amax") = py::none());
    m.def(
        "argmax_rows",
        [](const py::array& P, const py::array& idx, const py::object& val, int threads) {
            check_threads(threads);
            if (is_f32(P)) return argmax_impl<float>(P, idx, val, threads);
            if (is_f64(P)) return argmax_impl<double>(P, idx, val, threads);
            bad_dtype(P, "P");
        },
        py::arg("P"), py::arg("idx"), py::arg("val"), py::arg("threads"));
    m.def(
        "max_abs_rows",
        [](const py::array& X, const py::array& out, int threads) {
            check_threads(threads);
            if (is_f32(X)) return max_abs_impl<float>(X, out, threads);
            if (is_f64(X)) return max_abs_impl<double>(X, out, threads);
            bad_dtype(X, "X");
        },
        py::arg("X"), py::arg("out"), py::arg("threads"));
    m.def(
        "top2_rows",
        [](const py::array& S, const py::object& dup, const py::array& idx, const py::array& top,
           const py::array& second, int threads) {
            check_threads(threads);
            if (is_f32(S)) return top2_impl<float>(S, dup, idx, top, second, threads);
            if (is_f64(S)) return top2_impl<double>(S, dup, idx, top, second, threads);
            bad_dtype(S, "S");
        },
        py::arg("S"), py::arg("dup"), py::arg("idx"), py::arg("top"), py::arg("second"),
        py::arg("threads"));
    m.def(
        "project_plane",
        [](const py::array& X, const py::array& W, const py::array& b, const py::object& lo,
           const py::object& hi, int norm, const py::array& out, int threads) {
            check_threads(threads);
            project_plane_impl(X, W, b, lo, hi, norm, out, threads);
        },
        py::arg("X"), py::arg("W"), py::arg("b"), py::arg("lo"), py::arg("hi"), py::arg("norm"),
        py::arg("out"), py::arg("threads"));
    m.def(
        "fab_step",
        [](const py::array& X, const py::array& X0, const py::array& W, const py::array& b,
           const py::object& lo, const py::object& hi, int norm, double eta, double alpha_max,
           const py::array& reach, const py::array& out, int threads) {
            check_threads(threads);
            fab_step_impl(X, X0, W, b, lo, hi, norm, eta, alpha_max, reach, out, threads);
        },
        py::arg("X"), py::arg("X0"), py::arg("W"), py::arg("b"), py::arg("lo"), py::arg("hi"),
        py::arg("norm"), py::arg("eta"), py::arg("alpha_max"), py::arg("reach"), py::arg("out"),
        py::arg("threads"));
    m.def(
        "dlr_rows",
        [](const py::array& S, const py::array& y, const py::object& t, const py::array& loss,
           const py::array& V, int threads) {
            check_threads(threads);
            if (is_f32(S)) return dlr_impl<float>(S, y, t, loss, V, threads);
            if (is_f64(S)) return dlr_impl<double>(S, y, t, loss, V, threads);
            bad_dtype(S, "S");
        },
        py::arg("S"), py::arg("y"), py::arg("t"), py::arg("loss"), py::arg("V"),
        py::arg("threads"));
    m.def(
        "softmax_at",
        [](const py::array& S, const py::array& idx, const py::array& out, int threads) {
            check_threads(threads);
            if (is_f32(S)) return softmax_at_impl<float>(S, idx, out, threads);
            if (is_f64(S)) return softmax_at_impl<double>(S, idx, out, threads);
            bad_dtype(S, "S");
        },
        py::arg("S"), py::arg("idx"), py::arg("out"), py::arg("threads"));
    m.def(
        "square_linf_mlp",
        [](const py::array& X, const py::array& Xb, const py::array& margin, const py::array& y,
           const std::vector<py::array>& Ws, const std::vector<py::object>& bs,
           const std::vector<int>& acts, const py::array& idx, const py::array& start,
           const py::array& val, int it0, const py::object& lo, const py::object& hi,
           const py::array& queries, int threads) {
            check_threads(threads);
            if (is_f32(X))
                return square_impl<float>(X, Xb, margin, y, Ws, bs, acts, idx, start, val, it0, lo,
                                          hi, queries, threads);
            if (is_f64(X))
                return square_impl<double>(X, Xb, margin, y, Ws, bs, acts, idx, start, val, it0, lo,
                                           hi, queries, threads);
            bad_dtype(X, "X");
        },
        py::arg("X"), py::arg("Xb"), py::arg("margin"), py::arg("y"), py::arg("weights"),
        py::arg("biases"), py::arg("activations"), py::arg("idx"), py::arg("start"), py::arg("val"),
        py::arg("it0"), py::arg("lo"), py::arg("hi"), py::arg("queries"), py::arg("threads"));
    m.def(
        "all_finite",
        [](const py::array& X, int threads) -> bool {
            check_threads(threads);
            if (is_f32(X)) return finite_impl<float>(X, threads);
            if (is_f64(X)) return finite_impl<double>(X, threads);
            bad_dtype(X, "X");
        },
        py::arg("X"), py::arg("threads"));
    py::class_<PackedForest>(m, "Forest")
        .def(py::init<const py::array&, const py::array&, const py::array&, const py::array&,
                      const py::array&, const py::array&, std::int64_t, double>(),
             py::arg("feature"), py::arg("threshold"), py::arg("left"), py::arg("right"),
             py::arg("value"), py::arg("offsets"), py::arg("features"), py::arg("divisor"))
        .def("predict", &PackedForest::predict, py::arg("X"), py::arg("label"), py::arg("proba"),
             py::arg("threads"))
        .def_property_readonly("trees", &PackedForest::trees)
        .def_property_readonly("classes", &PackedForest::classes)
        .def_property_readonly("features", &PackedForest::features)
        .def_property_readonly("depths", &PackedForest::depths);
}

}  // namespace fastfool::bind
