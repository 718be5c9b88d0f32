// Module fastfool._cuda: the CUDA kernels behind fastfool.cuda. Every array argument is a CUDA
// array (CuPy, or anything exposing __cuda_array_interface__), read by the DeviceView caster and
// checked here like the CPU views: dtype, shape against the others, C-contiguity, writability of
// outputs, no mask, and - once a device is known to exist - that its memory lives on the call's
// device. Streams are stream objects (CuPy's Stream: their .ptr), never bare integers. Launches
// are asynchronous on that stream; the GIL is released while they are queued.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fastfool/cuda.hpp"
#include "gil.hpp"

namespace py = pybind11;
using fastfool::bind::NoGil;
using fastfool::cuda::i64;

namespace {

// What __cuda_array_interface__ says about one argument (None: absent).
struct DeviceView {
    bool present = false;
    std::uintptr_t ptr = 0;
    std::vector<i64> shape;
    std::string typestr;
    bool readonly = false;
    std::string problem;  // non-empty: why the object is not a usable CUDA array
    std::string type_name;

    i64 size() const {
        i64 n = 1;
        for (i64 s : shape) n *= s;
        return n;
    }
    std::string shape_str() const {
        std::string s = "(";
        for (std::size_t i = 0; i < shape.size(); ++i)
            s += std::to_string(shape[i]) + (shape.size() == 1      ? ","
                                             : i + 1 < shape.size() ? ", "
                                                                    : "");
        return s + ")";
    }
};

// A stream object: anything with an integer .ptr (cupy.cuda.Stream, ExternalStream).
struct StreamArg {
    std::uintptr_t ptr = 0;
    std::string problem;
};

std::size_t itemsize_of(const std::string& typestr) {
    return typestr.size() >= 3 ? std::stoul(typestr.substr(2)) : 0;
}

DeviceView parse_view(py::handle src) {
    DeviceView v;
    if (src.is_none()) return v;
    v.present = true;
    v.type_name = py::str(py::type::handle_of(src).attr("__name__"));
    if (!py::hasattr(src, "__cuda_array_interface__")) {
        v.problem =
            "expected a CUDA array (CuPy, or an object with __cuda_array_interface__), got " +
            v.type_name;
        return v;
    }
    try {
        const py::dict d = src.attr("__cuda_array_interface__").cast<py::dict>();
        if (d.contains("mask") && !d["mask"].is_none()) {
            v.problem = "masked CUDA arrays are not supported";
            return v;
        }
        for (py::handle s : d["shape"].cast<py::tuple>()) {
            const i64 n = s.cast<i64>();
            if (n < 0) throw py::value_error("negative extent");
            v.shape.push_back(n);
        }
        v.typestr = d["typestr"].cast<std::string>();
        const py::tuple data = d["data"].cast<py::tuple>();
        if (data.size() != 2) throw py::value_error("data is not (pointer, read_only)");
        v.ptr = data[0].cast<std::uintptr_t>();
        v.readonly = data[1].cast<bool>();
        const std::size_t item = itemsize_of(v.typestr);
        if (d.contains("strides") && !d["strides"].is_none()) {
            const py::tuple st = d["strides"].cast<py::tuple>();
            if (st.size() != v.shape.size())
                throw py::value_error("strides and shape differ in length");
            i64 expect = i64(item);
            for (std::size_t k = v.shape.size(); k-- > 0;) {
                if (v.shape[k] > 1 && st[k].cast<i64>() != expect) {
                    v.problem = "must be C-contiguous (dense row-major), got strides " +
                                py::str(st).cast<std::string>() + " for shape " + v.shape_str();
                    return v;
                }
                expect *= std::max<i64>(v.shape[k], 1);
            }
        }
    } catch (const std::exception& e) {  // py::error_already_set and cast errors alike
        v.problem = std::string("unreadable __cuda_array_interface__ (") + e.what() + ")";
        return v;
    }
    if (v.ptr == 0 && v.size() > 0) v.problem = "null data pointer";
    return v;
}

}  // namespace

namespace pybind11 {
namespace detail {
// Accepts any object; the function body reports a problem with the argument's name.
template <>
struct type_caster<DeviceView> {
    PYBIND11_TYPE_CASTER(DeviceView, const_name("CudaArray | None"));
    bool load(handle src, bool) {
        value = parse_view(src);
        return true;
    }
};
template <>
struct type_caster<StreamArg> {
    PYBIND11_TYPE_CASTER(StreamArg, const_name("cupy.cuda.Stream"));
    bool load(handle src, bool) {
        value = StreamArg{};
        if (!src.is_none() && !PyLong_Check(src.ptr()) && hasattr(src, "ptr")) {
            try {
                value.ptr = src.attr("ptr").cast<std::uintptr_t>();
                return true;
            } catch (const std::exception&) {
            }
        }
        value.problem =
            std::string("stream: expected a stream object with .ptr (cupy.cuda.Stream), got ") +
            std::string(py::str(py::type::handle_of(src).attr("__name__")));
        return true;
    }
};
}  // namespace detail
}  // namespace pybind11

namespace {

// The typestr of T's elements.
template <class T>
const char* typestr_of();
template <>
const char* typestr_of<float>() {
    return "<f4";
}
template <>
const char* typestr_of<double>() {
    return "<f8";
}
template <>
const char* typestr_of<i64>() {
    return "<i8";
}
template <>
const char* typestr_of<unsigned long long>() {
    return "<u8";
}

// Checks one argument against the call: present unless optional, readable as a CUDA array, of
// T's dtype, of exactly `shape`, writable when `out`. Returns its pointer (null when absent).
template <class T>
std::uintptr_t checked(const DeviceView& v, const char* name, const std::vector<i64>& shape,
                       bool out = false, bool optional = false) {
    if (!v.present) {
        if (optional) return 0;
        throw py::value_error(std::string(name) + ": required, got None");
    }
    if (!v.problem.empty()) throw py::type_error(std::string(name) + ": " + v.problem);
    if (v.typestr != typestr_of<T>())
        throw py::type_error(std::string(name) + ": expected dtype " + typestr_of<T>() + ", got " +
                             v.typestr);
    if (v.shape != shape) {
        DeviceView want;
        want.shape = shape;
        throw py::value_error(std::string(name) + ": expected shape " + want.shape_str() +
                              ", got " + v.shape_str());
    }
    if (out && v.readonly) throw py::value_error(std::string(name) + ": is read-only");
    return v.ptr;
}

// The first argument fixes the float type and the leading extents.
void float_matrix(const DeviceView& v, const char* name) {
    if (!v.present) throw py::value_error(std::string(name) + ": required, got None");
    if (!v.problem.empty()) throw py::type_error(std::string(name) + ": " + v.problem);
    if (v.typestr != "<f4" && v.typestr != "<f8")
        throw py::type_error(std::string(name) + ": expected float32 or float64 (<f4 / <f8), got " +
                             v.typestr);
    if (v.shape.size() != 2)
        throw py::value_error(std::string(name) + ": expected a 2-D array, got shape " +
                              v.shape_str());
}

// After the structural checks: a GPU must exist, and every array must live on `device`.
void on_device(int device, const StreamArg& stream,
               std::initializer_list<std::pair<const char*, const DeviceView*>> views) {
    if (!stream.problem.empty()) throw py::type_error(stream.problem);
    if (device < 0) throw py::value_error("device: must be >= 0, got " + std::to_string(device));
    if (fastfool::cuda::device_count() == 0)
        throw std::runtime_error("CUDA: no usable GPU (" + fastfool::cuda::describe() + ")");
    for (const auto& [name, v] : views) {
        if (!v->present || v->size() == 0) continue;
        const int d = fastfool::cuda::pointer_device(v->ptr);
        if (d != device)
            throw py::value_error(
                std::string(name) +
                (d < 0 ? ": is not CUDA device memory" : ": lives on GPU " + std::to_string(d)) +
                ", the call runs on GPU " + std::to_string(device));
    }
}

template <class T>
T* mp(std::uintptr_t p) {
    return reinterpret_cast<T*>(p);
}
template <class T>
const T* cp(std::uintptr_t p) {
    return reinterpret_cast<const T*>(p);
}

template <class T>
void gemm_t(const DeviceView& A, const DeviceView& B, const DeviceView& C, bool trans_b, int mode,
            int act, const DeviceView& bias, const DeviceView& H, const DeviceView& X,
            const DeviceView& X0, const DeviceView& lo, const DeviceView& hi, double alpha,
            double eps, double quantum, int device, const StreamArg& stream) {
    const i64 M = A.shape[0], K = A.shape[1];
    if (B.present && B.problem.empty() && B.shape.size() != 2)
        throw py::value_error("B: expected a 2-D array, got shape " + B.shape_str());
    const i64 N = B.present && B.shape.size() == 2 ? B.shape[trans_b ? 0 : 1] : 0;
    checked<T>(B, "B", trans_b ? std::vector<i64>{N, K} : std::vector<i64>{K, N});
    checked<T>(C, "C", {M, N}, true);
    if (mode < 0 || mode > 2)
        throw py::value_error("mode: must be 0, 1 or 2, got " + std::to_string(mode));
    if (act < 0 || act > 3)
        throw py::value_error("act: must be in 0..3, got " + std::to_string(act));
    fastfool::cuda::Epilogue<T> ep;
    ep.mode = mode;
    ep.act = act;
    ep.bias = cp<T>(checked<T>(bias, "bias", {N}, false, true));
    ep.H = cp<T>(checked<T>(H, "H", {M, N}, false, mode != 1));
    ep.X = cp<T>(checked<T>(X, "X", {M, N}, false, mode != 2));
    ep.X0 = cp<T>(checked<T>(X0, "X0", {M, N}, false, mode != 2));
    ep.lo = cp<T>(checked<T>(lo, "lo", {N}, false, true));
    ep.hi = cp<T>(checked<T>(hi, "hi", {N}, false, true));
    ep.alpha = T(alpha);
    ep.eps = T(eps);
    ep.quantum = T(quantum);
    on_device(device, stream,
              {{"A", &A},
               {"B", &B},
               {"C", &C},
               {"bias", &bias},
               {"H", &H},
               {"X", &X},
               {"X0", &X0},
               {"lo", &lo},
               {"hi", &hi}});
    NoGil nogil;
    fastfool::cuda::gemm<T>(cp<T>(A.ptr), cp<T>(B.ptr), mp<T>(C.ptr), M, N, K, trans_b, ep, device,
                            stream.ptr);
}

template <class T>
void ce_rows_t(const DeviceView& S, const DeviceView& y, const DeviceView& loss,
               const DeviceView& prob, int device, const StreamArg& stream) {
    const i64 N = S.shape[0], C = S.shape[1];
    checked<T>(S, "S", {N, C}, true);
    checked<i64>(y, "y", {N});
    checked<T>(loss, "loss", {N}, true, true);
    checked<T>(prob, "prob", {N, C}, true, true);
    on_device(device, stream, {{"S", &S}, {"y", &y}, {"loss", &loss}, {"prob", &prob}});
    NoGil nogil;
    fastfool::cuda::ce_rows<T>(mp<T>(S.ptr), N, C, cp<i64>(y.ptr), mp<T>(loss.ptr), mp<T>(prob.ptr),
                               device, stream.ptr);
}

template <class T>
void inverse_act_t(const DeviceView& H, const DeviceView& Z, const DeviceView& bias, int act,
                   double margin, const DeviceView& counter, int device, const StreamArg& stream) {
    const i64 N = H.shape[0], K = H.shape[1];
    checked<T>(Z, "Z", {N, K}, true);
    checked<T>(bias, "bias", {K}, false, true);
    checked<unsigned long long>(counter, "counter", {1}, true);
    if (act != 0 && act != 2 && act != 3)
        throw py::value_error("act: must be 0 (identity), 2 (tanh) or 3 (logistic), got " +
                              std::to_string(act));
    on_device(device, stream, {{"H", &H}, {"Z", &Z}, {"bias", &bias}, {"counter", &counter}});
    NoGil nogil;
    fastfool::cuda::inverse_act<T>(cp<T>(H.ptr), mp<T>(Z.ptr), cp<T>(bias.ptr), N, K, act,
                                   T(margin), mp<unsigned long long>(counter.ptr), device,
                                   stream.ptr);
}

template <class T>
void fused_update_t(const DeviceView& X, const DeviceView& G, const DeviceView& X0,
                    const DeviceView& out, bool l2, double alpha, double eps, const DeviceView& lo,
                    const DeviceView& hi, double quantum, int device, const StreamArg& stream) {
    const i64 N = X.shape[0], D = X.shape[1];
    checked<T>(G, "G", {N, D});
    checked<T>(X0, "X0", {N, D});
    checked<T>(out, "out", {N, D}, true);
    checked<T>(lo, "lo", {D}, false, true);
    checked<T>(hi, "hi", {D}, false, true);
    on_device(device, stream,
              {{"X", &X}, {"G", &G}, {"X0", &X0}, {"out", &out}, {"lo", &lo}, {"hi", &hi}});
    NoGil nogil;
    fastfool::cuda::fused_update<T>(cp<T>(X.ptr), cp<T>(G.ptr), cp<T>(X0.ptr), mp<T>(out.ptr), N, D,
                                    l2, T(alpha), T(eps), cp<T>(lo.ptr), cp<T>(hi.ptr), T(quantum),
                                    device, stream.ptr);
}

template <class T>
void diff_norms_t(const DeviceView& A, const DeviceView& B, const DeviceView& l2,
                  const DeviceView& linf, int device, const StreamArg& stream) {
    const i64 N = A.shape[0], D = A.shape[1];
    checked<T>(B, "B", {N, D});
    checked<T>(l2, "l2", {N}, true);
    checked<T>(linf, "linf", {N}, true);
    on_device(device, stream, {{"A", &A}, {"B", &B}, {"l2", &l2}, {"linf", &linf}});
    NoGil nogil;
    fastfool::cuda::diff_norms<T>(cp<T>(A.ptr), cp<T>(B.ptr), N, D, mp<T>(l2.ptr), mp<T>(linf.ptr),
                                  device, stream.ptr);
}

bool is_f64(const DeviceView& v) { return v.typestr == "<f8"; }

}  // namespace

PYBIND11_MODULE(_cuda, m) {
    m.doc() =
        "fastfool's CUDA kernels (private; use fastfool.cuda / fastfool.kernels with CuPy arrays)";
    m.def("device_count", &fastfool::cuda::device_count,
          "Visible CUDA devices; 0 without a driver or device.");
    m.def("describe", &fastfool::cuda::describe, "Runtime / driver versions and device count.");
    m.def(
        "view_info",
        [](DeviceView v) {
            if (!v.present) return py::object(py::none());
            if (!v.problem.empty()) throw py::type_error("array: " + v.problem);
            py::dict d;
            d["ptr"] = v.ptr;
            d["shape"] = py::tuple(py::cast(v.shape));
            d["typestr"] = v.typestr;
            d["readonly"] = v.readonly;
            return py::object(d);
        },
        py::arg("array"),
        "What the DeviceView caster reads from an array's __cuda_array_interface__ (tests).");
    m.def(
        "gemm",
        [](DeviceView A, DeviceView B, DeviceView C, bool trans_b, int mode, int act,
           DeviceView bias, DeviceView H, DeviceView X, DeviceView X0, DeviceView lo, DeviceView hi,
           double alpha, double eps, double quantum, int device, StreamArg stream) {
            float_matrix(A, "A");
            if (is_f64(A))
                gemm_t<double>(A, B, C, trans_b, mode, act, bias, H, X, X0, lo, hi, alpha, eps,
                               quantum, device, stream);
            else
                gemm_t<float>(A, B, C, trans_b, mode, act, bias, H, X, X0, lo, hi, alpha, eps,
                              quantum, device, stream);
        },
        py::arg("A"), py::arg("B"), py::arg("C"), py::kw_only(), py::arg("trans_b"),
        py::arg("mode") = 0, py::arg("act") = 0, py::arg("bias") = py::none(),
        py::arg("H") = py::none(), py::arg("X") = py::none(), py::arg("X0") = py::none(),
        py::arg("lo") = py::none(), py::arg("hi") = py::none(), py::arg("alpha") = 0.0,
        py::arg("eps") = 0.0, py::arg("quantum") = 0.0, py::arg("device"), py::arg("stream"),
        "C = A . B (or A . B^T) with the fused epilogue `mode` (0 bias + act, 1 act', 2 L-inf "
        "step).");
    m.def(
        "row_softmax",
        [](DeviceView S, int mode, int device, StreamArg stream) {
            float_matrix(S, "S");
            if (mode != 1 && mode != 2)
                throw py::value_error("mode: must be 1 or 2, got " + std::to_string(mode));
            const i64 N = S.shape[0], C = S.shape[1];
            if (is_f64(S))
                checked<double>(S, "S", {N, C}, true);
            else
                checked<float>(S, "S", {N, C}, true);
            on_device(device, stream, {{"S", &S}});
            NoGil nogil;
            if (is_f64(S))
                fastfool::cuda::row_softmax<double>(mp<double>(S.ptr), N, C, mode, device,
                                                    stream.ptr);
            else
                fastfool::cuda::row_softmax<float>(mp<float>(S.ptr), N, C, mode, device,
                                                   stream.ptr);
        },
        py::arg("S"), py::kw_only(), py::arg("mode"), py::arg("device"), py::arg("stream"));
    m.def(
        "ce_rows",
        [](DeviceView S, DeviceView y, DeviceView loss, DeviceView prob, int device,
           StreamArg stream) {
            float_matrix(S, "S");
            if (is_f64(S))
                ce_rows_t<double>(S, y, loss, prob, device, stream);
            else
                ce_rows_t<float>(S, y, loss, prob, device, stream);
        },
        py::arg("S"), py::arg("y"), py::kw_only(), py::arg("loss") = py::none(),
        py::arg("prob") = py::none(), py::arg("device"), py::arg("stream"));
    m.def(
        "inverse_act",
        [](DeviceView H, DeviceView Z, DeviceView bias, int act, double margin, DeviceView counter,
           int device, StreamArg stream) {
            float_matrix(H, "H");
            if (is_f64(H))
                inverse_act_t<double>(H, Z, bias, act, margin, counter, device, stream);
            else
                inverse_act_t<float>(H, Z, bias, act, margin, counter, device, stream);
        },
        py::arg("H"), py::arg("Z"), py::kw_only(), py::arg("bias") = py::none(), py::arg("act"),
        py::arg("margin"), py::arg("counter"), py::arg("device"), py::arg("stream"));
    m.def(
        "fused_update",
        [](DeviceView X, DeviceView G, DeviceView X0, DeviceView out, bool l2, double alpha,
           double eps, DeviceView lo, DeviceView hi, double quantum, int device, StreamArg stream) {
            float_matrix(X, "X");
            if (is_f64(X))
                fused_update_t<double>(X, G, X0, out, l2, alpha, eps, lo, hi, quantum, device,
                                       stream);
            else
                fused_update_t<float>(X, G, X0, out, l2, alpha, eps, lo, hi, quantum, device,
                                      stream);
        },
        py::arg("X"), py::arg("G"), py::arg("X0"), py::arg("out"), py::kw_only(), py::arg("l2"),
        py::arg("alpha"), py::arg("eps"), py::arg("lo") = py::none(), py::arg("hi") = py::none(),
        py::arg("quantum") = 0.0, py::arg("device"), py::arg("stream"));
    m.def(
        "diff_norms",
        [](DeviceView A, DeviceView B, DeviceView l2, DeviceView linf, int device,
           StreamArg stream) {
            float_matrix(A, "A");
            if (is_f64(A))
                diff_norms_t<double>(A, B, l2, linf, device, stream);
            else
                diff_norms_t<float>(A, B, l2, linf, device, stream);
        },
        py::arg("A"), py::arg("B"), py::arg("l2"), py::arg("linf"), py::kw_only(),
        py::arg("device"), py::arg("stream"));
}
