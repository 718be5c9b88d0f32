// fastfool's own small thread pool. The calling thread always takes part and claims tasks from
// a shared counter; it waits only for tasks that other threads have actually claimed, never for
// threads that have not woken up yet. So a call cannot stall behind a descheduled worker (as an
// OpenMP barrier does when OpenBLAS's spinning threads hold the cores), and it stays correct in
// a forked child or when several Python threads call kernels at once (the second runs inline).
// Idle workers spin up to 0.3 ms for the next call, then sleep on a condition variable. A call
// can be stopped between tasks (interrupt.hpp): parallel_for then rethrows Interrupted.
#pragma once
#include <cstdint>
#include <functional>

#include "fastfool/interrupt.hpp"

namespace fastfool {

using TaskFn = std::function<void(std::int64_t task, int worker)>;

// Runs fn(task, worker) for every task in [0, ntasks) on up to `threads` threads; `worker` is
// in [0, threads) and no two concurrently running tasks share it (index per-thread scratch by
// it). Returns when every task has finished; rethrows the first exception a task threw.
void parallel_for(std::int64_t ntasks, int threads, const TaskFn& fn);

// Workers the pool keeps: it grows on demand and retires, at the start of each pooled call,
// the workers that call does not use (threads - 1 are kept).
int pool_size();

}  // namespace fastfool
