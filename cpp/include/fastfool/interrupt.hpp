// Stopping a long kernel call early (Ctrl-C). The core library knows nothing about Python: the
// binding that makes a call installs an InterruptScope on the calling thread with a poll
// function (which reacquires the GIL for a moment and runs Python's signal handlers). Kernels
// call checkpoint() between units of work (a task of parallel_for, a PGD step of a row block,
// a column panel of a product); on the calling thread it runs the poll at most every
// `interval` and, once the poll says stop, every thread working on that call throws
// Interrupted at its next checkpoint. parallel_for stops handing out tasks, waits for the
// tasks already running, and rethrows Interrupted on the calling thread.
//
// What a caller owns may then be partly written: an output array (or an in-place X) holds the
// rows or blocks finished before the stop and stale values elsewhere.
#pragma once
#include <atomic>
#include <chrono>
#include <exception>

namespace fastfool {

struct Interrupted : std::exception {
    const char* what() const noexcept override { return "fastfool: interrupted"; }
};

// Returns true when the call should stop. Runs on the thread that installed it, only there.
using PollFn = bool (*)(void* ctx);

class InterruptScope {
public:
    InterruptScope(PollFn poll, void* ctx,
                   std::chrono::microseconds interval = std::chrono::microseconds(20000));
    ~InterruptScope();
    InterruptScope(const InterruptScope&) = delete;
    InterruptScope& operator=(const InterruptScope&) = delete;

    std::atomic<bool> stop{false};
    PollFn poll;
    void* ctx;
    std::chrono::microseconds interval;
    std::chrono::steady_clock::time_point next;

private:
    InterruptScope* outer_;
    std::atomic<bool>* outer_flag_;
};

// Runs the poll when one is due on this thread; true when the current call should stop.
bool stop_requested();

// Throws Interrupted when the current call should stop.
inline void checkpoint() {
    if (stop_requested()) throw Interrupted();
}

}  // namespace fastfool
