// Releasing the GIL around a kernel call, safely at interpreter exit and stoppable by Ctrl-C.
//
// Not pybind11's gil_scoped_release: when a daemon thread asks for the GIL back while the
// interpreter is finalising, CPython (before 3.14) ends that thread with pthread_exit, which
// unwinds its stack with a forced-unwind exception. Unwinding through a noexcept destructor
// (every destructor is one by default) calls std::terminate: the process aborts (rc 134) and
// loses its buffered output. NoGil's destructor is noexcept(false), so the unwind passes through
// it and through pybind11's dispatcher (which rethrows abi::__forced_unwind) and the thread ends
// as CPython intends.
#pragma once
#include <pybind11/pybind11.h>

#include <exception>
#include <optional>

namespace fastfool::bind {

namespace py = pybind11;

class NoGil {
public:
    NoGil() : state_(PyEval_SaveThread()) {}
    // state_ is cleared first: if RestoreThread ends the thread, the unwind runs this
    // object's cleanups again, and a second RestoreThread there would terminate.
    ~NoGil() noexcept(false) { restore(); }
    void restore() {
        PyThreadState* s = state_;
        state_ = nullptr;
        if (s) PyEval_RestoreThread(s);
    }
    NoGil(const NoGil&) = delete;
    NoGil& operator=(const NoGil&) = delete;

protected:
    PyThreadState* state_;
};

}  // namespace fastfool::bind

#if defined(FASTFOOL_BIND_INTERRUPTS)
#include "fastfool/interrupt.hpp"

namespace fastfool::bind {

// The thread that runs Python's signal handlers (set when the module is imported).
inline unsigned long& main_thread_ident() {
    static unsigned long ident = 0;
    return ident;
}

// NoGil for the CPU kernels: on the main thread (the only one Python's signal handlers run on,
// and never one that is finalising the interpreter under our feet) the kernel's checkpoints
// poll for a pending signal every 20 ms by taking the GIL for a moment and running the Python
// handlers; a handler that raises (KeyboardInterrupt from Ctrl-C) stops the call, and the
// exception reaches the caller once every thread has left its task. Other threads are not
// polled: their calls run to the end, as before.
class KernelCall : public NoGil {
public:
    KernelCall() {
        if (PyThread_get_thread_ident() == main_thread_ident()) scope_.emplace(&poll, this);
    }
    ~KernelCall() noexcept(false) {
        const bool stopped = scope_ && scope_->stop.load();
        scope_.reset();
        restore();
        // A handler raised, but the kernel finished before it saw the stop: raise it now (the
        // Python error is already set; returning normally with it set would be a SystemError).
        if (stopped && std::uncaught_exceptions() == 0) throw py::error_already_set();
    }

private:
    static bool poll(void* self) {
        auto* call = static_cast<KernelCall*>(self);
        PyEval_RestoreThread(call->state_);
        const bool raised = PyErr_CheckSignals() != 0;
        call->state_ = PyEval_SaveThread();
        return raised;
    }
    std::optional<InterruptScope> scope_;
};

}  // namespace fastfool::bind
#endif
