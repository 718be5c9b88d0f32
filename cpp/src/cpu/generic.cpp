// The portable table: every slot from detail/portable.hpp and detail/loops.hpp, built with the
// baseline flags (SSE2 on x86-64, NEON on aarch64), plus libm's exp / tanh / log1p.
// Cost of the micro-kernel: 2 * MR * NR * k FLOPs per call.
#include "fastfool/dispatch.hpp"

#include <cmath>

#include "detail/loops.hpp"
#include "detail/portable.hpp"

namespace fastfool {

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

namespace {

template <class T, int NR>
MicroKernel<T> portable_table() {
    constexpr int MR = 4;
    MicroKernel<T> k;
    k.mr = MR;
    k.nr = NR;
    k.kc = 256;
    k.mc = 96;
    k.fn = &portable_micro_kernel<T, MR, NR>;
    k.fn_rows = &portable_micro_kernel<T, MR, NR>;
    k.isa = Isa::generic;
    k.fn_stream = &portable_micro_kernel<T, MR, NR>;  // plain stores: the same values
    k.lane_fn4 = &portable_micro_kernel<T, 4, NR>;
    k.lane_fn5 = &portable_micro_kernel<T, 5, NR>;
    k.lane_panel4 = &portable_lane_panel<T, 4, NR>;
    k.lane_panel5 = &portable_lane_panel<T, 5, NR>;
    k.lane_panel_mr = &portable_lane_panel<T, MR, NR>;
    k.pack_a = &portable_pack_a<T, MR>;
    k.transpose = &portable_transpose<T>;
    k.dot_rows = &portable_dot_rows<T>;
    k.dot_max_c = 12;
    k.vexp = &generic_exp<T>;
    k.vtanh = &generic_tanh<T>;
    k.vlogistic = &generic_logistic<T>;
    k.vlog1p = &generic_log1p<T>;
    k.loops = make_loops<T>();
    return k;
}

}  // namespace

MicroKernel<float> generic_kernel_f32() { return portable_table<float, 8>(); }
MicroKernel<double> generic_kernel_f64() { return portable_table<double, 4>(); }

}  // namespace fastfool
