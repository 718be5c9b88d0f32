// A tree ensemble's class vote (scikit-learn's RandomForestClassifier / ExtraTreesClassifier /
// DecisionTreeClassifier predict): per row, each tree's leaf found by `x[feature] <= threshold`
// (x float32, compared in double), the leaves' class fractions summed in tree order in double,
// divided by the divisor, and the first largest taken - the operations, and so the bits, of
// scikit-learn's predict_proba / argmax. A leaf links to itself, so every tree is walked for
// exactly its depth (no branch on leafness); eight rows walk a tree side by side, which keeps
// eight independent node loads in flight, and a block of rows walks one tree after another while
// the tree's nodes are in cache.
#include <algorithm>
#include <cmath>
#include <vector>

#include "fastfool/kernels.hpp"
#include "fastfool/threads.hpp"

namespace fastfool {

void forest_predict(const MatView<float>& X, const Forest& f, std::int64_t* label, double* proba,
                    std::int64_t ldp, int threads) {
    const std::int64_t N = X.rows, C = f.classes;
    if (N == 0) return;
    constexpr std::int64_t kBlock = 64, kLanes = 8;
    const std::int64_t ntasks = (N + kBlock - 1) / kBlock;
    parallel_for(ntasks, threads, [&](std::int64_t task, int) {
        const std::int64_t i0 = task * kBlock, n = std::min(N, i0 + kBlock) - i0;
        std::vector<double> acc(static_cast<std::size_t>(n * C), 0.0);
        for (std::int64_t t = 0; t < f.trees; ++t) {
            const std::int32_t root = static_cast<std::int32_t>(f.roots[t]);
            const int depth = f.depth[t];
            for (std::int64_t r0 = 0; r0 < n; r0 += kLanes) {
                const std::int64_t k_end = std::min(kLanes, n - r0);
                const float* xr[kLanes];
                std::int32_t at[kLanes];
                for (std::int64_t k = 0; k < kLanes; ++k) {
                    // lanes past the block's end repeat its last row (walked, not used)
                    xr[k] = X.data + (i0 + r0 + std::min(k, k_end - 1)) * X.rs;
                    at[k] = root;
                }
                for (int s = 0; s < depth; ++s)
                    for (std::int64_t k = 0; k < kLanes; ++k) {
                        const TreeNode& nd = f.nodes[at[k]];
                        const double v = static_cast<double>(xr[k][nd.feature * X.cs]);
                        // an index, not a branch: the way is a coin flip to the predictor
                        at[k] = nd.child[static_cast<int>(!(v <= nd.threshold))];
                    }
                for (std::int64_t k = 0; k < k_end; ++k) {
                    const double* val = f.value + static_cast<std::int64_t>(at[k]) * C;
                    double* a = acc.data() + (r0 + k) * C;
                    for (std::int64_t c = 0; c < C; ++c) a[c] += val[c];
                }
            }
        }
        for (std::int64_t r = 0; r < n; ++r) {
            double* a = acc.data() + r * C;
            std::int64_t best = 0;
            for (std::int64_t c = 0; c < C; ++c) {
                a[c] /= f.divisor;
                // NumPy's argmax: the first largest, a NaN counting as the largest
                if (c > 0 && !std::isnan(a[best]) && (a[c] > a[best] || std::isnan(a[c]))) best = c;
            }
            label[i0 + r] = best;
            if (proba) std::copy(a, a + C, proba + (i0 + r) * ldp);
        }
    });
}

}  // namespace fastfool
