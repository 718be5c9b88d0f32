// Module fastfool._core: wiring only; each area binds itself.
#include "pybind.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastfool's compiled CPU kernels (private; use fastfool.kernels)";
    fastfool::bind::bind_runtime(m);
    fastfool::bind::bind_kernels(m);
}
