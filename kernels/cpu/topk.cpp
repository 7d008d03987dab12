#include "kernels/cpu/topk.h"

#include <ATen/AccumulateType.h>
#include <ATen/Parallel.h>
#include <ATen/native/TopKImpl.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "common/check.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KVB_TOPK_X86 1
#endif

namespace kvb::kernels {
namespace {

constexpr int32_t kNanKey = std::numeric_limits<int32_t>::max();
constexpr int kRadixBits = 12;       // a 16 KiB histogram
constexpr int64_t kRadixFrom = 4096;  // rows at least this long take the radix step

// Order-preserving int32 key of a float: -0 and +0 share 0, every NaN is kNanKey (above +inf).
inline int32_t key_of(float x) {
  if (x != x) return kNanKey;
  int32_t i;
  std::memcpy(&i, &x, sizeof i);
  if (i == std::numeric_limits<int32_t>::min()) return 0;
  return i >= 0 ? i : i ^ 0x7FFFFFFF;
}

void keys_portable(const float* x, int64_t n, int32_t* out) {
  for (int64_t j = 0; j < n; ++j) out[j] = key_of(x[j]);
}

// Indices with key > thr, then (in index order) up to `eq_take` with key == thr, ascending.
int64_t collect_portable(const int32_t* key, int64_t n, int32_t thr, int64_t eq_take,
                         int64_t* out) {
  int64_t m = 0;
  for (int64_t j = 0; j < n; ++j) {
    if (key[j] > thr || (key[j] == thr && eq_take-- > 0)) out[m++] = j;
  }
  return m;
}

void count_portable(const int32_t* key, int64_t n, int32_t thr, int64_t& gt, int64_t& eq) {
  gt = eq = 0;
  for (int64_t j = 0; j < n; ++j) {
    gt += key[j] > thr;
    eq += key[j] == thr;
  }
}

struct Simd {
  void (*keys)(const float*, int64_t, int32_t*);
  void (*count)(const int32_t*, int64_t, int32_t, int64_t&, int64_t&);
  // Every index with key >= thr, ascending (used when that is exactly the k wanted).
  int64_t (*collect_ge)(const int32_t*, int64_t, int32_t, int64_t*);
};

int64_t collect_ge_portable(const int32_t* key, int64_t n, int32_t thr, int64_t* out) {
  int64_t m = 0;
  for (int64_t j = 0; j < n; ++j)
    if (key[j] >= thr) out[m++] = j;
  return m;
}

constexpr Simd kPortable = {keys_portable, count_portable, collect_ge_portable};

}  // namespace
}  // namespace kvb::kernels

#ifdef KVB_TOPK_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,popcnt"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,popcnt")
#endif
namespace kvb::kernels {
namespace {

void keys_avx2(const float* x, int64_t n, int32_t* out) {
  const __m256i min_i = _mm256_set1_epi32(std::numeric_limits<int32_t>::min());
  const __m256i nan_key = _mm256_set1_epi32(kNanKey);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 f = _mm256_loadu_ps(x + j);
    const __m256i i = _mm256_castps_si256(f);
    const __m256i flip = _mm256_srli_epi32(_mm256_srai_epi32(i, 31), 1);  // 0x7FFFFFFF if < 0
    __m256i k = _mm256_andnot_si256(_mm256_cmpeq_epi32(i, min_i), _mm256_xor_si256(i, flip));
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q));
    k = _mm256_blendv_epi8(k, nan_key, nan);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), k);
  }
  for (; j < n; ++j) out[j] = key_of(x[j]);
}

void count_avx2(const int32_t* key, int64_t n, int32_t thr, int64_t& gt, int64_t& eq) {
  const __m256i t = _mm256_set1_epi32(thr);
  __m256i vgt = _mm256_setzero_si256(), veq = _mm256_setzero_si256();
  int64_t j = 0;
  // Per-lane counts as negated compare masks (-1 per hit); int32 lanes cannot overflow below
  // 2^31 * 8 elements.
  for (; j + 8 <= n; j += 8) {
    const __m256i k = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(key + j));
    vgt = _mm256_sub_epi32(vgt, _mm256_cmpgt_epi32(k, t));
    veq = _mm256_sub_epi32(veq, _mm256_cmpeq_epi32(k, t));
  }
  alignas(32) int32_t a[8], b[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(a), vgt);
  _mm256_store_si256(reinterpret_cast<__m256i*>(b), veq);
  gt = eq = 0;
  for (int l = 0; l < 8; ++l) {
    gt += a[l];
    eq += b[l];
  }
  for (; j < n; ++j) {
    gt += key[j] > thr;
    eq += key[j] == thr;
  }
}

int64_t collect_ge_avx2(const int32_t* key, int64_t n, int32_t thr, int64_t* out) {
  const __m256i t = _mm256_set1_epi32(thr - 1);  // key >= thr <=> key > thr - 1 (thr > INT_MIN)
  int64_t m = 0, j = 0;
  if (thr == std::numeric_limits<int32_t>::min()) {
    for (; j < n; ++j) out[m++] = j;
    return m;
  }
  for (; j + 8 <= n; j += 8) {
    const __m256i k = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(key + j));
    unsigned bits = static_cast<unsigned>(
        _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(k, t))));
    while (bits) {
      out[m++] = j + __builtin_ctz(bits);
      bits &= bits - 1;
    }
  }
  for (; j < n; ++j)
    if (key[j] >= thr) out[m++] = j;
  return m;
}

constexpr Simd kAvx2 = {keys_avx2, count_avx2, collect_ge_avx2};

}  // namespace
}  // namespace kvb::kernels
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // KVB_TOPK_X86

namespace kvb::kernels {
namespace {

// torch::topk's own loop on one row (largest, sorted), then its indices ascending.
void like_torch(const float* row, int64_t n, int64_t k, int64_t* out) {
  std::vector<float> values(static_cast<size_t>(k));
  const int64_t stride1 = 1;
  char* data[3] = {reinterpret_cast<char*>(values.data()), reinterpret_cast<char*>(out),
                   reinterpret_cast<char*>(const_cast<float*>(row))};
  const int64_t strides[3] = {0, 0, 0};
  at::native::topk_impl_loop<float, at::acc_type<float, false>>(
      stride1, stride1, stride1, k, n, /*largest=*/true, /*sorted=*/true, data, strides, 1);
  std::sort(out, out + k);
}

// One row: its min(k, n) indices into out (ascending); returns how many.
int64_t select_row(const Simd& simd, const float* row, int64_t n, int64_t k, TopkTies ties,
                   std::vector<int32_t>& key, std::vector<int32_t>& work, int64_t* out) {
  k = std::clamp<int64_t>(k, 0, n);
  if (k == 0) return 0;
  if (k == n) {
    for (int64_t j = 0; j < n; ++j) out[j] = j;
    return n;
  }
  key.resize(static_cast<size_t>(n));
  simd.keys(row, n, key.data());
  int32_t thr;
  if (n >= kRadixFrom) {
    // Radix step: a histogram of the keys' top kRadixBits bits finds the bucket holding the
    // k-th largest and how many keys lie above it; nth_element then runs on that bucket alone.
    uint32_t hist[1 << kRadixBits] = {};
    auto bucket = [](int32_t v) {
      return (static_cast<uint32_t>(v) ^ 0x80000000u) >> (32 - kRadixBits);
    };
    for (int64_t j = 0; j < n; ++j) ++hist[bucket(key[static_cast<size_t>(j)])];
    int64_t above = 0;
    uint32_t b = (1u << kRadixBits) - 1;
    while (above + hist[b] < k) above += hist[b--];  // sum of all buckets is n >= k
    work.clear();
    work.reserve(hist[b]);
    for (int64_t j = 0; j < n; ++j)
      if (bucket(key[static_cast<size_t>(j)]) == b) work.push_back(key[static_cast<size_t>(j)]);
    const int64_t kk = k - above;  // 1 <= kk <= hist[b]
    std::nth_element(work.begin(), work.begin() + (kk - 1), work.end(), std::greater<int32_t>());
    thr = work[static_cast<size_t>(kk - 1)];
  } else {
    work.assign(key.begin(), key.end());
    std::nth_element(work.begin(), work.begin() + (k - 1), work.end(), std::greater<int32_t>());
    thr = work[static_cast<size_t>(k - 1)];
  }
  int64_t gt = 0, eq = 0;
  simd.count(key.data(), n, thr, gt, eq);
  if (gt + eq == k) return simd.collect_ge(key.data(), n, thr, out);
  if (ties == TopkTies::kLikeTorch) {
    like_torch(row, n, k, out);
    return k;
  }
  return collect_portable(key.data(), n, thr, k - gt, out);
}

torch::Tensor run(const torch::Tensor& scores_in, const std::vector<int64_t>& ks, bool per_head,
                  TopkTies ties, KernelPath path) {
  KVB_CHECK(scores_in.dim() == 3 && scores_in.scalar_type() == torch::kFloat32 &&
                scores_in.device().is_cpu(),
            "topk_indices: expected [B, H, S] float32 on the CPU, got ", scores_in.sizes(), " ",
            scores_in.scalar_type());
  KVB_CHECK(path != KernelPath::kAvx2 || cpu_has_avx2_fma(),
            "topk_indices: the AVX2 path needs an AVX2 CPU");
  const torch::Tensor scores = scores_in.contiguous();
  const int64_t B = scores.size(0), H = scores.size(1), S = scores.size(2);
  KVB_CHECK(!per_head || static_cast<int64_t>(ks.size()) == H, "topk_indices: ", ks.size(),
            " budgets for ", H, " heads");
  int64_t width = 0;
  for (int64_t k : ks) width = std::max(width, std::clamp<int64_t>(k, 0, S));
  torch::Tensor out = torch::full({B, H, width}, -1, scores.options().dtype(torch::kInt64));
  if (width == 0 || B * H == 0) return out;
  Simd simd = kPortable;
#ifdef KVB_TOPK_X86
  if (path != KernelPath::kPortable && cpu_has_avx2_fma()) simd = kAvx2;
#endif
  const float* src = scores.data_ptr<float>();
  int64_t* dst = out.data_ptr<int64_t>();
  at::parallel_for(0, B * H, std::max<int64_t>(1, 32768 / std::max<int64_t>(S, 1)),
                   [&](int64_t lo, int64_t hi) {
                     std::vector<int32_t> key, work;
                     for (int64_t r = lo; r < hi; ++r) {
                       const int64_t k = per_head ? ks[static_cast<size_t>(r % H)] : ks[0];
                       select_row(simd, src + r * S, S, k, ties, key, work, dst + r * width);
                     }
                   });
  return out;
}

}  // namespace

torch::Tensor topk_indices(const torch::Tensor& scores, int64_t k, TopkTies ties,
                           KernelPath path) {
  return run(scores, {k}, false, ties, path);
}

torch::Tensor topk_indices(const torch::Tensor& scores, const std::vector<int64_t>& k_per_head,
                           TopkTies ties, KernelPath path) {
  return run(scores, k_per_head, true, ties, path);
}

}  // namespace kvb::kernels
