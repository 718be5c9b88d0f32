// The single place that includes pybind11, plus the argument checks shared by the bindings.
// Every check runs with the GIL held; kernels then run on raw views with the GIL released.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "fastfool/view.hpp"
#define FASTFOOL_BIND_INTERRUPTS 1
#include "gil.hpp"

namespace py = pybind11;

namespace fastfool::bind {

void bind_runtime(py::module_& m);
void bind_kernels(py::module_& m);

inline std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

template <class T>
void check_dtype(const py::array& a, const char* name) {
    if (!a.dtype().equal(py::dtype::of<T>()))
        throw py::type_error(std::string(name) + ": expected dtype " +
                             std::string(py::str(py::dtype::of<T>())) + ", got " +
                             std::string(py::str(a.dtype())));
}

inline std::int64_t elem_stride(const py::array& a, int axis, const char* name) {
    const auto st = a.strides(axis);
    if (st % static_cast<py::ssize_t>(a.itemsize()) != 0)
        throw py::value_error(std::string(name) + ": strides must be multiples of the item size");
    return st / static_cast<py::ssize_t>(a.itemsize());
}

// Every dimension a kernel sees is below 2**40 (a broadcast view can claim up to 2**62): then
// no size the kernels compute from them (packed panels, workspaces, padded scratch, all a
// dimension times a small tile constant, or a real array's size) can overflow 64 bits, and
// Buffer refuses byte counts that would (gemm.hpp).
constexpr std::int64_t kMaxDim = std::int64_t(1) << 40;

inline void check_dims(const py::array& a, const char* name) {
    for (py::ssize_t i = 0; i < a.ndim(); ++i)
        if (a.shape(i) >= kMaxDim)
            throw py::value_error(std::string(name) + ": shape " + shape_str(a) +
                                  " has a dimension of 2**40 or more, beyond what fastfool's "
                                  "kernels support");
}

// The kernels load whole elements: a buffer at an odd byte offset (np.frombuffer, a view of
// bytes) is refused here rather than read misaligned (the Python layer copies such arrays).
template <class T>
void check_aligned(const py::array& a, const char* name) {
    if (a.size() > 0 && reinterpret_cast<std::uintptr_t>(a.data()) % alignof(T) != 0)
        throw py::value_error(std::string(name) + ": the data is not aligned to its item size");
}

template <class T>
MatView<T> in_mat(const py::array& a, const char* name) {
    check_dtype<T>(a, name);
    if (a.ndim() != 2)
        throw py::value_error(std::string(name) + ": expected a 2-D array, got shape " +
                              shape_str(a));
    check_dims(a, name);
    check_aligned<T>(a, name);
    return {static_cast<const T*>(a.data()), a.shape(0), a.shape(1), elem_stride(a, 0, name),
            elem_stride(a, 1, name)};
}

template <class T>
VecView<T> in_vec(const py::object& o, std::int64_t n, const char* name) {
    if (o.is_none()) return {};
    auto a = py::reinterpret_borrow<py::array>(o);
    check_dtype<T>(a, name);
    check_dims(a, name);
    check_aligned<T>(a, name);
    if (a.ndim() != 1 || a.shape(0) != n)
        throw py::value_error(std::string(name) + ": expected shape (" + std::to_string(n) +
                              ",), got " + shape_str(a));
    return {static_cast<const T*>(a.data()), n, elem_stride(a, 0, name)};
}

// A writable output of exactly (rows, cols) with contiguous columns; returns the row stride.
template <class T>
T* out_mat(const py::array& a, std::int64_t rows, std::int64_t cols, std::int64_t& ld,
           const char* name) {
    check_dtype<T>(a, name);
    if (a.ndim() != 2 || a.shape(0) != rows || a.shape(1) != cols)
        throw py::value_error(std::string(name) + ": expected shape (" + std::to_string(rows) +
                              ", " + std::to_string(cols) + "), got " + shape_str(a));
    if (!a.writeable()) throw py::value_error(std::string(name) + ": array is read-only");
    if (rows == 0 || cols == 0) {  // no elements: strides are meaningless
        ld = cols;
        return static_cast<T*>(const_cast<void*>(a.data()));
    }
    if (cols > 1 && a.strides(1) != static_cast<py::ssize_t>(sizeof(T)))
        throw py::value_error(std::string(name) + ": columns must be contiguous");
    ld = elem_stride(a, 0, name);
    if (rows > 1 && ld < cols) throw py::value_error(std::string(name) + ": rows overlap");
    return static_cast<T*>(const_cast<void*>(a.data()));
}

template <class T>
T* out_vec(const py::object& o, std::int64_t n, const char* name) {
    if (o.is_none()) return nullptr;
    auto a = py::reinterpret_borrow<py::array>(o);
    check_dtype<T>(a, name);
    check_dims(a, name);
    check_aligned<T>(a, name);
    if (a.ndim() != 1 || a.shape(0) != n)
        throw py::value_error(std::string(name) + ": expected shape (" + std::to_string(n) +
                              ",), got " + shape_str(a));
    if (!a.writeable()) throw py::value_error(std::string(name) + ": array is read-only");
    if (n > 1 && a.strides(0) != static_cast<py::ssize_t>(sizeof(T)))
        throw py::value_error(std::string(name) + ": must be contiguous");
    return static_cast<T*>(const_cast<void*>(a.data()));
}

inline int check_threads(int threads) {
    if (threads < 1) throw py::value_error("threads: must be >= 1, got " + std::to_string(threads));
    return threads;
}

}  // namespace fastfool::bind
