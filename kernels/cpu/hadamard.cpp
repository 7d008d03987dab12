#include "kernels/cpu/hadamard.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "common/check.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KVB_FWHT_X86 1
#endif

namespace kvb::kernels {
namespace {

using RowFn = void (*)(float* p, int64_t n, float norm);

void fwht_row_portable(float* p, int64_t n, float norm) {
  for (int64_t h = 1; h < n; h *= 2)
    for (int64_t i = 0; i < n; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        const float a = p[j], b = p[j + h];
        p[j] = a + b;
        p[j + h] = a - b;
      }
  for (int64_t j = 0; j < n; ++j) p[j] *= norm;
}

}  // namespace
}  // namespace kvb::kernels

#ifdef KVB_FWHT_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2")
#endif
namespace kvb::kernels {
namespace {

// Stage h (1, 2 or 4) inside one register: lane j of the upper half of each 2h-block gets
// a - b = s - v (s the partner lane), the lower half a + b = v + s (addition commutes exactly).
inline __m256 in_register_stages(__m256 v) {
  __m256 s = _mm256_permute_ps(v, 0xB1);  // swap neighbours: h = 1
  v = _mm256_blend_ps(_mm256_add_ps(v, s), _mm256_sub_ps(s, v), 0xAA);
  s = _mm256_permute_ps(v, 0x4E);  // swap pairs: h = 2
  v = _mm256_blend_ps(_mm256_add_ps(v, s), _mm256_sub_ps(s, v), 0xCC);
  s = _mm256_permute2f128_ps(v, v, 0x01);  // swap halves: h = 4
  return _mm256_blend_ps(_mm256_add_ps(v, s), _mm256_sub_ps(s, v), 0xF0);
}

void fwht_row_avx2(float* p, int64_t n, float norm) {  // n >= 8
  const __m256 scale = _mm256_set1_ps(norm);
  if (n == 8) {
    _mm256_storeu_ps(p, _mm256_mul_ps(in_register_stages(_mm256_loadu_ps(p)), scale));
    return;
  }
  for (int64_t j = 0; j < n; j += 8) _mm256_storeu_ps(p + j, in_register_stages(_mm256_loadu_ps(p + j)));
  for (int64_t h = 8; h < n; h *= 2) {
    const bool last = 2 * h == n;
    for (int64_t i = 0; i < n; i += 2 * h)
      for (int64_t j = i; j < i + h; j += 8) {
        const __m256 a = _mm256_loadu_ps(p + j), b = _mm256_loadu_ps(p + j + h);
        __m256 x = _mm256_add_ps(a, b), y = _mm256_sub_ps(a, b);
        if (last) {  // the scaling folded into the last stage: the same single multiply
          x = _mm256_mul_ps(x, scale);
          y = _mm256_mul_ps(y, scale);
        }
        _mm256_storeu_ps(p + j, x);
        _mm256_storeu_ps(p + j + h, y);
      }
  }
}

}  // namespace
}  // namespace kvb::kernels
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // KVB_FWHT_X86

namespace kvb::kernels {

void fwht_(const torch::Tensor& x, KernelPath path) {
  KVB_CHECK(x.scalar_type() == torch::kFloat32 && x.device().is_cpu(),
            "fwht_: expected a float32 CPU tensor");
  KVB_CHECK(x.dim() >= 1 && x.is_contiguous(), "fwht_: expected a contiguous tensor");
  const int64_t n = x.size(-1);
  KVB_CHECK(is_pow2(n), "fwht_: the last dim (", n, ") is not a power of 2");
  KVB_CHECK(path != KernelPath::kAvx2 || cpu_has_avx2_fma(),
            "fwht_: the AVX2 path needs an AVX2 CPU");
  const int64_t rows = x.numel() / n;
  const float norm = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
  RowFn row = fwht_row_portable;
#ifdef KVB_FWHT_X86
  if (n >= 8 && path != KernelPath::kPortable && cpu_has_avx2_fma()) row = fwht_row_avx2;
#endif
  float* base = x.data_ptr<float>();
  // ~64 KiB of rows per task: a 4096-float row is 16 KiB and stays in L1/L2 for all its stages.
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / n), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) row(base + r * n, n, norm);
  });
}

torch::Tensor fwht(const torch::Tensor& x) {
  const int64_t n = x.size(-1);
  KVB_CHECK(is_pow2(n), "fwht: the last dim (", n, ") is not a power of 2");
  if (x.device().is_cpu()) {
    torch::Tensor y = x.to(torch::kFloat32).contiguous().clone();
    fwht_(y);
    return y;
  }
  // Other devices: the same butterflies as whole-tensor ops.
  torch::Tensor y = x.to(torch::kFloat32).reshape({-1, n});
  const int64_t rows = y.size(0);
  for (int64_t h = 1; h < n; h *= 2) {
    torch::Tensor v = y.view({rows, n / (2 * h), 2, h});
    torch::Tensor a = v.select(2, 0), b = v.select(2, 1);
    y = torch::stack({a + b, a - b}, 2).reshape({rows, n});
  }
  return (y * (1.0 / std::sqrt(static_cast<double>(n)))).reshape(x.sizes());
}

}  // namespace kvb::kernels
