// Fused decode attention over the `int` method's cache (methods/quant/int_quant.cpp): keys and
// values alike quantized per slot, each row of D channels in groups of `group` consecutive
// channels with an fp16 scale and zero point, codes packed 8/BITS per byte (first code in the
// lowest bits); element = code * scale + zero in fp32. Every slot is quantized (no residual).
// Layout per side: codes [B, H_kv, S, D*BITS/8] uint8, scale/zero [B, H_kv, S, D/group] fp16.
#pragma once

#include "decode_attention.cuh"

namespace kvb::cuda::detail {

template <int BITS, int D>
struct IntLoader {
  static_assert(BITS == 2 || BITS == 4 || BITS == 8, "int codes are 2, 4 or 8 bits");
  static constexpr int kPacked = D * BITS / 8;
  Rows<uint8_t> kq, vq;
  Rows<uint16_t> ks, kz, vs, vz;
  int64_t group = D, ng = 1;  // ng = D / group

  __device__ __forceinline__ void key(int64_t b, int64_t h, int64_t j, int c0,
                                      float (&k)[D / kLanesPerSlot]) const {
    constexpr int kCpl = D / kLanesPerSlot;
    const uint8_t* row = kq.row(b, h, j, kPacked);
    const uint16_t* s = ks.row(b, h, j, ng);
    const uint16_t* z = kz.row(b, h, j, ng);
#pragma unroll
    for (int c = 0; c < kCpl; ++c) {
      const int64_t gi = (c0 + c) / group;
      k[c] = fmaf(static_cast<float>(unpack_code<BITS>(row, c0 + c)), half_bits_to_float(s[gi]),
                  half_bits_to_float(z[gi]));
    }
  }

  __device__ __forceinline__ float value(int64_t b, int64_t h, int64_t j, int c) const {
    const int64_t gi = c / group;
    const float code = static_cast<float>(unpack_code<BITS>(vq.row(b, h, j, kPacked), c));
    return fmaf(code, half_bits_to_float(vs.row(b, h, j, ng)[gi]),
                half_bits_to_float(vz.row(b, h, j, ng)[gi]));
  }
};

}  // namespace kvb::cuda::detail
