// Portable micro-kernel: plain loops over a small register tile that any compiler
// auto-vectorises for its baseline (SSE2 on x86-64, NEON on aarch64). Cost: 2*MR*NR*k FLOPs.
#include "fastfool/dispatch.hpp"

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

MicroKernel<float> generic_kernel_f32() {
    return {4, 8, 256, 96, &micro_kernel_generic<float, 4, 8>, &micro_kernel_generic<float, 4, 8>,
            Isa::generic};
}
MicroKernel<double> generic_kernel_f64() {
    return {4, 4, 256, 96, &micro_kernel_generic<double, 4, 4>, &micro_kernel_generic<double, 4, 4>,
            Isa::generic};
}

}  // namespace fastfool
