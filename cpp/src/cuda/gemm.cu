// The CUDA product C = A . op(B) with fused epilogues (bias + activation, activation derivative,
// the L-inf attack step): shared-memory tiles, register blocking, the next slab's loads issued
// before the current slab's arithmetic. 2 M N K FLOPs; tiles chosen by output width (below).
// Semantics mirror the CPU kernels operation for operation (cpp/src/cpu/linear.cpp, mlp.cpp).
#include "common.cuh"

namespace fastfool {
namespace cuda {
namespace {

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
    const dim3 grid(static_cast<unsigned>((M + BM - 1) / BM),
                    static_cast<unsigned>((N + BN - 1) / BN));
    const dim3 block((BM / TM) * (BN / TN));
    if (trans_b)
        gemm_kernel<T, BM, BN, BK, TM, TN, MINB, true><<<grid, block, 0, s>>>(A, B, C, M, N, K, ep);
    else
        gemm_kernel<T, BM, BN, BK, TM, TN, MINB, false>
            <<<grid, block, 0, s>>>(A, B, C, M, N, K, ep);
}

}  // namespace

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

template void gemm<float>(const float*, const float*, float*, i64, i64, i64, bool,
                          const Epilogue<float>&, int, std::uintptr_t);
template void gemm<double>(const double*, const double*, double*, i64, i64, i64, bool,
                           const Epilogue<double>&, int, std::uintptr_t);

}  // namespace cuda
}  // namespace fastfool
