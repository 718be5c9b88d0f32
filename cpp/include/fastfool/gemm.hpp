// Packed, cache-blocked matrix product used by every kernel: C[M x N] (+)= A[M x K] * B[K x N]
// for one row block (M <= mc) at a time, so that callers can fuse their epilogues while the
// block's output is still in L2. B is packed once per call into kc x nr panels (shared by all
// threads); each thread packs its own A slivers. Cost: 2*M*N*K FLOPs; B is read from L3.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "fastfool/dispatch.hpp"
#include "fastfool/threads.hpp"
#include "fastfool/view.hpp"

namespace fastfool {

inline void prefetch_l2(const char* p) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p, 0, 2);
#else
    (void)p;
#endif
}

// 64-byte aligned storage for large scratch (see alloc.cpp): a freed block of at least 1 MiB
// is kept for the next request it can serve, so that a kernel called again with the same shapes
// does not fault its pages in (and have the OS zero them) on every call.
void* acquire_block(std::size_t bytes, std::size_t& got);
void release_block(void* p, std::size_t bytes) noexcept;
std::size_t cached_block_bytes();  // test hooks: bytes held by the cache, and filling them
void poison_block_cache();         // with all-ones bytes (NaN) to catch reads of stale scratch

// A scratch request no machine can meet (or whose byte count would overflow): refused before
// any allocation, as MemoryError in Python (pybind11 maps std::bad_alloc to it).
constexpr std::size_t kMaxScratchBytes = std::size_t(1) << 50;  // 1 PiB
class ScratchTooLarge : public std::bad_alloc {
public:
    ScratchTooLarge(std::size_t n, std::size_t elem) {
        std::snprintf(msg_, sizeof msg_,
                      "fastfool: a kernel workspace of %.4g GiB cannot be allocated (more than "
                      "this machine's memory: the shapes are too large)",
                      static_cast<double>(n) * static_cast<double>(elem) / 1073741824.0);
    }
    const char* what() const noexcept override { return msg_; }

private:
    char msg_[160];
};

// 64-byte aligned, uninitialised storage.
template <class T>
class Buffer {
public:
    Buffer() = default;
    explicit Buffer(std::size_t n) { resize(n); }
    void resize(std::size_t n) {
        if (n <= n_) return;
        if (n > kMaxScratchBytes / sizeof(T)) throw ScratchTooLarge(n, sizeof(T));
        std::size_t got = 0;
        T* p = static_cast<T*>(acquire_block(n * sizeof(T), got));
        ptr_ = std::unique_ptr<T, Free>(p, Free{got});
        n_ = got / sizeof(T);
    }
    T* data() const { return ptr_.get(); }

private:
    struct Free {
        std::size_t bytes = 0;
        void operator()(T* p) const noexcept { release_block(p, bytes); }
    };
    std::unique_ptr<T, Free> ptr_;
    std::size_t n_ = 0;
};

template <class T>
struct PackedB {
    Buffer<T> buf;
    std::int64_t K = 0, N = 0, npanels = 0, kc = 0, nr = 0;
    const T* panel(std::int64_t pc, std::int64_t jp) const {
        const std::int64_t kcb = std::min(kc, K - pc);
        return buf.data() + pc * npanels * nr + jp * kcb * nr;
    }
};

template <class T>
PackedB<T> pack_b(const MatView<T>& B, const MicroKernel<T>& mk, int threads) {
    PackedB<T> pb;
    pb.K = B.rows;
    pb.N = B.cols;
    pb.kc = mk.kc;
    pb.nr = mk.nr;
    pb.npanels = (B.cols + mk.nr - 1) / mk.nr;
    pb.buf.resize(static_cast<std::size_t>(std::max<std::int64_t>(1, pb.K * pb.npanels * pb.nr)));
    const std::int64_t nkb = (pb.K + pb.kc - 1) / pb.kc;
    const std::int64_t ntasks = nkb * pb.npanels;
    const std::int64_t nr = pb.nr;
    parallel_for(ntasks, ntasks > 8 ? threads : 1, [&](std::int64_t t, int) {
        const std::int64_t pc = (t / pb.npanels) * pb.kc, jp = t % pb.npanels;
        const std::int64_t kcb = std::min(pb.kc, pb.K - pc);
        const std::int64_t j0 = jp * nr, nb = std::min(nr, pb.N - j0);
        T* dst = const_cast<T*>(pb.panel(pc, jp));
        if (B.rs == 1 && B.cs != 1) {  // B = W^T of a row-major W: read W's rows contiguously
            for (std::int64_t j = 0; j < nb; ++j) {
                const T* src = B.data + pc + (j0 + j) * B.cs;
                for (std::int64_t p = 0; p < kcb; ++p) dst[p * nr + j] = src[p];
            }
            for (std::int64_t j = nb; j < nr; ++j)
                for (std::int64_t p = 0; p < kcb; ++p) dst[p * nr + j] = T(0);
            return;
        }
        for (std::int64_t p = 0; p < kcb; ++p) {
            const T* src = B.data + (pc + p) * B.rs + j0 * B.cs;
            T* d = dst + p * nr;
            std::int64_t j = 0;
            if (B.cs == 1)
                for (; j < nb; ++j) d[j] = src[j];
            else
                for (; j < nb; ++j) d[j] = src[j * B.cs];
            for (; j < nr; ++j) d[j] = T(0);
        }
    });
    return pb;
}

// Columns of a scratch row holding a width-n product with whole tiles (see gemm_rows' padded).
template <class T>
std::int64_t padded_width(std::int64_t n, const MicroKernel<T>& mk) {
    return std::max<std::int64_t>(mk.nr, (n + mk.nr - 1) / mk.nr * mk.nr);
}

// Rows of such a scratch: a row block (<= mc rows) rounded up to whole mr-row slivers.
template <class T>
std::size_t padded_rows(const MicroKernel<T>& mk) {
    return std::size_t((mk.mc + mk.mr - 1) / mk.mr * mk.mr);
}

// Per-thread scratch for gemm_rows.
template <class T>
struct GemmScratch {
    Buffer<T> apack, tile;
    explicit GemmScratch(const MicroKernel<T>& mk)
        : apack(static_cast<std::size_t>(mk.mc + mk.mr) * mk.kc + 8), tile(mk.mr * mk.nr) {}
};

// C[M x N] (row stride ldc, contiguous columns) = (accumulate ? C : 0) + A * B, M <= mk.mc.
// Rows of A with contiguous columns are read in place by the micro-kernel when at most 4 column
// panels reuse them (small C and narrow layers: there packing cost as much as the product).
// Otherwise A is packed into zero-padded mr-row slivers: a GEMM-bound product re-reads A once
// per panel, and rows far apart alias in L1/L2 sets (measured: FGSM on the 12288 -> 1000 shape
// went from 0.73x to 0.90x of NumPy when P (ld = 1000) was packed instead of read in place).
// The ragged last sliver is always packed. With `padded`, C is the caller's scratch with room
// for whole tiles (rows up to a multiple of mr, columns up to npanels * nr <= ldc): ragged tiles
// are then written in place, their padding columns and rows holding values nobody reads,
// instead of going through a tile copy (narrow layers would spend much of their time there).
template <class T>
void gemm_rows(const MatView<T>& A, const PackedB<T>& B, T* C, std::int64_t ldc, bool accumulate,
               const MicroKernel<T>& mk, GemmScratch<T>& ws, bool padded = false,
               bool stream = false) {
    const std::int64_t M = A.rows, N = B.N, K = B.K, mr = mk.mr, nr = mk.nr;
    if (M == 0 || N == 0) return;
    if (K == 0) {
        if (!accumulate)
            for (std::int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, T(0));
        return;
    }
    const std::int64_t nslivers = (M + mr - 1) / mr;
    const bool direct = A.cs == 1 && B.npanels <= 4;
    const std::int64_t first_packed = direct ? M / mr : 0;  // slivers before it are read in place
    T* ap = ws.apack.data();
    T* tile = ws.tile.data();
    // Non-temporal stores where asked for and possible: one pass, every tile row a whole cache
    // line (C and its row stride 64-byte aligned). Otherwise the lines would be written in
    // parts, which costs far more than reading them first.
    const bool nt = stream && K <= mk.kc && !accumulate &&
                    reinterpret_cast<std::uintptr_t>(C) % 64 == 0 &&
                    (ldc * static_cast<std::int64_t>(sizeof(T))) % 64 == 0;
    for (std::int64_t pc = 0; pc < K; pc += mk.kc) {
        const std::int64_t kcb = std::min<std::int64_t>(mk.kc, K - pc);
        for (std::int64_t s = first_packed; s < nslivers; ++s) {
            T* dst = ap + s * mr * kcb;
            if (A.cs == 1 && (s + 1) * mr <= M) {  // whole sliver, rows contiguous
                mk.pack_a(kcb, A.data + s * mr * A.rs + pc, A.rs, dst);
                continue;
            }
            for (std::int64_t i = 0; i < mr; ++i) {
                const std::int64_t row = s * mr + i;
                if (row < M) {
                    const T* src = A.data + row * A.rs + pc * A.cs;
                    if (A.cs == 1)
                        for (std::int64_t p = 0; p < kcb; ++p) dst[p * mr + i] = src[p];
                    else
                        for (std::int64_t p = 0; p < kcb; ++p) dst[p * mr + i] = src[p * A.cs];
                } else {
                    for (std::int64_t p = 0; p < kcb; ++p) dst[p * mr + i] = T(0);
                }
            }
        }
        const bool acc = accumulate || pc > 0;
        auto one_tile = [&](std::int64_t jp, std::int64_t s) {
            const T* bp = B.panel(pc, jp);
            const std::int64_t j0 = jp * nr, nb = std::min(nr, N - j0);
            const std::int64_t i0 = s * mr, mb = std::min(mr, M - i0);
            const bool in_place = s < first_packed;
            const T* a = in_place ? A.data + i0 * A.rs + pc : ap + s * mr * kcb;
            const std::int64_t rsa = in_place ? A.rs : 1, csa = in_place ? 1 : mr;
            T* c = C + i0 * ldc + j0;
            const MicroKernelFn<T> fn = in_place ? mk.fn_rows : mk.fn;
            if (nt && !in_place && mb == mr && nb == nr) {
                mk.fn_stream(kcb, a, rsa, csa, bp, c, ldc, false);
            } else if ((mb == mr && nb == nr) || padded) {
                fn(kcb, a, rsa, csa, bp, c, ldc, acc);
            } else {
                fn(kcb, a, rsa, csa, bp, tile, nr, false);
                for (std::int64_t i = 0; i < mb; ++i)
                    for (std::int64_t j = 0; j < nb; ++j)
                        c[i * ldc + j] = acc ? c[i * ldc + j] + tile[i * nr + j] : tile[i * nr + j];
            }
        };
        if (pc == 0 && kcb == K && B.npanels > 4) {
            // One shallow pass writing a wide output (the gradient's final product, k = C or a
            // narrow layer): each sliver writes its rows whole, left to right, so the stores
            // form mr sequential streams instead of mr-row strips scattered over the block
            // (200k x 784 x 10 CE gradient: 111-118 -> 78-87 ms on 2 threads). B, at most kc
            // deep, stays in L1/L2 across slivers.
            for (std::int64_t s = 0; s < nslivers; ++s)
                for (std::int64_t jp = 0; jp < B.npanels; ++jp) one_tile(jp, s);
        } else {
            // While a panel's slivers run, the next panel is fetched, a share per sliver: with
            // B far larger than the caches (12288 x 1000) its panels come from DRAM once per
            // row block, and the hardware prefetcher restarts at each panel.
            const std::int64_t lines =
                (std::min<std::int64_t>(mk.kc, K - pc) * nr * static_cast<std::int64_t>(sizeof(T)) +
                 63) /
                64;
            const std::int64_t share = (lines + nslivers - 1) / nslivers;
            for (std::int64_t jp = 0; jp < B.npanels; ++jp) {
                const char* next = jp + 1 < B.npanels
                                       ? reinterpret_cast<const char*>(B.panel(pc, jp + 1))
                                       : nullptr;
                for (std::int64_t s = 0; s < nslivers; ++s) {
                    if (next)
                        for (std::int64_t l = s * share; l < std::min(lines, (s + 1) * share); ++l)
                            prefetch_l2(next + 64 * l);
                    one_tile(jp, s);
                }
            }
        }
    }
    if (nt) std::atomic_thread_fence(std::memory_order_seq_cst);  // orders the streamed stores
}

}  // namespace fastfool
