#include "kernels/cpu/read_probe.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/kernel_path.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KVB_PROBE_X86 1
#endif

namespace kvb::kernels {
namespace {

double sum_portable(const float* p, int64_t n) {
  float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) a[j] += p[i + j];
  double s = 0;
  for (float v : a) s += v;
  for (; i < n; ++i) s += p[i];
  return s;
}

#ifdef KVB_PROBE_X86
__attribute__((target("avx2"))) double sum_avx2(const float* p, int64_t n) {
  __m256 a[8];
  for (auto& v : a) v = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64)
    for (int j = 0; j < 8; ++j) a[j] = _mm256_add_ps(a[j], _mm256_loadu_ps(p + i + 8 * j));
  double s = 0;
  for (auto& v : a) {
    alignas(32) float t[8];
    _mm256_store_ps(t, v);
    for (float x : t) s += x;
  }
  for (; i < n; ++i) s += p[i];
  return s;
}
#endif

}  // namespace

double read_probe_sum(const torch::Tensor& x) {
  KVB_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.is_contiguous(),
            "read_probe_sum: needs a contiguous float32 CPU tensor");
  const float* p = x.data_ptr<float>();
  const int64_t n = x.numel();
  constexpr int64_t kChunk = int64_t{1} << 18;  // 1 MiB of floats per task
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(chunks), 0.0);
#ifdef KVB_PROBE_X86
  const bool avx2 = cpu_has_avx2_fma();
#endif
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t b = c * kChunk, e = std::min(n, b + kChunk);
#ifdef KVB_PROBE_X86
      if (avx2) {
        part[static_cast<size_t>(c)] = sum_avx2(p + b, e - b);
        continue;
      }
#endif
      part[static_cast<size_t>(c)] = sum_portable(p + b, e - b);
    }
  });
  double s = 0;
  for (double v : part) s += v;
  return s;
}

}  // namespace kvb::kernels
