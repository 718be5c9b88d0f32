// A strided matrix view over memory owned elsewhere (NumPy, CuPy or a workspace).
// Strides are in elements and may be negative or zero; kernels never assume contiguity
// except where a function's contract says so.
#pragma once
#include <cstdint>

namespace fastfool {

template <class T>
struct MatView {
    const T* data = nullptr;
    std::int64_t rows = 0, cols = 0;
    std::int64_t rs = 0, cs = 1;  // element strides between rows and between columns
    const T& operator()(std::int64_t i, std::int64_t j) const { return data[i * rs + j * cs]; }
    MatView transposed() const { return {data, cols, rows, cs, rs}; }
};

template <class T>
struct MutView {
    T* data = nullptr;
    std::int64_t rows = 0, cols = 0;
    std::int64_t rs = 0, cs = 1;
    T& operator()(std::int64_t i, std::int64_t j) const { return data[i * rs + j * cs]; }
    MatView<T> view() const { return {data, rows, cols, rs, cs}; }
};

// A vector with a stride (a bias, or a scalar broadcast when stride == 0).
template <class T>
struct VecView {
    const T* data = nullptr;
    std::int64_t n = 0, stride = 1;
    T operator[](std::int64_t i) const { return data ? data[i * stride] : T(0); }
};

}  // namespace fastfool
