// The lane path's element-wise loops (detail/loops.hpp) compiled with -mavx2 and without FMA
// (so the same roundings as the baseline build of generic.cpp), as the AVX2 table's slots.
#include "detail/loops.hpp"

namespace fastfool {

Loops<float> avx2_loops_f32() { return make_loops<float>(); }
Loops<double> avx2_loops_f64() { return make_loops<double>(); }

}  // namespace fastfool
