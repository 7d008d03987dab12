#include "kernels/cpu/gemv.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include "common/check.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KVB_GEMV_X86 1
#endif

namespace kvb::kernels {
namespace {

void rows_portable(const float* w, const float* x, const float* b, float* y, int64_t n0,
                   int64_t n1, int64_t k) {
  for (int64_t n = n0; n < n1; ++n) {
    const float* r = w + n * k;
    float acc = 0;
    for (int64_t i = 0; i < k; ++i) acc += r[i] * x[i];
    y[n] = b ? acc + b[n] : acc;
  }
}

#ifdef KVB_GEMV_X86
__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Row by row, in memory order: the weights are one sequential stream (what the hardware
// prefetchers follow best; interleaving four rows' streams ran at ~60% of the read bandwidth),
// four independent FMA chains of 8 lanes over 32 columns per step, x held in L1.
__attribute__((target("avx2,fma"))) void rows_avx2(const float* w, const float* x,
                                                   const float* b, float* y, int64_t n0,
                                                   int64_t n1, int64_t k) {
  const int64_t k32 = k / 32 * 32, k8 = k / 8 * 8;
  for (int64_t n = n0; n < n1; ++n) {
    const float* r = w + n * k;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i < k32; i += 32) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(r + i), _mm256_loadu_ps(x + i), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(r + i + 8), _mm256_loadu_ps(x + i + 8), a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(r + i + 16), _mm256_loadu_ps(x + i + 16), a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(r + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i < k8; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(r + i), _mm256_loadu_ps(x + i), a0);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < k; ++i) s += r[i] * x[i];
    y[n] = b ? s + b[n] : s;
  }
}
#endif

}  // namespace

bool gemv_accepts(const torch::Tensor& w, const torch::Tensor& x, const torch::Tensor& b) {
  auto ok = [](const torch::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous();
  };
  return w.defined() && x.defined() && w.dim() == 2 && ok(w) && ok(x) &&
         x.numel() == w.size(1) && (!b.defined() || (ok(b) && b.numel() == w.size(0)));
}

torch::Tensor gemv_with(KernelPath path, const torch::Tensor& w, const torch::Tensor& x,
                        const torch::Tensor& b) {
  KVB_CHECK(gemv_accepts(w, x, b), "gemv: needs w [N, K], x [K] (and b [N]) float32, contiguous, "
            "on the CPU; got w ", w.sizes(), " ", w.scalar_type(), " on ", w.device(), ", x ",
            x.sizes());
  const bool avx2 = path == KernelPath::kAvx2 || (path == KernelPath::kAuto && cpu_has_avx2_fma());
  KVB_CHECK(!avx2 || cpu_has_avx2_fma(), "gemv: this CPU has no AVX2+FMA");
  const int64_t n = w.size(0), k = w.size(1);
  torch::Tensor y = torch::empty({n}, w.options());
  const float* wp = w.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  // Blocks of whole groups of 4 rows, at least ~64 KiB of weights each, so a thread's share
  // streams long runs and small matrices stay on one thread.
  const int64_t grain = std::max<int64_t>(4, (int64_t{16384} / std::max<int64_t>(k, 1) + 3) / 4 * 4);
  at::parallel_for(0, (n + 3) / 4, std::max<int64_t>(1, grain / 4), [&](int64_t g0, int64_t g1) {
    const int64_t n0 = g0 * 4, n1 = std::min(n, g1 * 4);
#ifdef KVB_GEMV_X86
    if (avx2) {
      rows_avx2(wp, xp, bp, yp, n0, n1, k);
      return;
    }
#endif
    rows_portable(wp, xp, bp, yp, n0, n1, k);
  });
  return y;
}

torch::Tensor gemv(const torch::Tensor& w, const torch::Tensor& x, const torch::Tensor& b) {
  return gemv_with(KernelPath::kAuto, w, x, b);
}

}  // namespace kvb::kernels
