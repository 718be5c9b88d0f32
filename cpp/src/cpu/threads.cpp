// The thread pool behind parallel_for (see threads.hpp for why it is not OpenMP).
#include "fastfool/threads.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#define FASTFOOL_HAVE_GETPID 1
#endif

namespace fastfool {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

// Spins (with a pause instruction) until ready() or `us` microseconds have passed; the caller
// then takes its usual lock-and-wait path, which returns at once when ready() already holds.
// Attack loops call the kernels back to back: a worker that sleeps between the calls has to be
// woken through the kernel each time, and is often woken on the caller's own core, where it
// waits for the caller to block (measured: a 1 ms CE gradient took as long on 2 threads as on
// one). A short spin keeps it on its own core for the next call; an idle pool then costs up to
// `us` of CPU per call, and sleeps as before.
template <class F>
void spin_until(F ready, int us) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
    for (;;) {
        for (int i = 0; i < 64; ++i) {
            if (ready()) return;
            cpu_relax();
        }
        if (std::chrono::steady_clock::now() >= end) return;
    }
}
constexpr int kSpinMicros = 300;

struct Job {
    const TaskFn* fn = nullptr;
    std::int64_t ntasks = 0;
    int max_workers = 1;
    std::atomic<std::int64_t> next{0};
    std::atomic<std::int64_t> done{0};
    std::mutex error_mutex;
    std::exception_ptr error;
};

class Pool {
public:
    Pool() {
#if defined(FASTFOOL_HAVE_GETPID)
        pid_ = getpid();
#endif
    }

    // True when this process is the one that started the workers (false in a forked child,
    // where they do not exist).
    bool usable() const {
#if defined(FASTFOOL_HAVE_GETPID)
        return getpid() == pid_;
#else
        return true;
#endif
    }

    std::unique_lock<std::mutex> try_acquire() {
        return std::unique_lock<std::mutex>(submit_, std::try_to_lock);
    }

    void run(const std::shared_ptr<Job>& job, int threads) {
        grow(threads - 1);
        {
            std::lock_guard<std::mutex> lk(m_);
            job_ = job;
            ++generation_;
        }
        work_.notify_all();
        work_on(*job, 0);
        spin_until([&] { return job->done.load() == job->ntasks; }, kSpinMicros);
        {
            std::unique_lock<std::mutex> lk(m_);
            done_.wait(lk, [&] { return job->done.load() == job->ntasks; });
            job_.reset();
        }
    }

    int size() {
        std::lock_guard<std::mutex> lk(m_);
        return static_cast<int>(nworkers_);
    }

    void work_on(Job& job, int worker) {
        for (;;) {
            const std::int64_t t = job.next.fetch_add(1);
            if (t >= job.ntasks) return;  // late arrivals stop here and never touch job.fn
            try {
                (*job.fn)(t, worker);
            } catch (...) {
                std::lock_guard<std::mutex> lk(job.error_mutex);
                if (!job.error) job.error = std::current_exception();
            }
            if (job.done.fetch_add(1) + 1 == job.ntasks) {
                std::lock_guard<std::mutex> lk(m_);  // pairs with the caller's predicate check
                done_.notify_all();
            }
        }
    }

private:
    void grow(int n) {
        std::lock_guard<std::mutex> lk(m_);
        while (nworkers_ < static_cast<std::size_t>(n)) {
            const int id = static_cast<int>(++nworkers_);
            std::thread(&Pool::loop, this, id).detach();  // the pool lives for the whole process
        }
    }

    void loop(int id) {
        std::uint64_t seen = 0;
        {
            std::lock_guard<std::mutex> lk(m_);
            seen = generation_ - (job_ ? 1 : 0);  // a job posted just before we started counts
        }
        for (;;) {
            std::shared_ptr<Job> job;
            spin_until([&] { return generation_.load() != seen; }, kSpinMicros);
            {
                std::unique_lock<std::mutex> lk(m_);
                work_.wait(lk, [&] { return generation_ != seen; });
                seen = generation_;
                job = job_;
            }
            if (job && id < job->max_workers) work_on(*job, id);
        }
    }

    std::mutex submit_;  // one pooled job at a time; concurrent callers run inline
    std::mutex m_;
    std::condition_variable work_, done_;
    std::shared_ptr<Job> job_;
    std::atomic<std::uint64_t> generation_{0};  // written under m_, also read by spinners
    std::size_t nworkers_ = 0;
    long pid_ = 0;
};

Pool& pool() {
    static Pool* p =
        new Pool();  // leaked on purpose: detached workers may outlive static destructors
    return *p;
}

}  // namespace

void parallel_for(std::int64_t ntasks, int threads, const TaskFn& fn) {
    if (ntasks <= 0) return;
    const int nt = static_cast<int>(std::min<std::int64_t>(std::max(threads, 1), ntasks));
    Pool& p = pool();
    std::unique_lock<std::mutex> slot;
    if (nt > 1 && p.usable()) slot = p.try_acquire();
    if (!slot.owns_lock()) {  // one thread, a forked child, or the pool busy with another caller
        for (std::int64_t t = 0; t < ntasks; ++t) fn(t, 0);
        return;
    }
    auto job = std::make_shared<Job>();
    job->fn = &fn;
    job->ntasks = ntasks;
    job->max_workers = nt;
    p.run(job, nt);
    if (job->error) std::rethrow_exception(job->error);
}

int pool_size() { return pool().size(); }

}  // namespace fastfool
