// The only CPU-feature detection in fastfool: runs once, fills the kernel table. Tests and
// users can force the portable path (fastfool.set_simd("generic") / FASTFOOL_SIMD=generic).
#include "fastfool/dispatch.hpp"

#include <atomic>

namespace fastfool {
namespace {

Isa detect() {
#if defined(FASTFOOL_HAVE_AVX2) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    // libgcc's checks include the OS's XSAVE support for ymm state.
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
    return Isa::generic;
}

struct Tables {
    MicroKernel<float> f32[2];
    MicroKernel<double> f64[2];
    Isa best;
    Tables() : best(detect()) {
        f32[0] = generic_kernel_f32();
        f64[0] = generic_kernel_f64();
        f32[1] = f32[0];
        f64[1] = f64[0];
#if defined(FASTFOOL_HAVE_AVX2)
        if (best == Isa::avx2) {
            f32[1] = avx2_kernel_f32();
            f64[1] = avx2_kernel_f64();
        }
#endif
    }
};

const Tables& tables() {
    static const Tables t;  // thread-safe one-time initialisation
    return t;
}

std::atomic<int> g_active{-1};

}  // namespace

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

const char* isa_name(Isa isa) { return isa == Isa::avx2 ? "avx2" : "generic"; }

const MicroKernel<float>& micro_kernel_f32() {
    return tables().f32[static_cast<int>(active_isa())];
}
const MicroKernel<double>& micro_kernel_f64() {
    return tables().f64[static_cast<int>(active_isa())];
}

}  // namespace fastfool
