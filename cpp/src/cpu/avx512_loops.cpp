// The lane path's element-wise loops (detail/loops.hpp) compiled for AVX-512 (512-bit vectors
// preferred) and without FMA or contraction: the same roundings as the baseline build of
// generic.cpp and as avx2_loops.cpp, bit for bit, as the AVX-512 table's slots.
#include "detail/loops.hpp"

namespace fastfool {

Loops<float> avx512_loops_f32() { return make_loops<float>(); }
Loops<double> avx512_loops_f64() { return make_loops<double>(); }

}  // namespace fastfool
