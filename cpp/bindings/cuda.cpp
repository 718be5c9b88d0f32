// Module fastfool._cuda: the CUDA kernels behind fastfool.cuda. Arguments are raw device
// pointers (integers; 0 = none), sizes, the device and CuPy's current stream; the Python layer
// (python/fastfool/cuda.py) checks every array before calling. Launches are asynchronous; the
// GIL is released while they are queued.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "fastfool/cuda.hpp"

namespace py = pybind11;
using fastfool::cuda::i64;
using ptr = std::uintptr_t;

namespace {

template <class T>
const T* cp(ptr p) { return reinterpret_cast<const T*>(p); }
template <class T>
T* mp(ptr p) { return reinterpret_cast<T*>(p); }

template <class T>
void gemm_t(ptr A, ptr B, ptr C, i64 M, i64 N, i64 K, bool trans_b, int mode, int act, ptr bias,
            ptr H, ptr X, ptr X0, ptr lo, ptr hi, double alpha, double eps, double quantum,
            int device, ptr stream) {
    fastfool::cuda::Epilogue<T> ep;
    ep.mode = mode;
    ep.act = act;
    ep.bias = cp<T>(bias);
    ep.H = cp<T>(H);
    ep.X = cp<T>(X);
    ep.X0 = cp<T>(X0);
    ep.lo = cp<T>(lo);
    ep.hi = cp<T>(hi);
    ep.alpha = T(alpha);
    ep.eps = T(eps);
    ep.quantum = T(quantum);
    py::gil_scoped_release nogil;
    fastfool::cuda::gemm<T>(cp<T>(A), cp<T>(B), mp<T>(C), M, N, K, trans_b, ep, device, stream);
}

void check_sizes(i64 a, i64 b) {
    if (a < 0 || b < 0) throw py::value_error("sizes must be >= 0");
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
    m.doc() = "fastfool's CUDA kernels (private; use fastfool.cuda / fastfool.kernels with CuPy arrays)";
    m.def("device_count", &fastfool::cuda::device_count,
          "Visible CUDA devices; 0 without a driver or device.");
    m.def("describe", &fastfool::cuda::describe, "Runtime / driver versions and device count.");
    m.def(
        "gemm",
        [](bool f64, ptr A, ptr B, ptr C, i64 M, i64 N, i64 K, bool trans_b, int mode, int act,
           ptr bias, ptr H, ptr X, ptr X0, ptr lo, ptr hi, double alpha, double eps,
           double quantum, int device, ptr stream) {
            check_sizes(M, N);
            check_sizes(K, 0);
            if (f64)
                gemm_t<double>(A, B, C, M, N, K, trans_b, mode, act, bias, H, X, X0, lo, hi, alpha,
                               eps, quantum, device, stream);
            else
                gemm_t<float>(A, B, C, M, N, K, trans_b, mode, act, bias, H, X, X0, lo, hi, alpha,
                              eps, quantum, device, stream);
        });
    m.def("row_softmax", [](bool f64, ptr S, i64 N, i64 C, int mode, int device, ptr stream) {
        check_sizes(N, C);
        py::gil_scoped_release nogil;
        if (f64)
            fastfool::cuda::row_softmax<double>(mp<double>(S), N, C, mode, device, stream);
        else
            fastfool::cuda::row_softmax<float>(mp<float>(S), N, C, mode, device, stream);
    });
    m.def("ce_rows", [](bool f64, ptr S, i64 N, i64 C, ptr y, ptr loss, ptr prob, int device,
                        ptr stream) {
        check_sizes(N, C);
        py::gil_scoped_release nogil;
        if (f64)
            fastfool::cuda::ce_rows<double>(mp<double>(S), N, C, cp<i64>(y), mp<double>(loss),
                                            mp<double>(prob), device, stream);
        else
            fastfool::cuda::ce_rows<float>(mp<float>(S), N, C, cp<i64>(y), mp<float>(loss),
                                           mp<float>(prob), device, stream);
    });
    m.def("inverse_act", [](bool f64, ptr H, ptr Z, ptr bias, i64 N, i64 K, int act, double margin,
                            ptr counter, int device, ptr stream) {
        check_sizes(N, K);
        py::gil_scoped_release nogil;
        auto* cnt = reinterpret_cast<unsigned long long*>(counter);
        if (f64)
            fastfool::cuda::inverse_act<double>(cp<double>(H), mp<double>(Z), cp<double>(bias), N, K,
                                                act, margin, cnt, device, stream);
        else
            fastfool::cuda::inverse_act<float>(cp<float>(H), mp<float>(Z), cp<float>(bias), N, K, act,
                                               float(margin), cnt, device, stream);
    });
    m.def("fused_update", [](bool f64, ptr X, ptr G, ptr X0, ptr out, i64 N, i64 D, bool l2,
                             double alpha, double eps, ptr lo, ptr hi, double quantum, int device,
                             ptr stream) {
        check_sizes(N, D);
        py::gil_scoped_release nogil;
        if (f64)
            fastfool::cuda::fused_update<double>(cp<double>(X), cp<double>(G), cp<double>(X0),
                                                 mp<double>(out), N, D, l2, alpha, eps, cp<double>(lo),
                                                 cp<double>(hi), quantum, device, stream);
        else
            fastfool::cuda::fused_update<float>(cp<float>(X), cp<float>(G), cp<float>(X0),
                                                mp<float>(out), N, D, l2, float(alpha), float(eps),
                                                cp<float>(lo), cp<float>(hi), float(quantum), device,
                                                stream);
    });
    m.def("diff_norms", [](bool f64, ptr A, ptr B, i64 N, i64 D, ptr l2, ptr linf, int device,
                           ptr stream) {
        check_sizes(N, D);
        py::gil_scoped_release nogil;
        if (f64)
            fastfool::cuda::diff_norms<double>(cp<double>(A), cp<double>(B), N, D, mp<double>(l2),
                                               mp<double>(linf), device, stream);
        else
            fastfool::cuda::diff_norms<float>(cp<float>(A), cp<float>(B), N, D, mp<float>(l2),
                                              mp<float>(linf), device, stream);
    });
}
