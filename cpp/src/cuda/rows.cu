// fastfool's per-row and element-wise CUDA kernels: warp-per-row softmax / cross-entropy (the
// log1p form of the loss), the inverse activation of back-projection, the fused L-inf / L2
// update (L2: one block per row) and the per-row norms of a difference; plus the device queries.
// O(N C) or O(N D) each, memory-bound. Semantics mirror the CPU kernels (cpp/src/cpu/).
#include "common.cuh"

namespace fastfool {
namespace cuda {
namespace {

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
            if (v < lo) {
                v = lo;
                ++count;
            }
            if (v > hi) {
                v = hi;
                ++count;
            }
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
    const bool direct =
        f_finite(mx) && (sizeof(T) == 4 || mx == T(0) || (mx > T(1e-140) && mx < T(1e140)));
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
    std::string s =
        "CUDA runtime " + std::to_string(rt / 1000) + "." + std::to_string(rt % 1000 / 10);
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

int pointer_device(std::uintptr_t p) {
    cudaPointerAttributes a{};
    if (cudaPointerGetAttributes(&a, reinterpret_cast<const void*>(p)) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged ? a.device : -1;
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
void ce_rows(T* S, i64 N, i64 C, const i64* y, T* loss, T* prob, int device,
             std::uintptr_t stream) {
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

#define FASTFOOL_CUDA_INSTANTIATE(T)                                                            \
    template void row_softmax<T>(T*, i64, i64, int, int, std::uintptr_t);                       \
    template void ce_rows<T>(T*, i64, i64, const i64*, T*, T*, int, std::uintptr_t);            \
    template void inverse_act<T>(const T*, T*, const T*, i64, i64, int, T, unsigned long long*, \
                                 int, std::uintptr_t);                                          \
    template void fused_update<T>(const T*, const T*, const T*, T*, i64, i64, bool, T, T,       \
                                  const T*, const T*, T, int, std::uintptr_t);                  \
    template void diff_norms<T>(const T*, const T*, i64, i64, T*, T*, int, std::uintptr_t);

FASTFOOL_CUDA_INSTANTIATE(float)
FASTFOOL_CUDA_INSTANTIATE(double)

}  // namespace cuda
}  // namespace fastfool
