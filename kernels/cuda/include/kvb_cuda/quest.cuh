// Quest page scoring (methods/evict/quest.cpp, quest_page_scores then the max over the KV
// group): for a decode query (T = 1) and each page p of KV head h,
//   score[b, h, p] = max over the G query heads h*G + g of  sum_c max(q_c * lo_{p,c}, q_c * hi_{p,c})
// with lo/hi the per-channel key minimum/maximum of the page. q as given (post-RoPE, unscaled).
// One warp per (b, h, page); lanes over the channels.
#pragma once

#include "common.cuh"

namespace kvb::cuda::detail {

constexpr int kQuestThreads = 128;

// q [B, H_kv*G, 1, D], lo/hi [B, H_kv, P, D], score [B, H_kv, P]; all fp32, contiguous.
__global__ void __launch_bounds__(kQuestThreads)
    quest_scores_kernel(const float* __restrict__ q, const float* __restrict__ lo,
                        const float* __restrict__ hi, int64_t batch, int64_t hkv, int64_t g,
                        int64_t pages, int64_t d, float* __restrict__ score) {
  const int64_t wid = (static_cast<int64_t>(blockIdx.x) * kQuestThreads + threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (wid >= batch * hkv * pages) return;  // uniform over the warp
  const int64_t bh = wid / pages, b = bh / hkv, h = bh % hkv;
  const float* l = lo + wid * d;
  const float* u = hi + wid * d;
  float best = -INFINITY;
  for (int64_t gi = 0; gi < g; ++gi) {
    const float* qr = q + ((b * hkv + h) * g + gi) * d;
    float acc = 0.0f;
    for (int64_t c = lane; c < d; c += 32) {
      const float qc = qr[c];
      acc += fmaxf(qc * l[c], qc * u[c]);
    }
    best = fmaxf(best, warp_sum(acc));
  }
  if (lane == 0) score[wid] = best;
}

inline void launch_quest_scores(const float* q, const float* lo, const float* hi, int64_t batch,
                                int64_t hkv, int64_t g, int64_t pages, int64_t d, float* score,
                                cudaStream_t stream) {
  const int64_t warps = batch * hkv * pages;
  quest_scores_kernel<<<ceil_div_u(warps * 32, kQuestThreads), kQuestThreads, 0, stream>>>(
      q, lo, hi, batch, hkv, g, pages, d, score);
  check_cuda(cudaGetLastError(), "quest_scores_kernel launch");
}

}  // namespace kvb::cuda::detail
