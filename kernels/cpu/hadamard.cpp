#include "kernels/cpu/hadamard.h"

#include <ATen/Parallel.h>

#include <cmath>

#include "common/check.h"

namespace kvb::kernels {

void fwht_(const torch::Tensor& x) {
  KVB_CHECK(x.scalar_type() == torch::kFloat32 && x.device().is_cpu(),
            "fwht_: expected a float32 CPU tensor");
  KVB_CHECK(x.dim() >= 1 && x.is_contiguous(), "fwht_: expected a contiguous tensor");
  const int64_t n = x.size(-1);
  KVB_CHECK(is_pow2(n), "fwht_: the last dim (", n, ") is not a power of 2");
  const int64_t rows = n ? x.numel() / n : 0;
  const float norm = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
  float* base = x.data_ptr<float>();
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / n), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      float* p = base + r * n;
      for (int64_t h = 1; h < n; h *= 2)
        for (int64_t i = 0; i < n; i += 2 * h)
          for (int64_t j = i; j < i + h; ++j) {
            const float a = p[j], b = p[j + h];
            p[j] = a + b;
            p[j + h] = a - b;
          }
      for (int64_t j = 0; j < n; ++j) p[j] *= norm;
    }
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
