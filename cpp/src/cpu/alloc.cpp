// Large scratch blocks (packed weights, per-thread workspaces) with a small cache of freed ones.
// An attack calls the same kernels with the same shapes many times; a fresh multi-megabyte
// block costs a page fault per page and the OS zeroing it (measured: packing the 49 MB of a
// 12288 x 1000 weight matrix took 25-30 ms per call on 2 threads, most of it in faults).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

#if defined(__linux__)
#include <sys/sysinfo.h>
#endif

#include "fastfool/gemm.hpp"

namespace fastfool {
namespace {

constexpr std::size_t kMinCached = std::size_t(1) << 20;    // smaller blocks: plain new / delete
constexpr std::size_t kMaxCached = std::size_t(128) << 20;  // bytes kept in all, at most
constexpr int kSlots = 4;

struct Cache {
    std::mutex m;
    void* p[kSlots] = {};
    std::size_t bytes[kSlots] = {};
};

Cache& cache() {
    static Cache* c = new Cache;  // never destroyed: blocks may be released during exit
    return *c;
}

// RAM plus swap (0: unknown). A request beyond it is refused before operator new is asked:
// under overcommit a huge request may "succeed" and fail page by page later, and under
// AddressSanitizer a failed operator new aborts instead of throwing.
std::size_t memory_bytes() {
#if defined(__linux__)
    struct sysinfo si{};
    if (sysinfo(&si) == 0)
        return (std::size_t(si.totalram) + std::size_t(si.totalswap)) * si.mem_unit;
#endif
    return 0;
}

void* fresh(std::size_t bytes) {
    static const std::size_t limit = memory_bytes();
    if (bytes > kMaxScratchBytes || (limit && bytes > limit)) throw ScratchTooLarge(bytes, 1);
    return ::operator new(bytes, std::align_val_t(64));
}
void drop(void* p) { ::operator delete(p, std::align_val_t(64)); }

}  // namespace

void* acquire_block(std::size_t bytes, std::size_t& got) {
    if (bytes < kMinCached) {
        got = bytes;
        return fresh(bytes ? bytes : 1);
    }
    {
        Cache& c = cache();
        std::lock_guard<std::mutex> lk(c.m);
        // the smallest cached block that holds the request and is at most twice its size
        int best = -1;
        for (int i = 0; i < kSlots; ++i)
            if (c.p[i] && c.bytes[i] >= bytes && c.bytes[i] <= 2 * bytes &&
                (best < 0 || c.bytes[i] < c.bytes[best]))
                best = i;
        if (best >= 0) {
            void* p = c.p[best];
            got = c.bytes[best];
            c.p[best] = nullptr;
            c.bytes[best] = 0;
            return p;
        }
    }
    got = bytes;
    return fresh(bytes);
}

void release_block(void* p, std::size_t bytes) noexcept {
    if (!p) return;
    if (bytes >= kMinCached && bytes <= kMaxCached) {
        Cache& c = cache();
        std::lock_guard<std::mutex> lk(c.m);
        std::size_t total = bytes;
        int slot = -1;
        for (int i = 0; i < kSlots; ++i) {
            total += c.bytes[i];
            if (!c.p[i] && slot < 0) slot = i;
        }
        // full or over the byte budget: evict the smallest block if this one is larger
        if (slot < 0 || total > kMaxCached) {
            int smallest = -1;
            for (int i = 0; i < kSlots; ++i)
                if (c.p[i] && (smallest < 0 || c.bytes[i] < c.bytes[smallest])) smallest = i;
            while (total > kMaxCached || slot < 0) {
                if (smallest < 0 || c.bytes[smallest] >= bytes) {
                    drop(p);
                    return;
                }
                total -= c.bytes[smallest];
                drop(c.p[smallest]);
                c.p[smallest] = nullptr;
                c.bytes[smallest] = 0;
                slot = smallest;
                smallest = -1;
                for (int i = 0; i < kSlots; ++i)
                    if (c.p[i] && (smallest < 0 || c.bytes[i] < c.bytes[smallest])) smallest = i;
            }
        }
        c.p[slot] = p;
        c.bytes[slot] = bytes;
        return;
    }
    drop(p);
}

std::size_t cached_block_bytes() {
    Cache& c = cache();
    std::lock_guard<std::mutex> lk(c.m);
    std::size_t total = 0;
    for (int i = 0; i < kSlots; ++i) total += c.bytes[i];
    return total;
}

void poison_block_cache() {
    Cache& c = cache();
    std::lock_guard<std::mutex> lk(c.m);
    for (int i = 0; i < kSlots; ++i)
        if (c.p[i]) std::memset(c.p[i], 0xff, c.bytes[i]);  // all-ones bytes: NaN as float / double
}

}  // namespace fastfool
