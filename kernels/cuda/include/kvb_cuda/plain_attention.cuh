// Decode attention over an uncompressed fp16 cache (the baseline the fused kernels are measured
// against): K, V [B, H_kv, S, D] fp16 with contiguous rows. Same split/merge kernels as the
// compressed caches (decode_attention.cuh), so the comparison is of what is read.
#pragma once

#include "decode_attention.cuh"

namespace kvb::cuda::detail {

template <int D>
struct PlainHalfLoader {
  Rows<__half> k, v;

  __device__ __forceinline__ void key(int64_t b, int64_t h, int64_t j, int c0,
                                      float (&out)[D / kLanesPerSlot]) const {
    constexpr int kCpl = D / kLanesPerSlot;
    const __half* r = k.row(b, h, j, D) + c0;
#pragma unroll
    for (int c = 0; c < kCpl; ++c) out[c] = __half2float(r[c]);
  }

  __device__ __forceinline__ float value(int64_t b, int64_t h, int64_t j, int c) const {
    return __half2float(v.row(b, h, j, D)[c]);
  }
};

}  // namespace kvb::cuda::detail
