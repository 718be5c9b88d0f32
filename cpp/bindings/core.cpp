// Module fastfool._core: wiring only; each area binds itself.
#include "pybind.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastfool's compiled CPU kernels (private; use fastfool.kernels)";
    // Ctrl-C: kernels called from this thread poll for Python's signal handlers (gil.hpp).
    fastfool::bind::main_thread_ident() =
        py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const fastfool::Interrupted&) {
            // The signal handler's exception (KeyboardInterrupt) is already set; a stop that
            // did not come from a handler (none today) reads as one too.
            if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt);
        }
    });
    fastfool::bind::bind_runtime(m);
    fastfool::bind::bind_kernels(m);
}
