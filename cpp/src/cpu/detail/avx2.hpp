// The AVX2 kernels defined in avx2_math.cpp and used by avx2.cpp's tables (both built with
// -mavx2 -mfma; nothing else may call them: the CPU may lack AVX2).
#pragma once
#include <cstdint>

namespace fastfool {
namespace avx2 {

void exp_f32(float* v, std::int64_t n);
void exp_f64(double* v, std::int64_t n);
void tanh_f32(float* v, std::int64_t n);
void logistic_f32(float* v, std::int64_t n);
void log1p_f32(float* v, std::int64_t n);
void dot_rows_f32(std::int64_t M, std::int64_t C, std::int64_t D, const float* X, std::int64_t ldx,
                  const float* W, std::int64_t ldw, float* S, std::int64_t lds);

}  // namespace avx2
}  // namespace fastfool
