// Shared pieces of fastfool's CUDA kernels (gemm.cu, rows.cu): error checks, the scalar maths
// overloads with the CPU kernels' NaN behaviour, the element-wise epilogues and the warp / block
// reductions. Internal linkage: each .cu file gets its own copy.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "fastfool/cuda.hpp"

namespace fastfool {
namespace cuda {
namespace {

inline void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) {
        (void)cudaGetLastError();  // clear a non-sticky error so later calls start clean
        throw std::runtime_error(std::string("fastfool CUDA ") + what + ": " +
                                 cudaGetErrorString(e));
    }
}

inline void prepare(int device) { check(cudaSetDevice(device), "cudaSetDevice"); }

inline cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// ---- scalar helpers (float / double overloads of the math library) --------------------------
__device__ __forceinline__ float f_exp(float x) { return expf(x); }
__device__ __forceinline__ double f_exp(double x) { return exp(x); }
__device__ __forceinline__ float f_log(float x) { return logf(x); }
__device__ __forceinline__ double f_log(double x) { return log(x); }
__device__ __forceinline__ float f_log1p(float x) { return log1pf(x); }
__device__ __forceinline__ double f_log1p(double x) { return log1p(x); }
__device__ __forceinline__ float f_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double f_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float f_atanh(float x) { return atanhf(x); }
__device__ __forceinline__ double f_atanh(double x) { return atanh(x); }
__device__ __forceinline__ float f_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double f_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float f_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double f_abs(double x) { return fabs(x); }
__device__ __forceinline__ float f_rint(float x) { return rintf(x); }  // half to even, as nearbyint
__device__ __forceinline__ double f_rint(double x) { return rint(x); }
__device__ __forceinline__ float f_trunc(float x) { return truncf(x); }
__device__ __forceinline__ double f_trunc(double x) { return trunc(x); }
__device__ __forceinline__ bool f_finite(float x) { return isfinite(x); }
__device__ __forceinline__ bool f_finite(double x) { return isfinite(x); }
__device__ __forceinline__ float f_inf(float) { return __int_as_float(0x7f800000); }
__device__ __forceinline__ double f_inf(double) {
    return __longlong_as_double(0x7ff0000000000000LL);
}

// std::max / std::min as the CPU kernels use them (a NaN first argument survives).
template <class T>
__device__ __forceinline__ T smax(T a, T b) {
    return a < b ? b : a;
}
template <class T>
__device__ __forceinline__ T smin(T a, T b) {
    return b < a ? b : a;
}
template <class T>
__device__ __forceinline__ T sgn(T v) {
    return T((v > T(0)) - (v < T(0)));
}

template <class T>
__device__ __forceinline__ T act_fwd(int act, T v) {
    switch (act) {
        case 1:
            return v > T(0) ? v : T(0);
        case 2:
            return f_tanh(v);
        case 3:
            return T(1) / (T(1) + f_exp(-v));
        default:
            return v;
    }
}

// d * act'(pre-activation), written through h = act(pre-activation).
template <class T>
__device__ __forceinline__ T act_deriv(int act, T h, T d) {
    switch (act) {
        case 1:
            return h > T(0) ? d : T(0);
        case 2:
            return d * ((T(1) - h) * (T(1) + h));
        case 3:
            return d * (h * (T(1) - h));
        default:
            return d;
    }
}

// One element of the L-inf step (kernels.fused_update): move, project, quantise, clip.
template <class T>
__device__ __forceinline__ T linf_step(T x, T g, T c, T alpha, T eps, T q, const T* lo, const T* hi,
                                       i64 col) {
    T v = x + alpha * sgn(g);
    v = smin(smax(v, c - eps), c + eps);
    if (q > T(0)) {
        T d = f_rint((v - c) / q) * q;
        if (f_abs(d) > eps) d -= sgn(d) * q;
        v = c + d;
    }
    if (lo) v = smax(v, lo[col]);
    if (hi) v = smin(v, hi[col]);
    return v;
}

// The product's epilogue for one element. The activation is an out-of-line call: inlined 64
// times into the unrolled store loop, its transcendental branches made the accumulators spill.
template <class T>
__device__ __noinline__ T act_call(int act, T v) {
    return act_fwd(act, v);
}

// The L-inf step, out of line for the same reason (and a 5x shorter compile).
template <class T>
__device__ __noinline__ T step_call(T x, T g, T c0, T alpha, T eps, T q, const T* lo, const T* hi,
                                    i64 col) {
    return linf_step(x, g, c0, alpha, eps, q, lo, hi, col);
}

template <class T>
__device__ __forceinline__ T apply_epilogue(const Epilogue<T>& ep, T v, i64 o, i64 c) {
    if (ep.mode == kBiasAct) {
        if (ep.bias) v += ep.bias[c];
        return ep.act == 0 ? v : ep.act == 1 ? (v > T(0) ? v : T(0)) : act_call(ep.act, v);
    }
    if (ep.mode == kDerivAct) return act_deriv(ep.act, ep.H[o], v);
    return step_call(ep.X[o], v, ep.X0[o], ep.alpha, ep.eps, ep.quantum, ep.lo, ep.hi, c);
}

// ---- reductions ------------------------------------------------------------------------------
constexpr unsigned kFull = 0xffffffffu;

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int off = 16; off; off >>= 1) v += __shfl_xor_sync(kFull, v, off);
    return v;
}
template <class T>
__device__ __forceinline__ T warp_max(T v) {  // NaN-ignoring, as the CPU's running max
#pragma unroll
    for (int off = 16; off; off >>= 1) {
        const T o = __shfl_xor_sync(kFull, v, off);
        v = o > v ? o : v;
    }
    return v;
}

// Block-wide sum / max (every thread gets the result); sh holds 32 values.
template <class T, bool MAX>
__device__ T block_reduce(T v, T* sh) {
    v = MAX ? warp_max(v) : warp_sum(v);
    const int w = threadIdx.x / 32, l = threadIdx.x % 32, nw = blockDim.x / 32;
    __syncthreads();  // sh may still be read by a previous reduction
    if (l == 0) sh[w] = v;
    __syncthreads();
    v = l < nw ? sh[l] : T(0);
    return MAX ? warp_max(v) : warp_sum(v);
}

inline unsigned elementwise_blocks(i64 total, int threads) {
    const i64 want = (total + threads - 1) / threads;
    return static_cast<unsigned>(want < 65536 * 8 ? (want > 0 ? want : 1) : 65536 * 8);
}

}  // namespace
}  // namespace cuda
}  // namespace fastfool
