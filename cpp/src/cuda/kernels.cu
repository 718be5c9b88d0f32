// fastfool's CUDA kernels (float and double): a shared-memory tiled, register-blocked product
// with fused epilogues (bias + activation, activation derivative, the L-inf attack step), warp-
// per-row softmax / cross-entropy epilogues, the inverse activation of back-projection and the
// fused L-inf / L2 update. Semantics mirror the CPU kernels (cpp/src/cpu/kernels.cpp) operation
// for operation, including the NaN behaviour of their min/max and the log1p form of the loss.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "fastfool/cuda.hpp"

namespace fastfool {
namespace cuda {
namespace {

void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) {
        (void)cudaGetLastError();  // clear a non-sticky error so later calls start clean
        throw std::runtime_error(std::string("fastfool CUDA ") + what + ": " + cudaGetErrorString(e));
    }
}

void prepare(int device) { check(cudaSetDevice(device), "cudaSetDevice"); }

cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

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
__device__ __forceinline__ double f_inf(double) { return __longlong_as_double(0x7ff0000000000000LL); }

// std::max / std::min as the CPU kernels use them (a NaN first argument survives).
template <class T>
__device__ __forceinline__ T smax(T a, T b) { return a < b ? b : a; }
template <class T>
__device__ __forceinline__ T smin(T a, T b) { return b < a ? b : a; }
template <class T>
__device__ __forceinline__ T sgn(T v) { return T((v > T(0)) - (v < T(0))); }

template <class T>
__device__ __forceinline__ T act_fwd(int act, T v) {
    switch (act) {
        case 1: return v > T(0) ? v : T(0);
        case 2: return f_tanh(v);
        case 3: return T(1) / (T(1) + f_exp(-v));
        default: return v;
    }
}

// d * act'(pre-activation), written through h = act(pre-activation).
template <class T>
__device__ __forceinline__ T act_deriv(int act, T h, T d) {
    switch (act) {
        case 1: return h > T(0) ? d : T(0);
        case 2: return d * ((T(1) - h) * (T(1) + h));
        case 3: return d * (h * (T(1) - h));
        default: return d;
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
__device__ __noinline__ T act_call(int act, T v) { return act_fwd(act, v); }

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

// ---- the product ---------------------------------------------------------------------------
// Block tile BM x BN, k-slab BK, each thread TM x TN outputs strided by the thread grid (so
// shared-memory reads across a warp hit distinct banks and stores to C are coalesced). The next
// slab's global loads are issued into registers before the current slab's arithmetic, so their
// latency hides behind it. Tiles of at most 128 bytes per thread (PRE) load the epilogue's
// operands (H, or X and X0) for the whole thread tile before the first store: C may alias X (an
// in-place attack step), so loads interleaved with the stores would each wait for the last.
template <class T, int BM, int BN, int BK, int TM, int TN, int MINB, bool TB>
__global__ void __launch_bounds__((BM / TM) * (BN / TN), MINB)
gemm_kernel(const T* __restrict__ A, const T* __restrict__ B, T* C, i64 M, i64 N, i64 K,
            Epilogue<T> ep) {
    constexpr int TX = BN / TN, TY = BM / TM, NT = TX * TY;
    constexpr int PAD = 4;
    constexpr int LA = (BM * BK) / NT, LB = (BN * BK) / NT;
    constexpr bool PRE = TM * TN * sizeof(T) <= 128;
    static_assert((BM * BK) % NT == 0 && (BN * BK) % NT == 0, "tile loads must divide evenly");
    __shared__ T As[BK][BM + PAD];
    __shared__ T Bs[BK][BN + PAD];
    const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
    const i64 m0 = i64(blockIdx.x) * BM, n0 = i64(blockIdx.y) * BN;
    T acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = T(0);

    T ra[LA], rb[LB];
    auto load = [&](i64 k0) {
#pragma unroll
        for (int l = 0; l < LA; ++l) {
            const int idx = tid + l * NT, r = idx / BK, kk = idx % BK;
            const i64 gr = m0 + r, gk = k0 + kk;
            ra[l] = (gr < M && gk < K) ? A[gr * K + gk] : T(0);
        }
#pragma unroll
        for (int l = 0; l < LB; ++l) {
            const int idx = tid + l * NT;
            if (!TB) {
                const int kk = idx / BN, n = idx % BN;
                const i64 gk = k0 + kk, gn = n0 + n;
                rb[l] = (gk < K && gn < N) ? B[gk * N + gn] : T(0);
            } else {
                const int n = idx / BK, kk = idx % BK;
                const i64 gk = k0 + kk, gn = n0 + n;
                rb[l] = (gk < K && gn < N) ? B[gn * K + gk] : T(0);
            }
        }
    };
    load(0);
    for (i64 k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
        for (int l = 0; l < LA; ++l) {
            const int idx = tid + l * NT;
            As[idx % BK][idx / BK] = ra[l];
        }
#pragma unroll
        for (int l = 0; l < LB; ++l) {
            const int idx = tid + l * NT;
            if (!TB)
                Bs[idx / BN][idx % BN] = rb[l];
            else
                Bs[idx % BK][idx / BK] = rb[l];
        }
        __syncthreads();
        if (k0 + BK < K) load(k0 + BK);  // in flight during the arithmetic below
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            T a[TM], b[TN];
#pragma unroll
            for (int i = 0; i < TM; ++i) a[i] = As[kk][ty + i * TY];
#pragma unroll
            for (int j = 0; j < TN; ++j) b[j] = Bs[kk][tx + j * TX];
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }

    if constexpr (PRE) {
        if (ep.mode != kBiasAct) {
            const bool step = ep.mode == kLinfStep;
            const T* P0 = step ? ep.X : ep.H;
            T p0[TM][TN], p1[TM][TN];
#pragma unroll
            for (int i = 0; i < TM; ++i) {
                const i64 r = m0 + ty + i * TY;
#pragma unroll
                for (int j = 0; j < TN; ++j) {
                    const i64 c = n0 + tx + j * TX;
                    const bool in = r < M && c < N;
                    p0[i][j] = in ? P0[r * N + c] : T(0);
                    p1[i][j] = in && step ? ep.X0[r * N + c] : T(0);
                }
            }
#pragma unroll
            for (int i = 0; i < TM; ++i) {
                const i64 r = m0 + ty + i * TY;
#pragma unroll
                for (int j = 0; j < TN; ++j) {
                    const i64 c = n0 + tx + j * TX;
                    if (r < M && c < N)
                        C[r * N + c] = step ? step_call(p0[i][j], acc[i][j], p1[i][j], ep.alpha,
                                                        ep.eps, ep.quantum, ep.lo, ep.hi, c)
                                            : act_deriv(ep.act, p0[i][j], acc[i][j]);
                }
            }
            return;
        }
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const i64 r = m0 + ty + i * TY;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const i64 c = n0 + tx + j * TX;
            if (r < M && c < N) C[r * N + c] = apply_epilogue(ep, acc[i][j], r * N + c, c);
        }
    }
}

template <class T, int BM, int BN, int BK, int TM, int TN, int MINB = 1>
void launch_gemm(const T* A, const T* B, T* C, i64 M, i64 N, i64 K, bool trans_b,
                 const Epilogue<T>& ep, cudaStream_t s) {
    const dim3 grid(static_cast<unsigned>((M + BM - 1) / BM), static_cast<unsigned>((N + BN - 1) / BN));
    const dim3 block((BM / TM) * (BN / TN));
    if (trans_b)
        gemm_kernel<T, BM, BN, BK, TM, TN, MINB, true><<<grid, block, 0, s>>>(A, B, C, M, N, K, ep);
    else
        gemm_kernel<T, BM, BN, BK, TM, TN, MINB, false><<<grid, block, 0, s>>>(A, B, C, M, N, K, ep);
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

// ---- row epilogues: one warp per row -----------------------------------------------------------
template <class T>
__global__ void softmax_rows_kernel(T* S, i64 N, i64 C, int mode) {
    const i64 row = i64(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= N) return;
    T* s = S + row * C;
    T m = -f_inf(T(0));
    for (i64 j = lane; j < C; j += 32) m = s[j] > m ? s[j] : m;
    m = warp_max(m);
    if (!f_finite(m)) {  // +-inf scores: IEEE all the way, as the CPU's scalar path
        T sum = 0;
        for (i64 j = lane; j < C; j += 32) sum += f_exp(s[j]);
        const T lse = f_log(warp_sum(sum));
        for (i64 j = lane; j < C; j += 32) s[j] = mode == 1 ? f_exp(s[j] - lse) : s[j] - lse;
        return;
    }
    T sum = 0;
    for (i64 j = lane; j < C; j += 32) sum += f_exp(s[j] - m);
    sum = warp_sum(sum);
    if (mode == 1) {
        const T inv = T(1) / sum;
        for (i64 j = lane; j < C; j += 32) s[j] = f_exp(s[j] - m) * inv;
    } else {
        const T lse = m + f_log(sum);
        for (i64 j = lane; j < C; j += 32) s[j] = s[j] - lse;
    }
}

template <class T>
__global__ void ce_rows_kernel(T* S, i64 N, i64 C, const i64* __restrict__ y, T* loss, T* prob) {
    const i64 row = i64(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= N) return;
    T* s = S + row * C;
    const i64 yi = y[row];
    const T sy = s[yi];
    T m = -f_inf(T(0));
    for (i64 j = lane; j < C; j += 32) m = s[j] > m ? s[j] : m;
    m = warp_max(m);
    __syncwarp();
    if (!f_finite(m)) {
        T sum = 0;
        for (i64 j = lane; j < C; j += 32) sum += f_exp(s[j]);
        const T lse = f_log(warp_sum(sum));
        if (lane == 0 && loss) loss[row] = lse - sy;
        __syncwarp();
        for (i64 j = lane; j < C; j += 32) {
            const T p = f_exp(s[j] - lse);
            if (prob) prob[row * C + j] = p;
            s[j] = p - (j == yi ? T(1) : T(0));
        }
        return;
    }
    T rest = 0;
    for (i64 j = lane; j < C; j += 32)
        if (j != yi) rest += f_exp(s[j] - m);
    rest = warp_sum(rest);
    const T ey = f_exp(sy - m), sum = rest + ey;
    if (lane == 0 && loss) loss[row] = ey >= T(0.5) ? f_log1p(rest / ey) : (m - sy) + f_log(sum);
    __syncwarp();  // every lane has read s[y] before any lane overwrites it
    const T inv = T(1) / sum;
    for (i64 j = lane; j < C; j += 32) {
        const T p = f_exp(s[j] - m) * inv;
        if (prob) prob[row * C + j] = p;
        s[j] = p - (j == yi ? T(1) : T(0));
    }
}

// ---- element-wise and per-row kernels ----------------------------------------------------------
template <class T>
__global__ void inverse_act_kernel(const T* __restrict__ H, T* Z, const T* __restrict__ bias, i64 N,
                                   i64 K, int act, T margin, unsigned long long* clamped) {
    T lo = 0, hi = 0;
    if (act == 2) {
        lo = T(-1) + margin;
        hi = T(1) - margin;
    } else if (act == 3) {
        lo = margin;
        hi = T(1) - margin;
    }
    unsigned long long count = 0;
    const i64 total = N * K, stride = i64(gridDim.x) * blockDim.x;
    for (i64 i = i64(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
        T v = H[i];
        if (act != 0) {
            if (v < lo) { v = lo; ++count; }
            if (v > hi) { v = hi; ++count; }
            v = act == 2 ? f_atanh(v) : f_log(v) - f_log1p(-v);
        }
        Z[i] = bias ? v - bias[i % K] : v;
    }
    if (count) atomicAdd(clamped, count);
}

template <class T>
__global__ void linf_update_kernel(const T* X, const T* __restrict__ G, const T* __restrict__ X0,
                                   T* out, i64 N, i64 D, T alpha, T eps, const T* lo, const T* hi,
                                   T q) {
    const i64 total = N * D, stride = i64(gridDim.x) * blockDim.x;
    for (i64 i = i64(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride)
        out[i] = linf_step(X[i], G[i], X0[i], alpha, eps, q, lo, hi, i % D);
}

// ||v||_2 of a row without overflow / underflow (scaled by max |v|), as the CPU's scaled_norm.
template <class T, class F>
__device__ T row_norm(i64 D, F value, T* sh) {
    T mx = 0;
    for (i64 j = threadIdx.x; j < D; j += blockDim.x) mx = smax(mx, f_abs(value(j)));
    mx = block_reduce<T, true>(mx, sh);
    if (mx == T(0) || !f_finite(mx)) return mx;
    T sum = 0;
    for (i64 j = threadIdx.x; j < D; j += blockDim.x) {
        const T v = value(j) / mx;
        sum += v * v;
    }
    return mx * f_sqrt(block_reduce<T, false>(sum, sh));
}

// One block per row: step along g / ||g||, project onto the L2 ball, quantise, clip. Each thread
// re-reads only the elements it wrote, so `out` may alias X.
template <class T>
__global__ void l2_update_kernel(const T* X, const T* __restrict__ G, const T* __restrict__ X0,
                                 T* out, i64 N, i64 D, T alpha, T eps, const T* lo, const T* hi,
                                 T q) {
    __shared__ T sh[32];
    const i64 row = blockIdx.x;
    const T* x = X + row * D;
    const T* g = G + row * D;
    const T* c = X0 + row * D;
    T* o = out + row * D;
    const T gn = row_norm<T>(D, [&](i64 j) { return g[j]; }, sh);
    const T step = gn > T(0) ? alpha / gn : T(0);
    const bool direct = f_finite(step);  // else alpha / |g| overflowed (subnormal g): g / |g| first
    for (i64 j = threadIdx.x; j < D; j += blockDim.x)
        o[j] = direct ? x[j] + step * g[j] : x[j] + alpha * (g[j] / gn);
    const T dn = row_norm<T>(D, [&](i64 j) { return o[j] - c[j]; }, sh);
    if (dn > eps) {
        const T f = eps / dn;
        for (i64 j = threadIdx.x; j < D; j += blockDim.x) o[j] = c[j] + (o[j] - c[j]) * f;
    }
    if (q > T(0)) {
        T sum = 0;
        for (i64 j = threadIdx.x; j < D; j += blockDim.x) {
            const T d = f_rint((o[j] - c[j]) / q) * q;
            sum += d * d;
        }
        const bool truncate = f_sqrt(block_reduce<T, false>(sum, sh)) > eps;
        for (i64 j = threadIdx.x; j < D; j += blockDim.x) {
            const T r = (o[j] - c[j]) / q;
            o[j] = c[j] + (truncate ? f_trunc(r) : f_rint(r)) * q;
        }
    }
    for (i64 j = threadIdx.x; j < D; j += blockDim.x) {
        T v = o[j];
        if (lo) v = smax(v, lo[j]);
        if (hi) v = smin(v, hi[j]);
        o[j] = v;
    }
}

// Per-row L2 and L-inf norms of A - B, one warp per row, as the CPU's row_diff_norms: the max
// skips NaN; float rows sum squares in double (cannot overflow); double rows in a safe range
// sum directly, others scale by the max; a NaN anywhere makes both norms NaN.
template <class T>
__global__ void diff_norms_kernel(const T* __restrict__ A, const T* __restrict__ B, i64 N, i64 D,
                                  T* l2, T* linf) {
    const i64 row = i64(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= N) return;
    const T* a = A + row * D;
    const T* b = B + row * D;
    T mx = 0;
    for (i64 j = lane; j < D; j += 32) mx = smax(mx, f_abs(a[j] - b[j]));
    mx = warp_max(mx);
    T n2;
    const bool direct = f_finite(mx) && (sizeof(T) == 4 || mx == T(0) ||
                                         (mx > T(1e-140) && mx < T(1e140)));
    if (direct) {
        double sum = 0;
        for (i64 j = lane; j < D; j += 32) {
            const double d = double(a[j] - b[j]);
            sum += d * d;
        }
        n2 = T(sqrt(warp_sum(sum)));
    } else if (!f_finite(mx)) {
        n2 = mx;  // +inf (the max is never NaN)
    } else {
        T sum = 0;
        for (i64 j = lane; j < D; j += 32) {
            const T v = (a[j] - b[j]) / mx;
            sum += v * v;
        }
        n2 = mx * f_sqrt(warp_sum(sum));
    }
    if (lane == 0) {
        if (l2) l2[row] = n2;
        if (linf) linf[row] = n2 != n2 ? n2 : mx;
    }
}

unsigned elementwise_blocks(i64 total, int threads) {
    const i64 want = (total + threads - 1) / threads;
    return static_cast<unsigned>(want < 65536 * 8 ? (want > 0 ? want : 1) : 65536 * 8);
}

}  // namespace

int device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

std::string describe() {
    int drv = 0, rt = 0;
    cudaRuntimeGetVersion(&rt);
    const cudaError_t e = cudaDriverGetVersion(&drv);
    std::string s = "CUDA runtime " + std::to_string(rt / 1000) + "." + std::to_string(rt % 1000 / 10);
    if (e != cudaSuccess || drv == 0) return s + " (static); no CUDA driver";
    s += " (static), driver " + std::to_string(drv / 1000) + "." + std::to_string(drv % 1000 / 10);
    int n = 0;
    const cudaError_t e2 = cudaGetDeviceCount(&n);
    if (e2 != cudaSuccess) {
        (void)cudaGetLastError();
        return s + "; " + cudaGetErrorString(e2);
    }
    return s + "; " + std::to_string(n) + " device(s)";
}

template <class T>
void gemm(const T* A, const T* B, T* C, i64 M, i64 N, i64 K, bool trans_b, const Epilogue<T>& ep,
          int device, std::uintptr_t stream) {
    if (M <= 0 || N <= 0) return;
    prepare(device);
    const cudaStream_t s = as_stream(stream);
    // Tiles by output width (H100 profile in bench/RESULTS.md): float outputs of <= 16 columns
    // (class scores) take 256 x 16 tiles (a 64-wide tile computed 6x the needed products there);
    // wide bias/activation outputs 128 x 128 with 8 x 8 per thread; everything else with >= 128
    // rows, the epilogue-heavy steps in particular, 128 x 64 with 8 x 4 per thread and the
    // operands preloaded (2-3 blocks per multiprocessor, where the 8 x 8 tile fits one). Double:
    // 128 x 16 (4 x 4) for <= 16 columns, else 64 x 64 (4 x 4); small batches 64 x 64.
    if constexpr (sizeof(T) == 4) {
        if (N <= 16 && M >= 256)
            launch_gemm<T, 256, 16, 8, 8, 4, 2>(A, B, C, M, N, K, trans_b, ep, s);
        else if (N > 64 && M >= 128 && ep.mode == kBiasAct)
            launch_gemm<T, 128, 128, 8, 8, 8>(A, B, C, M, N, K, trans_b, ep, s);
        else if (M >= 128)
            launch_gemm<T, 128, 64, 16, 8, 4, 2>(A, B, C, M, N, K, trans_b, ep, s);
        else
            launch_gemm<T, 64, 64, 16, 4, 4>(A, B, C, M, N, K, trans_b, ep, s);
    } else {
        if (N <= 16 && M >= 128)
            launch_gemm<T, 128, 16, 16, 4, 4>(A, B, C, M, N, K, trans_b, ep, s);
        else
            launch_gemm<T, 64, 64, 16, 4, 4>(A, B, C, M, N, K, trans_b, ep, s);
    }
    check(cudaGetLastError(), "gemm launch");
}

template <class T>
void row_softmax(T* S, i64 N, i64 C, int mode, int device, std::uintptr_t stream) {
    if (N <= 0 || C <= 0 || mode == 0) return;
    prepare(device);
    const unsigned blocks = static_cast<unsigned>((N + 7) / 8);
    softmax_rows_kernel<T><<<blocks, 256, 0, as_stream(stream)>>>(S, N, C, mode);
    check(cudaGetLastError(), "softmax launch");
}

template <class T>
void ce_rows(T* S, i64 N, i64 C, const i64* y, T* loss, T* prob, int device, std::uintptr_t stream) {
    if (N <= 0) return;
    prepare(device);
    const unsigned blocks = static_cast<unsigned>((N + 7) / 8);
    ce_rows_kernel<T><<<blocks, 256, 0, as_stream(stream)>>>(S, N, C, y, loss, prob);
    check(cudaGetLastError(), "cross-entropy launch");
}

template <class T>
void inverse_act(const T* H, T* Z, const T* bias, i64 N, i64 K, int act, T margin,
                 unsigned long long* clamped, int device, std::uintptr_t stream) {
    if (N <= 0 || K <= 0) return;
    prepare(device);
    inverse_act_kernel<T><<<elementwise_blocks(N * K, 256), 256, 0, as_stream(stream)>>>(
        H, Z, bias, N, K, act, margin, clamped);
    check(cudaGetLastError(), "inverse activation launch");
}

template <class T>
void fused_update(const T* X, const T* G, const T* X0, T* out, i64 N, i64 D, bool l2, T alpha,
                  T eps, const T* lo, const T* hi, T quantum, int device, std::uintptr_t stream) {
    if (N <= 0 || D <= 0) return;
    prepare(device);
    const cudaStream_t s = as_stream(stream);
    if (l2)
        l2_update_kernel<T><<<static_cast<unsigned>(N), 256, 0, s>>>(X, G, X0, out, N, D, alpha,
                                                                     eps, lo, hi, quantum);
    else
        linf_update_kernel<T><<<elementwise_blocks(N * D, 256), 256, 0, s>>>(
            X, G, X0, out, N, D, alpha, eps, lo, hi, quantum);
    check(cudaGetLastError(), "update launch");
}

template <class T>
void diff_norms(const T* A, const T* B, i64 N, i64 D, T* l2, T* linf, int device,
                std::uintptr_t stream) {
    if (N <= 0) return;
    prepare(device);
    const unsigned blocks = static_cast<unsigned>((N + 7) / 8);
    diff_norms_kernel<T><<<blocks, 256, 0, as_stream(stream)>>>(A, B, N, D, l2, linf);
    check(cudaGetLastError(), "diff_norms launch");
}

#define FASTFOOL_CUDA_INSTANTIATE(T)                                                              \
    template void gemm<T>(const T*, const T*, T*, i64, i64, i64, bool, const Epilogue<T>&, int,   \
                          std::uintptr_t);                                                        \
    template void row_softmax<T>(T*, i64, i64, int, int, std::uintptr_t);                         \
    template void ce_rows<T>(T*, i64, i64, const i64*, T*, T*, int, std::uintptr_t);              \
    template void inverse_act<T>(const T*, T*, const T*, i64, i64, int, T, unsigned long long*,  \
                                 int, std::uintptr_t);                                            \
    template void fused_update<T>(const T*, const T*, const T*, T*, i64, i64, bool, T, T,        \
                                  const T*, const T*, T, int, std::uintptr_t);               \
    template void diff_norms<T>(const T*, const T*, i64, i64, T*, T*, int, std::uintptr_t);

FASTFOOL_CUDA_INSTANTIATE(float)
FASTFOOL_CUDA_INSTANTIATE(double)

}  // namespace cuda
}  // namespace fastfool
