// The stand-alone fused attack update (kernels.hpp: fused_update): rows in tasks of ~64K
// elements, O(N D).
#include <algorithm>

#include "fastfool/kernels.hpp"
#include "fastfool/threads.hpp"

#include "detail/update.hpp"

namespace fastfool {
using namespace detail;  // NOLINT: the shared internals of the CPU kernels

template <class T>
void fused_update(const MatView<T>& X, const MatView<T>& G, const MatView<T>& X0, bool l2, T alpha,
                  T eps, const VecView<T>& lo, const VecView<T>& hi, T quantum, T* out,
                  std::int64_t ldo, int threads) {
    const std::int64_t N = X.rows, D = X.cols;
    // tasks of ~64K elements: enough work per task to amortise the hand-off
    const std::int64_t rows_per_task =
        std::max<std::int64_t>(1, 65536 / std::max<std::int64_t>(D, 1));
    const std::int64_t ntasks = (N + rows_per_task - 1) / rows_per_task;
    parallel_for(ntasks, threads, [&](std::int64_t task, int) {
        const std::int64_t i_end = std::min(N, (task + 1) * rows_per_task);
        for (std::int64_t i = task * rows_per_task; i < i_end; ++i)
            update_row(X.data + i * X.rs, X.cs, G.data + i * G.rs, G.cs, X0.data + i * X0.rs, X0.cs,
                       D, l2, alpha, eps, lo, hi, quantum, out + i * ldo);
    });
}

#define FASTFOOL_INSTANTIATE(T)                                                                    \
    template void fused_update<T>(const MatView<T>&, const MatView<T>&, const MatView<T>&, bool,   \
                                  T, T, const VecView<T>&, const VecView<T>&, T, T*, std::int64_t, \
                                  int);
FASTFOOL_INSTANTIATE(float)
FASTFOOL_INSTANTIATE(double)
#undef FASTFOOL_INSTANTIATE

}  // namespace fastfool
