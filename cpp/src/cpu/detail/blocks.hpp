// Row blocks: views of a block's rows, the threaded loop over blocks with per-thread
// workspaces, and the bias add every epilogue starts with. Internal to the CPU kernels.
#pragma once
#include <cstdint>
#include <vector>

#include "fastfool/gemm.hpp"
#include "fastfool/kernels.hpp"

namespace fastfool {
namespace detail {
namespace {  // internal linkage: each kernel file gets its own copy, inlined as it needs

template <class T>
MatView<T> rows_of(const MatView<T>& A, std::int64_t r0, std::int64_t r1) {
    return {A.data + r0 * A.rs, r1 - r0, A.cols, A.rs, A.cs};
}

template <class T>
MatView<T> dense_view(const T* p, std::int64_t rows, std::int64_t cols, std::int64_t ld) {
    return {p, rows, cols, ld, 1};
}

// Runs body(r0, r1, workspace) over blocks of mc rows on up to `threads` threads. Workspaces
// are made before the parallel region so that allocation failures surface as exceptions.
// Returns the workspaces so callers can reduce per-thread counters.
// Blocks have mc rows, fewer (a multiple of mr) when N is small, so that every thread gets at
// least two blocks: a 96-row batch on 2 threads would otherwise leave one core idle.
template <class WS, class Make, class Body>
std::vector<WS> for_row_blocks(std::int64_t N, std::int64_t mc, std::int64_t mr, int threads,
                               Make make, Body body) {
    if (threads > 1) {
        const std::int64_t want = (N + 2 * threads - 1) / (2 * threads);
        mc = std::max(mr, std::min(mc, (want + mr - 1) / mr * mr));
    }
    const std::int64_t nblocks = (N + mc - 1) / mc;
    if (nblocks <= 0) return {};
    const int nt =
        static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(threads, nblocks)));
    std::vector<WS> ws;
    ws.reserve(nt);
    for (int t = 0; t < nt; ++t) ws.emplace_back(make());
    parallel_for(nblocks, nt, [&](std::int64_t blk, int worker) {
        const std::int64_t r0 = blk * mc, r1 = std::min(N, r0 + mc);
        body(r0, r1, ws[worker]);
    });
    return ws;
}

template <class T>
void add_bias(T* row, std::int64_t n, const VecView<T>& b) {
    if (!b.data) return;
    if (b.stride == 1)
        for (std::int64_t j = 0; j < n; ++j) row[j] += b.data[j];
    else
        for (std::int64_t j = 0; j < n; ++j) row[j] += b.data[j * b.stride];
}

// Whether a kernel writes its N x D gradient with streaming stores (where gemm_rows can: see
// its `stream`): only outputs far larger than the caches, which the stores would otherwise
// read in first (200k x 784 x 10 float CE gradient into a 64-byte aligned G: 71-76 -> 63-66 ms
// on 2 threads, 130 -> 117 ms on 1). A smaller output is likely read again soon: from cache.
inline bool streams(std::int64_t N, std::int64_t D, std::size_t elem) {
    return double(N) * double(D) * double(elem) >= double(32 << 20);
}

template <class T>
struct BlockWS {
    GemmScratch<T> g;
    Buffer<T> a, b, c;
    std::int64_t counter = 0;
    BlockWS(const MicroKernel<T>& mk, std::size_t na, std::size_t nb, std::size_t nc = 0)
        : g(mk), a(na), b(nb), c(nc) {}
};

}  // namespace
}  // namespace detail
}  // namespace fastfool
