// The thread pool behind parallel_for (see threads.hpp for why it is not OpenMP).
#include "fastfool/threads.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "fastfool/interrupt.hpp"

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

thread_local InterruptScope* tl_scope = nullptr;    // the scope this thread polls for
thread_local std::atomic<bool>* tl_flag = nullptr;  // the stop flag of the call it works for

// One parallel_for call. Tasks [0, end) are run; end starts at ntasks and drops to the number
// already claimed when the call is stopped (see cancel()).
struct Job {
    const TaskFn* fn = nullptr;
    std::int64_t ntasks = 0;
    int max_workers = 1;
    bool stoppable = false;            // the caller polls for an interrupt
    std::atomic<bool> stopped{false};  // set by cancel(); the workers' stop flag for this job
    std::atomic<std::int64_t> next{0};
    std::atomic<std::int64_t> done{0};
    std::atomic<std::int64_t> end{0};
    std::mutex error_mutex;
    std::exception_ptr error;
    bool finished() const { return done.load() >= end.load(); }
};

thread_local bool tl_in_pool = false;  // this thread is the caller of a pooled job

struct InPool {
    InPool() { tl_in_pool = true; }
    ~InPool() { tl_in_pool = false; }
    InPool(const InPool&) = delete;
    InPool& operator=(const InPool&) = delete;
};

// Sets the stop flag of the call this thread works for, for the lifetime of the object.
class WorkingFor {
public:
    explicit WorkingFor(std::atomic<bool>* f) : saved_(tl_flag) { tl_flag = f; }
    ~WorkingFor() { tl_flag = saved_; }
    WorkingFor(const WorkingFor&) = delete;
    WorkingFor& operator=(const WorkingFor&) = delete;

private:
    std::atomic<bool>* saved_;
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

    // Runs the job on the calling thread and nt - 1 workers. The pool first grows to nt - 1
    // workers, or retires those beyond the `asked` - 1 the caller asked for: it never keeps
    // more threads than the last call asked for, and a call that uses fewer than it asked
    // (few tasks) does not make the next one start them again.
    void run(const std::shared_ptr<Job>& job, int nt, int asked) {
        const int now = size();
        resize(std::clamp(now, nt - 1, std::max(nt, asked) - 1));
        {
            std::lock_guard<std::mutex> lk(m_);
            job_ = job;
            ++generation_;
        }
        work_.notify_all();
        work_on(*job, 0);
        spin_until([&] { return job->finished(); }, kSpinMicros);
        {
            std::unique_lock<std::mutex> lk(m_);
            // The caller keeps polling for an interrupt while workers finish their tasks.
            while (!job->finished()) {
                if (!job->stoppable) {
                    done_.wait(lk);
                    continue;
                }
                done_.wait_for(lk, std::chrono::milliseconds(5));
                lk.unlock();
                if (stop_requested()) cancel(*job);
                lk.lock();
            }
            job_.reset();
        }
    }

    // Hands out no more tasks: the job ends with those already claimed.
    void cancel(Job& job) {
        job.stopped.store(true);
        const std::int64_t claimed = std::min(job.next.exchange(job.ntasks), job.ntasks);
        std::int64_t e = job.end.load();
        while (claimed < e && !job.end.compare_exchange_weak(e, claimed)) {
        }
        std::lock_guard<std::mutex> lk(m_);
        done_.notify_all();
    }

    int size() {
        std::lock_guard<std::mutex> lk(m_);
        return static_cast<int>(nworkers_);
    }

    void work_on(Job& job, int worker) {
        for (;;) {
            if (job.stopped.load(std::memory_order_relaxed) ||
                (worker == 0 && job.stoppable && stop_requested())) {
                cancel(job);
                return;
            }
            const std::int64_t t = job.next.fetch_add(1);
            if (t >= job.ntasks) return;  // late arrivals stop here and never touch job.fn
            try {
                (*job.fn)(t, worker);
            } catch (...) {
                std::lock_guard<std::mutex> lk(job.error_mutex);
                if (!job.error) job.error = std::current_exception();
            }
            if (job.done.fetch_add(1) + 1 >= job.end.load()) {
                std::lock_guard<std::mutex> lk(m_);  // pairs with the caller's predicate check
                done_.notify_all();
            }
        }
    }

private:
    // Workers 1..n exist afterwards and no others take jobs. A retired worker (id > n) leaves
    // when it next wakes; its id gets a new epoch, so a worker started later under the same id
    // never shares it with the one still leaving.
    void resize(int n) {
        const std::size_t want = static_cast<std::size_t>(std::max(n, 0));
        bool retired = false;
        {
            std::lock_guard<std::mutex> lk(m_);
            if (epochs_.size() < want + 1) epochs_.resize(want + 1, 0);
            while (nworkers_ > want) {
                ++epochs_[nworkers_--];
                retired = true;
            }
            while (nworkers_ < want) {
                const int id = static_cast<int>(++nworkers_);
                // detached: the pool lives for the whole process
                std::thread(&Pool::loop, this, id, epochs_[static_cast<std::size_t>(id)]).detach();
            }
            if (retired) ++generation_;  // wakes the retired ones (no job: job_ is null)
        }
        if (retired) work_.notify_all();
    }

    void loop(int id, std::uint64_t epoch) {
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
                // retired: leave (also a worker that starts only after it was retired)
                const auto retired = [&] { return epochs_[static_cast<std::size_t>(id)] != epoch; };
                work_.wait(lk, [&] { return generation_ != seen || retired(); });
                if (retired()) return;
                seen = generation_;
                job = job_;
            }
            if (job && id < job->max_workers) {
                WorkingFor w(&job->stopped);  // job outlives the call: owned here too
                work_on(*job, id);
            }
        }
    }

    std::mutex submit_;  // one pooled job at a time; concurrent callers run inline
    std::mutex m_;
    std::condition_variable work_, done_;
    std::shared_ptr<Job> job_;
    std::atomic<std::uint64_t> generation_{0};  // written under m_, also read by spinners
    std::size_t nworkers_ = 0;
    std::vector<std::uint64_t> epochs_;  // per worker id; bumped when that id is retired
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
    // tl_in_pool: this thread already holds the pool (a Python signal handler run by the
    // interrupt poll called a kernel): inline, never try_lock a mutex the thread owns.
    if (nt > 1 && p.usable() && !tl_in_pool) slot = p.try_acquire();
    if (!slot.owns_lock()) {  // one thread, a forked child, or the pool busy with another caller
        for (std::int64_t t = 0; t < ntasks; ++t) {
            checkpoint();
            fn(t, 0);
        }
        return;
    }
    auto job = std::make_shared<Job>();
    job->fn = &fn;
    job->ntasks = ntasks;
    job->end.store(ntasks);
    job->max_workers = nt;
    job->stoppable = tl_flag != nullptr;
    {
        InPool mark;
        p.run(job, nt, std::max(threads, 1));
    }
    if (job->stopped.load()) throw Interrupted();
    if (job->error) std::rethrow_exception(job->error);
}

int pool_size() { return pool().size(); }

InterruptScope::InterruptScope(PollFn poll_fn, void* context, std::chrono::microseconds every)
    : poll(poll_fn),
      ctx(context),
      interval(every),
      next(std::chrono::steady_clock::now() + every),
      outer_(tl_scope),
      outer_flag_(tl_flag) {
    tl_scope = this;
    tl_flag = &stop;
}

InterruptScope::~InterruptScope() {
    tl_scope = outer_;
    tl_flag = outer_flag_;
}

bool stop_requested() {
    InterruptScope* s = tl_scope;
    if (s && s->poll && !s->stop.load(std::memory_order_relaxed)) {
        const auto now = std::chrono::steady_clock::now();
        if (now >= s->next) {
            s->next = now + s->interval;
            if (s->poll(s->ctx)) s->stop.store(true);
        }
    }
    std::atomic<bool>* f = tl_flag;
    return f && f->load(std::memory_order_relaxed);
}

}  // namespace fastfool
