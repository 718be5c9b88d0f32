// The one run-time dispatch table: everything that differs between instruction sets (the GEMM
// micro-kernels, packing, transposes, narrow products, vector maths and the element-wise loops
// of the lane path) is a slot of MicroKernel, filled for every ISA; blocking, threading and the
// drivers are shared C++ (gemm.hpp, cpp/src/cpu/*.cpp). force_isa switches all of them at once.
#pragma once
#include <cstdint>

#include "fastfool/kernels.hpp"

namespace fastfool {

enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2 };

// C[MR x NR] (row stride ldc) = (accumulate ? C : 0) + A * Bpanel over k, where element (i, p)
// of the MR-row sliver A is a[i * rsa + p * csa] (packed: rsa = 1, csa = MR; a row-major input
// read in place: rsa = its row stride, csa = 1) and Bpanel is k groups of NR values.
template <class T>
using MicroKernelFn = void (*)(std::int64_t k, const T* a, std::int64_t rsa, std::int64_t csa,
                               const T* b, T* c, std::int64_t ldc, bool accumulate);

// S[i, c] = sum_p X[i, p] * W[c, p] for i < M, c < C, p < D: products with few outputs as
// dot products vectorised along D (X and W rows contiguous), so a narrow output costs no
// padding to a register tile's width. S has row stride lds.
template <class T>
using DotRowsFn = void (*)(std::int64_t M, std::int64_t C, std::int64_t D, const T* X,
                           std::int64_t ldx, const T* W, std::int64_t ldw, T* S, std::int64_t lds);

// In-place element-wise maps over a contiguous run of n values.
template <class T>
using VecFn = void (*)(T* v, std::int64_t n);

template <class T>
struct MicroKernel;

// Element-wise loops of the lane path and the backward pass (cpp/src/cpu/detail/loops.hpp),
// compiled per ISA (AVX2 without FMA: the baseline's roundings, bit for bit).
template <class T>
struct Loops {
    // delta *= act'(pre-activation), in terms of the activation's output h.
    void (*act_grad)(T* delta, const T* h, std::int64_t n, Act act) = nullptr;
    // Softmax cross-entropy across the lanes of a C x nr logit panel (false: non-finite logits).
    bool (*ce_lanes)(T* z, std::int64_t C, std::int64_t nr, std::int64_t m, const std::int64_t* y,
                     T* loss, T* prob, std::int64_t ldp, const MicroKernel<T>& mk) = nullptr;
    // Panel row o of h (nr lanes) += b[o], o < w.
    void (*add_bias_lanes)(T* h, std::int64_t w, std::int64_t nr, const VecView<T>& b) = nullptr;
    // The L-inf / L2 attack steps on D x nr panels (fused_update's arithmetic per lane).
    void (*lane_step_linf)(T* x, const T* g, const T* x0, std::int64_t D, std::int64_t nr,
                           const StepSpec<T>& st) = nullptr;
    void (*lane_step_l2)(T* x, const T* g, const T* x0, std::int64_t D, std::int64_t nr,
                         const StepSpec<T>& st) = nullptr;
};

// Every slot is filled for every ISA (dispatch.cpp checks; an ISA without a hand-written kernel
// for a slot takes the portable one, cpp/src/cpu/detail/portable.hpp), so the drivers take the
// same paths whichever table is active and forcing "generic" tests all of them.
template <class T>
struct MicroKernel {
    int mr = 0, nr = 0;             // register tile
    int kc = 0, mc = 0;             // cache blocking: depth of a packed panel, rows per row block
    MicroKernelFn<T> fn = nullptr;  // A packed (rsa = 1, csa = mr): the GEMM-bound path
    MicroKernelFn<T> fn_rows = nullptr;  // A read in place with any rsa, csa
    Isa isa = Isa::generic;
    // Activations, exp and log1p for the epilogues (vectorised where the ISA has them).
    VecFn<T> vexp = nullptr, vtanh = nullptr, vlogistic = nullptr, vlog1p = nullptr;
    // Narrow products (see DotRowsFn).
    DotRowsFn<T> dot_rows = nullptr;
    int dot_max_c = 0;  // dot_rows is used for outputs at most this wide
    // fn's packed kernel with 4 and 5 rows per tile instead of mr (same nr, the same chain of
    // multiply-adds per output; the lane products pick per layer the tile that pads least).
    MicroKernelFn<T> lane_fn4 = nullptr, lane_fn5 = nullptr;
    // A whole lane product of k <= kc in one call with 4-, 5- or mr-row tiles: out (ns * rows x
    // nr, row stride nr) = ns packed slivers times one k x nr panel.
    using LanePanelFn = void (*)(std::int64_t ns, std::int64_t k, const T* a, const T* b, T* out);
    LanePanelFn lane_panel4 = nullptr, lane_panel5 = nullptr, lane_panel_mr = nullptr;
    // fn with non-temporal stores of whole cache lines (accumulate false, C rows 64-byte
    // aligned); an ISA without such stores gives fn itself.
    MicroKernelFn<T> fn_stream = nullptr;
    // Packs an mr-row sliver: dst[p * mr + i] = a[i * rsa + p] for i < mr, p < k (rows with
    // contiguous columns); may write up to 8 values past dst + mr * k.
    void (*pack_a)(std::int64_t k, const T* a, std::int64_t rsa, T* dst) = nullptr;
    // dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols.
    void (*transpose)(const T* src, std::int64_t lds, T* dst, std::int64_t ldd, std::int64_t rows,
                      std::int64_t cols) = nullptr;
    Loops<T> loops;
};

// Best instruction set this CPU and OS support (detected once).
Isa detected_isa();
// Instruction set currently used by all kernels (default: detected_isa()).
Isa active_isa();
// Force an instruction set; returns false (and changes nothing) if the CPU lacks it.
bool force_isa(Isa isa);
// Whether every slot of a table is set (the tables are checked once when they are built).
template <class T>
bool complete(const MicroKernel<T>& k);
const char* isa_name(Isa isa);

const MicroKernel<float>& micro_kernel_f32();
const MicroKernel<double>& micro_kernel_f64();

template <class T>
const MicroKernel<T>& micro_kernel();
template <>
inline const MicroKernel<float>& micro_kernel<float>() {
    return micro_kernel_f32();
}
template <>
inline const MicroKernel<double>& micro_kernel<double>() {
    return micro_kernel_f64();
}

// Portable element-wise maps (std::exp / std::tanh), defined in generic.cpp.
template <class T>
void generic_exp(T* v, std::int64_t n);
template <class T>
void generic_tanh(T* v, std::int64_t n);
template <class T>
void generic_logistic(T* v, std::int64_t n);
template <class T>
void generic_log1p(T* v, std::int64_t n);

// Per-ISA tables, defined in generic.cpp / avx2.cpp / avx512.cpp.
MicroKernel<float> generic_kernel_f32();
MicroKernel<double> generic_kernel_f64();
#if defined(FASTFOOL_HAVE_AVX2)
MicroKernel<float> avx2_kernel_f32();
MicroKernel<double> avx2_kernel_f64();
Loops<float> avx2_loops_f32();
Loops<double> avx2_loops_f64();
// AVX-512 (avx512.cpp, avx512_loops.cpp): the AVX2 geometry with zmm kernels, the same bits.
MicroKernel<float> avx512_kernel_f32();
MicroKernel<double> avx512_kernel_f64();
Loops<float> avx512_loops_f32();
Loops<double> avx512_loops_f64();
#endif

}  // namespace fastfool
