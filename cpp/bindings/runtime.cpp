// Run-time facts and switches: SIMD path, thread pool.
#include "fastfool/dispatch.hpp"
#include "fastfool/threads.hpp"
#include "pybind.hpp"


namespace fastfool::bind {

void bind_runtime(py::module_& m) {
    m.def("detected_simd", [] { return std::string(isa_name(detected_isa())); },
          "Best SIMD path this CPU supports.");
    m.def("active_simd", [] { return std::string(isa_name(active_isa())); },
          "SIMD path the kernels use now.");
    m.def(
        "set_simd",
        [](const std::string& name) {
            if (name == "generic") return force_isa(Isa::generic);
            if (name == "avx2") return force_isa(Isa::avx2);
            throw py::value_error("simd: expected 'generic' or 'avx2', got '" + name + "'");
        },
        py::arg("name"), "Force a SIMD path; returns False if the CPU lacks it.");
    m.def("pool_size", [] { return pool_size(); }, "Worker threads started so far.");
    m.def("tile", [](const std::string& dtype) {
        auto t = [](auto mk) { return py::make_tuple(mk.mr, mk.nr, mk.kc, mk.mc); };
        if (dtype == "float32") return t(micro_kernel<float>());
        if (dtype == "float64") return t(micro_kernel<double>());
        throw py::value_error("dtype: expected 'float32' or 'float64'");
    }, py::arg("dtype"), "(mr, nr, kc, mc) of the active micro-kernel.");
}

}  // namespace fastfool::bind
