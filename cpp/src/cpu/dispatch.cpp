// The only CPU-feature detection in fastfool: runs once, fills the kernel table. Tests and
// users can force a lower path (fastfool.set_simd("generic"|"avx2") / FASTFOOL_SIMD=...).
#include "fastfool/dispatch.hpp"

#include <atomic>
#include <cstdlib>

namespace fastfool {
namespace {

Isa detect() {
#if defined(FASTFOOL_HAVE_AVX2) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    // libgcc's checks include the OS's XSAVE support for ymm (and zmm / mask) state.
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
        return Isa::avx512;
    if (avx2) return Isa::avx2;
#endif
    return Isa::generic;
}

template <class T>
const MicroKernel<T>& checked(const MicroKernel<T>& k) {
    if (!complete(k))
        std::abort();  // a table with a missing slot is a build error, caught by every test
    return k;
}

constexpr int kIsas = 3;

// Slot i holds the table of Isa i when the CPU has it, else a lower one (never used: force_isa
// refuses an ISA above the detected one).
struct Tables {
    MicroKernel<float> f32[kIsas];
    MicroKernel<double> f64[kIsas];
    Isa best;
    Tables() : best(detect()) {
        f32[0] = generic_kernel_f32();
        f64[0] = generic_kernel_f64();
        for (int i = 1; i < kIsas; ++i) {
            f32[i] = f32[0];
            f64[i] = f64[0];
        }
#if defined(FASTFOOL_HAVE_AVX2)
        if (static_cast<int>(best) >= static_cast<int>(Isa::avx2)) {
            f32[1] = f32[2] = avx2_kernel_f32();
            f64[1] = f64[2] = avx2_kernel_f64();
        }
        if (best == Isa::avx512) {
            f32[2] = avx512_kernel_f32();
            f64[2] = avx512_kernel_f64();
        }
#endif
        for (int i = 0; i < kIsas; ++i) {
            checked(f32[i]);
            checked(f64[i]);
        }
    }
};

const Tables& tables() {
    static const Tables t;  // thread-safe one-time initialisation
    return t;
}

std::atomic<int> g_active{-1};

}  // namespace

template <class T>
bool complete(const MicroKernel<T>& k) {
    const Loops<T>& l = k.loops;
    return k.mr > 0 && k.nr > 0 && k.kc > 0 && k.mc > 0 && k.fn && k.fn_rows && k.vexp && k.vtanh &&
           k.vlogistic && k.vlog1p && k.dot_rows && k.dot_max_c > 0 && k.lane_fn4 && k.lane_fn5 &&
           k.lane_panel4 && k.lane_panel5 && k.lane_panel_mr && k.fn_stream && k.pack_a &&
           k.transpose && l.act_grad && l.ce_lanes && l.add_bias_lanes && l.lane_step_linf &&
           l.lane_step_l2;
}
template bool complete<float>(const MicroKernel<float>&);
template bool complete<double>(const MicroKernel<double>&);

Isa detected_isa() { return tables().best; }

Isa active_isa() {
    int v = g_active.load(std::memory_order_relaxed);
    return v < 0 ? detected_isa() : static_cast<Isa>(v);
}

bool force_isa(Isa isa) {
    if (static_cast<int>(isa) > static_cast<int>(detected_isa())) return false;
    g_active.store(static_cast<int>(isa), std::memory_order_relaxed);
    return true;
}

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::avx512:
            return "avx512";
        case Isa::avx2:
            return "avx2";
        default:
            return "generic";
    }
}

const MicroKernel<float>& micro_kernel_f32() {
    return tables().f32[static_cast<int>(active_isa())];
}
const MicroKernel<double>& micro_kernel_f64() {
    return tables().f64[static_cast<int>(active_isa())];
}

}  // namespace fastfool
