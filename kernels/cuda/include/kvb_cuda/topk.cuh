// Per-row top-k: the indices of the k largest of each row of S fp32 scores, written in
// ascending index order; among equal values the lower indices are taken first.
//
// One CTA per row. Radix select over the order-preserving 32-bit key of each float (4 passes
// of 8 bits, a 256-bin shared histogram each) finds the k-th largest key T and how many of the
// keys equal to T are needed; a stable compaction (block-wide ballot scans, tile by tile in
// index order) then writes every index with key > T and the first `need` with key == T.
// Keys order floats by value with -0 below +0 and NaNs at the ends by sign bit (a positive NaN
// above +inf, as torch.topk ranks NaN highest).
#pragma once

#include "common.cuh"

namespace kvb::cuda::detail {

constexpr int kTopkThreads = 256;

__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Exclusive count of set flags before this thread (thread order), and the CTA total. Every
// thread of the CTA must call it; `smem` holds kTopkThreads / 32 ints.
__device__ __forceinline__ int block_exclusive_count(bool flag, int* total, int* smem) {
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const unsigned bal = __ballot_sync(0xffffffffu, flag);
  const int in_warp = __popc(bal & ((1u << lane) - 1u));
  if (lane == 0) smem[warp] = __popc(bal);
  __syncthreads();
  int before = 0, tot = 0;
#pragma unroll
  for (int w = 0; w < kTopkThreads / 32; ++w) {
    const int c = smem[w];
    if (w < warp) before += c;
    tot += c;
  }
  __syncthreads();  // smem is rewritten by the next call
  *total = tot;
  return before + in_warp;
}

// x [rows, s] fp32, idx [rows, k] int64; 1 <= k <= s.
__global__ void __launch_bounds__(kTopkThreads)
    topk_kernel(const float* __restrict__ x, int64_t s, int64_t k, int64_t* __restrict__ idx) {
  __shared__ unsigned hist[256];
  __shared__ uint32_t sh_prefix;
  __shared__ int64_t sh_need;
  __shared__ int scan_smem[kTopkThreads / 32];
  const int tid = static_cast<int>(threadIdx.x);
  const float* row = x + static_cast<int64_t>(blockIdx.x) * s;
  int64_t* out = idx + static_cast<int64_t>(blockIdx.x) * k;

  // Radix select: after the pass at `shift`, prefix holds the top bits of T down to `shift` and
  // need is the rank of T among the keys sharing that prefix (1 = the largest of them).
  uint32_t prefix = 0, mask = 0;
  int64_t need = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = tid; i < 256; i += kTopkThreads) hist[i] = 0;
    __syncthreads();
    for (int64_t i = tid; i < s; i += kTopkThreads) {
      const uint32_t key = order_key(row[i]);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (tid == 0) {
      int64_t above = 0;
      int bin = 255;
      // The keys sharing the prefix number at least `need`, so the scan stops at some bin >= 0.
      for (; bin > 0; --bin) {
        if (above + static_cast<int64_t>(hist[bin]) >= need) break;
        above += hist[bin];
      }
      sh_prefix = prefix | (static_cast<uint32_t>(bin) << shift);
      sh_need = need - above;
    }
    __syncthreads();
    prefix = sh_prefix;
    need = sh_need;
    mask |= 255u << shift;
  }
  // prefix == T; `need` of the keys equal to T are taken (the lowest indices), with every key > T.
  int64_t eq_seen = 0, written = 0;
  for (int64_t base = 0; base < s && written < k; base += kTopkThreads) {
    const int64_t i = base + tid;
    const bool valid = i < s;
    const uint32_t key = valid ? order_key(row[i]) : 0u;
    const bool gt = valid && key > prefix, eq = valid && key == prefix;
    int eq_total = 0, take_total = 0;
    const int eq_before = block_exclusive_count(eq, &eq_total, scan_smem);
    const bool take = gt || (eq && eq_seen + eq_before < need);
    const int pos = block_exclusive_count(take, &take_total, scan_smem);
    if (take) out[written + pos] = i;
    written += take_total;
    eq_seen += eq_total;
  }
}

inline void launch_topk(const float* x, int64_t rows, int64_t s, int64_t k, int64_t* idx,
                        cudaStream_t stream) {
  topk_kernel<<<static_cast<unsigned>(rows), kTopkThreads, 0, stream>>>(x, s, k, idx);
  check_cuda(cudaGetLastError(), "topk_kernel launch");
}

}  // namespace kvb::cuda::detail
