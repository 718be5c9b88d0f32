// Run-time facts and switches: SIMD path, thread pool.
#include "fastfool/dispatch.hpp"
#include "fastfool/gemm.hpp"
#include "fastfool/kernels.hpp"
#include "fastfool/threads.hpp"
#include "pybind.hpp"

namespace fastfool::bind {

void bind_runtime(py::module_& m) {
    m.def(
        "detected_simd", [] { return std::string(isa_name(detected_isa())); },
        "Best SIMD path this CPU supports.");
    m.def(
        "active_simd", [] { return std::string(isa_name(active_isa())); },
        "SIMD path the kernels use now.");
    m.def(
        "set_simd",
        [](const std::string& name) {
            if (name == "generic") return force_isa(Isa::generic);
            if (name == "avx2") return force_isa(Isa::avx2);
            if (name == "avx512") return force_isa(Isa::avx512);
            throw py::value_error("simd: expected 'generic', 'avx2' or 'avx512', got '" + name +
                                  "'");
        },
        py::arg("name"), "Force a SIMD path; returns False if the CPU lacks it.");
    m.def(
        "block_cache_bytes", [] { return cached_block_bytes(); },
        "Bytes of freed scratch blocks kept for reuse (at most 128 MiB; test hook).");
    m.def(
        "poison_block_cache", [] { poison_block_cache(); },
        "Fill the kept scratch blocks with NaN bytes (test hook: stale scratch must not leak).");
    m.def(
        "set_lane_steps", [](bool on) { set_lane_steps(on); }, py::arg("on"),
        "Test hook: the batch-in-lanes paths (narrow MLPs; cross-entropy rows through lane "
        "panels), on by default; off: the row paths, which give the same bits.");
    m.def("lane_steps", [] { return lane_steps(); }, "Whether that path is on.");
    m.def("pool_size", [] { return pool_size(); }, "Worker threads started so far.");
    m.def(
        "tile",
        [](const std::string& dtype) {
            auto t = [](auto mk) { return py::make_tuple(mk.mr, mk.nr, mk.kc, mk.mc); };
            if (dtype == "float32") return t(micro_kernel<float>());
            if (dtype == "float64") return t(micro_kernel<double>());
            throw py::value_error("dtype: expected 'float32' or 'float64'");
        },
        py::arg("dtype"), "(mr, nr, kc, mc) of the active micro-kernel.");
    m.def(
        "vmath",
        [](const std::string& fn, py::array a) -> py::array {
            // A contiguous copy mapped in place by the active ISA's element-wise function: the
            // functions the epilogues use, exposed so that tests can compare them with NumPy.
            auto run = [&](auto tag) -> py::array {
                using T = decltype(tag);
                const MicroKernel<T>& mk = micro_kernel<T>();
                VecFn<T> f = fn == "exp"        ? mk.vexp
                             : fn == "tanh"     ? mk.vtanh
                             : fn == "logistic" ? mk.vlogistic
                             : fn == "log1p"    ? mk.vlog1p
                                                : nullptr;
                if (!f)
                    throw py::value_error(
                        "fn: expected 'exp', 'tanh', 'logistic' or 'log1p', got '" + fn + "'");
                if (a.ndim() != 1)
                    throw py::value_error("a: expected a 1-D array, got shape " + shape_str(a));
                py::array_t<T> out(a.shape(0));
                const auto src = a.unchecked<T, 1>();
                T* dst = out.mutable_data();
                for (py::ssize_t i = 0; i < a.shape(0); ++i) dst[i] = src(i);
                {
                    KernelCall nogil;
                    f(dst, a.shape(0));
                }
                return out;
            };
            if (a.dtype().equal(py::dtype::of<float>())) return run(float{});
            if (a.dtype().equal(py::dtype::of<double>())) return run(double{});
            throw py::type_error("a: expected float32 or float64, got " +
                                 std::string(py::str(a.dtype())));
        },
        py::arg("fn"), py::arg("a"),
        "fn applied element-wise by the active SIMD path (test hook).");
}

}  // namespace fastfool::bind
