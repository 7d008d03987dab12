#include "kernels/cpu/quest_bounds.h"

#include <ATen/Parallel.h>
#include <ATen/Version.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common/check.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KVB_QUEST_X86 1
#endif

namespace kvb::kernels {
namespace {

// One (batch row, KV head, page): the G query heads' bounds, maximised. q: G rows of D.
using PageFn = float (*)(const float* q, const float* lo, const float* hi, int64_t G, int64_t D,
                         int W);

inline float max_nan(float a, float b) {  // torch::maximum: NaN when either is NaN
  if (a != a) return a;
  if (b != b) return b;
  return a > b ? a : b;
}

// libtorch's cascade_sum over one contiguous row v[0 .. n) of `items` (scalars, W == 1, or
// W-lane vectors at v + item * W): multi_row_sum with 4 rows and its 4-level cascade
// (level step 16: what CeilLog2(size) / 4 <= 4 gives, size < 2^17), then row_sum's leftovers
// and the combination of the 4 rows. acc: W floats out.
void cascade_rows(const float* v, int64_t items, int W, float* out) {
  constexpr int kLevels = 4, kRows = 4, kPower = 4;
  constexpr int64_t kStep = int64_t{1} << kPower;
  float acc[kLevels][kRows][16] = {};
  const int64_t size = items / kRows;
  auto add_item = [&](float* dst, int64_t item) {
    for (int l = 0; l < W; ++l) dst[l] += v[item * W + l];
  };
  int64_t i = 0;
  for (; i + kStep <= size;) {
    for (int64_t j = 0; j < kStep; ++j, ++i)
      for (int k = 0; k < kRows; ++k) add_item(acc[0][k], i * kRows + k);
    for (int j = 1; j < kLevels; ++j) {
      for (int k = 0; k < kRows; ++k)
        for (int l = 0; l < W; ++l) {
          acc[j][k][l] += acc[j - 1][k][l];
          acc[j - 1][k][l] = 0;
        }
      if ((i & ((kStep - 1) << (j * kPower))) != 0) break;
    }
  }
  for (; i < size; ++i)
    for (int k = 0; k < kRows; ++k) add_item(acc[0][k], i * kRows + k);
  for (int j = 1; j < kLevels; ++j)
    for (int k = 0; k < kRows; ++k)
      for (int l = 0; l < W; ++l) acc[0][k][l] += acc[j][k][l];
  for (int64_t it = size * kRows; it < items; ++it) add_item(acc[0][0], it);
  for (int k = 1; k < kRows; ++k)
    for (int l = 0; l < W; ++l) acc[0][0][l] += acc[0][k][l];
  for (int l = 0; l < W; ++l) out[l] = acc[0][0][l];
}

float torch_order_sum(const float* v, int64_t n, int W) {
  if (n >= W) {  // vectorized_inner_sum
    const int64_t nvec = n / W;
    float lanes[16];
    cascade_rows(v, nvec, W, lanes);
    float total = 0;
    for (int64_t t = nvec * W; t < n; ++t) total += v[t];
    for (int l = 0; l < W; ++l) total += lanes[l];
    return 0.0f + total;  // the output, zero-filled, accumulates it
  }
  float s;  // scalar_inner_sum
  cascade_rows(v, n, 1, &s);
  return 0.0f + s;
}

float page_portable(const float* q, const float* lo, const float* hi, int64_t G, int64_t D,
                    int W) {
  float buf[1024];
  std::vector<float> big;
  float* v = buf;
  if (D > 1024) {
    big.resize(static_cast<size_t>(D));
    v = big.data();
  }
  float best = 0;
  for (int64_t g = 0; g < G; ++g) {
    const float* qg = q + g * D;
    for (int64_t c = 0; c < D; ++c) v[c] = max_nan(qg[c] * lo[c], qg[c] * hi[c]);
    const float u = torch_order_sum(v, D, W);
    best = g == 0 ? u : max_nan(best, u);
  }
  return best;
}

int parse_lanes() {
  const std::string cfg = at::show_config();
  const std::string tag = "CPU capability usage: ";
  const size_t at = cfg.find(tag);
  if (at != std::string::npos && cfg.compare(at + tag.size(), 6, "AVX512") == 0) return 16;
  return 8;
}

}  // namespace
}  // namespace kvb::kernels

#ifdef KVB_QUEST_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2")
#endif
namespace kvb::kernels {
namespace {

inline __m256 bound8(__m256 q, const float* lo, const float* hi) {
  const __m256 a = _mm256_mul_ps(q, _mm256_loadu_ps(lo)), b = _mm256_mul_ps(q, _mm256_loadu_ps(hi));
  return _mm256_or_ps(_mm256_max_ps(a, b), _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
}

// D >= W and fewer than 64 vectors (no cascade level is reached); W = 8 * V.
template <int V>
float group_avx2(const float* q, const float* lo, const float* hi, int64_t D) {
  constexpr int64_t W = 8 * V;
  const int64_t nvec = D / W, ilp = nvec / 4 * 4;
  __m256 acc[4][V];
  for (int k = 0; k < 4; ++k)
    for (int u = 0; u < V; ++u) acc[k][u] = _mm256_setzero_ps();
  for (int64_t j = 0; j < nvec; ++j) {
    const int k = j < ilp ? static_cast<int>(j % 4) : 0;
    for (int u = 0; u < V; ++u) {
      const int64_t c = j * W + 8 * u;
      acc[k][u] = _mm256_add_ps(acc[k][u], bound8(_mm256_loadu_ps(q + c), lo + c, hi + c));
    }
  }
  // multi_row_sum adds its (zero) upper levels into each row, then row_sum combines the rows.
  const __m256 zero = _mm256_setzero_ps();
  for (int k = 0; k < 4; ++k)
    for (int u = 0; u < V; ++u)
      for (int j = 1; j < 4; ++j) acc[k][u] = _mm256_add_ps(acc[k][u], zero);
  for (int k = 1; k < 4; ++k)
    for (int u = 0; u < V; ++u) acc[0][u] = _mm256_add_ps(acc[0][u], acc[k][u]);
  alignas(32) float lanes[W];
  for (int u = 0; u < V; ++u) _mm256_store_ps(lanes + 8 * u, acc[0][u]);
  float total = 0;
  for (int64_t t = nvec * W; t < D; ++t) total += max_nan(q[t] * lo[t], q[t] * hi[t]);
  for (int64_t l = 0; l < W; ++l) total += lanes[l];
  return 0.0f + total;
}

template <int V>
float page_avx2(const float* q, const float* lo, const float* hi, int64_t G, int64_t D, int W) {
  float best = 0;
  for (int64_t g = 0; g < G; ++g) {
    const float u = group_avx2<V>(q + g * D, lo, hi, D);
    best = g == 0 ? u : max_nan(best, u);
  }
  return best;
}

PageFn pick_avx2(int W, int64_t D) {
  if (D < W || D / W >= 64) return nullptr;  // scalar sum, or a cascade level: portable
  return W == 16 ? page_avx2<2> : page_avx2<1>;
}

}  // namespace
}  // namespace kvb::kernels
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // KVB_QUEST_X86

namespace kvb::kernels {

int quest_sum_lanes() {
  static const int lanes = parse_lanes();
  return lanes;
}

torch::Tensor quest_page_upper_bounds(const torch::Tensor& q_in, const torch::Tensor& lo_in,
                                      const torch::Tensor& hi_in, KernelPath path) {
  KVB_CHECK(lo_in.dim() == 4 && lo_in.sizes() == hi_in.sizes(),
            "quest_page_upper_bounds: lo ", lo_in.sizes(), " and hi ", hi_in.sizes(),
            " must both be [B, H_kv, P, D]");
  KVB_CHECK(lo_in.scalar_type() == torch::kFloat32 && hi_in.scalar_type() == torch::kFloat32 &&
                lo_in.device().is_cpu() && hi_in.device().is_cpu() && q_in.device().is_cpu(),
            "quest_page_upper_bounds: expected float32 CPU bounds and a CPU query");
  const int64_t B = lo_in.size(0), H = lo_in.size(1), P = lo_in.size(2), D = lo_in.size(3);
  KVB_CHECK((q_in.dim() == 3 || (q_in.dim() == 4 && q_in.size(2) == 1)) && q_in.size(0) == B &&
                q_in.size(-1) == D && H > 0 && q_in.size(1) % H == 0,
            "quest_page_upper_bounds: queries ", q_in.sizes(), " for bounds ", lo_in.sizes());
  KVB_CHECK(path != KernelPath::kAvx2 || cpu_has_avx2_fma(),
            "quest_page_upper_bounds: the AVX2 path needs an AVX2 CPU");
  const int64_t G = q_in.size(1) / H;
  const torch::Tensor q = q_in.to(torch::kFloat32).contiguous();
  const torch::Tensor lo = lo_in.contiguous(), hi = hi_in.contiguous();
  torch::Tensor out = torch::empty({B, H, P}, lo.options());
  if (out.numel() == 0) return out;
  const int W = quest_sum_lanes();
  PageFn fn = page_portable;
#ifdef KVB_QUEST_X86
  if (path != KernelPath::kPortable && cpu_has_avx2_fma())
    if (PageFn f = pick_avx2(W, D)) fn = f;
#endif
  const float* qp = q.data_ptr<float>();
  const float* lp = lo.data_ptr<float>();
  const float* hp = hi.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, B * H * P, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, G * D)),
                   [&](int64_t a, int64_t z) {
                     for (int64_t r = a; r < z; ++r) {
                       const int64_t bh = r / P;  // b * H + kvh; query heads bh * G ...
                       op[r] = fn(qp + bh * G * D, lp + r * D, hp + r * D, G, D, W);
                     }
                   });
  return out;
}

}  // namespace kvb::kernels
