// Portable micro-kernel: plain loops over a small register tile that any compiler
// auto-vectorises for its baseline (SSE2 on x86-64, NEON on aarch64). Cost: 2*MR*NR*k FLOPs.
#include "fastfool/dispatch.hpp"

#include <cmath>

#include "detail/loops.hpp"

namespace fastfool {
namespace {

template <class T, int MR, int NR>
void micro_kernel_generic(std::int64_t k, const T* a, std::int64_t rsa, std::int64_t csa,
                          const T* b, T* c, std::int64_t ldc, bool accumulate) {
    T acc[MR][NR] = {};
    for (std::int64_t p = 0; p < k; ++p) {
        for (int i = 0; i < MR; ++i) {
            const T ai = a[i * rsa];
            for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[j];
        }
        a += csa;
        b += NR;
    }
    for (int i = 0; i < MR; ++i) {
        T* ci = c + i * ldc;
        if (accumulate)
            for (int j = 0; j < NR; ++j) ci[j] += acc[i][j];
        else
            for (int j = 0; j < NR; ++j) ci[j] = acc[i][j];
    }
}

}  // namespace

template <class T>
void generic_exp(T* v, std::int64_t n) {
    for (std::int64_t j = 0; j < n; ++j) v[j] = std::exp(v[j]);
}
template <class T>
void generic_tanh(T* v, std::int64_t n) {
    for (std::int64_t j = 0; j < n; ++j) v[j] = std::tanh(v[j]);
}
template <class T>
void generic_logistic(T* v, std::int64_t n) {
    for (std::int64_t j = 0; j < n; ++j) v[j] = T(1) / (T(1) + std::exp(-v[j]));
}
template <class T>
void generic_log1p(T* v, std::int64_t n) {
    for (std::int64_t j = 0; j < n; ++j) v[j] = std::log1p(v[j]);
}
template void generic_log1p<float>(float*, std::int64_t);
template void generic_log1p<double>(double*, std::int64_t);
template void generic_exp<float>(float*, std::int64_t);
template void generic_exp<double>(double*, std::int64_t);
template void generic_tanh<float>(float*, std::int64_t);
template void generic_tanh<double>(double*, std::int64_t);
template void generic_logistic<float>(float*, std::int64_t);
template void generic_logistic<double>(double*, std::int64_t);

MicroKernel<float> generic_kernel_f32() {
    MicroKernel<float> k{4, 8, 256, 96, &micro_kernel_generic<float, 4, 8>,
                         &micro_kernel_generic<float, 4, 8>, Isa::generic};
    k.vexp = &generic_exp<float>;
    k.vtanh = &generic_tanh<float>;
    k.vlogistic = &generic_logistic<float>;
    k.vlog1p = &generic_log1p<float>;
    k.loops = make_loops<float>();
    return k;
}
MicroKernel<double> generic_kernel_f64() {
    MicroKernel<double> k{4, 4, 256, 96, &micro_kernel_generic<double, 4, 4>,
                          &micro_kernel_generic<double, 4, 4>, Isa::generic};
    k.vexp = &generic_exp<double>;
    k.vtanh = &generic_tanh<double>;
    k.vlogistic = &generic_logistic<double>;
    k.vlog1p = &generic_log1p<double>;
    k.loops = make_loops<double>();
    return k;
}

}  // namespace fastfool
