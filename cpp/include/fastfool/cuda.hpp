// The CUDA kernels' host interface: plain C++ (no CUDA headers), so the pybind11 bindings are
// compiled by the host compiler. Every matrix is dense row-major on the device; pointers are
// device pointers that the bindings have checked (cpp/bindings/cuda.cpp: shape, dtype,
// contiguity, writability and device of every array, read from __cuda_array_interface__);
// `stream` is a cudaStream_t (CuPy's current stream); `device` is the CUDA device the arrays
// live on. Launches are asynchronous on
// that stream; launch errors are thrown as std::runtime_error.
#pragma once

#include <cstdint>
#include <string>

namespace fastfool {
namespace cuda {

using i64 = std::int64_t;

// Number of visible CUDA devices; 0 (never an error) when there is no driver or no device.
int device_count();
// "driver X.Y, runtime X.Y" or the reason none is usable.
std::string describe();
// The device whose memory (device or managed) holds address p; -1 for host memory, an unknown
// address or no driver.
int pointer_device(std::uintptr_t p);

// Activation codes as in the CPU kernels: 0 identity, 1 relu, 2 tanh, 3 logistic.
// Epilogue of a product C = A . op(B), applied to each element of the (M, N) result:
//   kBiasAct:  C = act(v + bias[c])              (bias may be null)
//   kDerivAct: C = v * act'(.) written through H = act(pre-activation), (M, N) dense
//   kLinfStep: out = clip(proj_eps(X + alpha * sign(v)) [quantised]) (the L-inf attack step;
//              X, X0 (M, N) dense; lo, hi per-column bounds or null); C is `out`.
enum EpiMode : int { kBiasAct = 0, kDerivAct = 1, kLinfStep = 2 };

template <class T>
struct Epilogue {
    int mode = kBiasAct;
    int act = 0;
    const T* bias = nullptr;
    const T* H = nullptr;
    const T* X = nullptr;
    const T* X0 = nullptr;
    const T* lo = nullptr;
    const T* hi = nullptr;
    T alpha = 0, eps = 0, quantum = 0;
};

// C[M, N] = A[M, K] . B[K, N] (trans_b false) or A[M, K] . B[N, K]^T (trans_b true), then the
// epilogue. Tiled in shared memory, register-blocked (8x8, 8x4 or 4x4 outputs per thread; the
// tile is chosen by output width and epilogue, see gemm.cu).
template <class T>
void gemm(const T* A, const T* B, T* C, i64 M, i64 N, i64 K, bool trans_b, const Epilogue<T>& ep,
          int device, std::uintptr_t stream);

// Row epilogues on S (N, C), one warp per row: mode 1 softmax, 2 log-softmax (max subtracted;
// NaN / inf rows follow IEEE as on the CPU).
template <class T>
void row_softmax(T* S, i64 N, i64 C, int mode, int device, std::uintptr_t stream);

// Softmax cross-entropy on logits S (N, C) at labels y: loss[i] (log1p form when P[y] >= 1/2),
// prob (N, C) if not null, and S overwritten by P - onehot(y).
template <class T>
void ce_rows(T* S, i64 N, i64 C, const i64* y, T* loss, T* prob, int device, std::uintptr_t stream);

// Z = act^{-1}(clamp(H)) - bias for tanh / logistic / identity; counts clamped values into
// *clamped (a device counter, added to).
template <class T>
void inverse_act(const T* H, T* Z, const T* bias, i64 N, i64 K, int act, T margin,
                 unsigned long long* clamped, int device, std::uintptr_t stream);

// The fused attack update of fastfool.kernels.fused_update (L-inf elementwise, L2 one block
// per row), all (N, D) dense; out may equal X.
template <class T>
void fused_update(const T* X, const T* G, const T* X0, T* out, i64 N, i64 D, bool l2, T alpha,
                  T eps, const T* lo, const T* hi, T quantum, int device, std::uintptr_t stream);

// Per-row L2 and L-inf norms of A - B (N, D) dense, one warp per row; NaN rows give NaN (as
// kernels.diff_norms on the CPU). l2 or linf may be null.
template <class T>
void diff_norms(const T* A, const T* B, i64 N, i64 D, T* l2, T* linf, int device,
                std::uintptr_t stream);

}  // namespace cuda
}  // namespace fastfool
