// Fused decode attention over a packed KIVI cache (GPU twin of kernels/cpu/kivi_attention.h,
// same layout and math; reference kernels/reference/kivi_attention_reference.h):
//   keys    slots [0, Nq) quantized per channel, groups of `group` consecutive slots sharing
//           one fp16 scale and zero point per channel; slots [Nq, S) in the key residual.
//   values  slots [0, Nqv) quantized per slot, groups of `value_group` consecutive channels
//           sharing one fp16 scale and zero point; slots [Nqv, S) in the value residual.
// Codes are packed 8/BITS per byte along the channels, the first in the lowest bits; an element
// is code * scale + zero in fp32 (here one fmaf). Residuals are fp32 or fp16 (Res).
// The split/merge structure is decode_attention.cuh's.
#pragma once

#include "decode_attention.cuh"

namespace kvb::cuda::detail {

template <int BITS, int D, typename Res>
struct KiviLoader {
  static_assert(BITS == 2 || BITS == 4, "KIVI codes are 2 or 4 bits");
  static constexpr int kPacked = D * BITS / 8;
  Rows<uint8_t> kq;   // [B, H_kv, Nq, D*BITS/8]
  Rows<uint16_t> ks;  // [B, H_kv, >= Nq/group, D] fp16 bits
  Rows<uint16_t> kz;
  Rows<Res> kr;       // [B, H_kv, Nrk, D]
  Rows<uint8_t> vq;   // [B, H_kv, Nqv, D*BITS/8]
  Rows<uint16_t> vs;  // [B, H_kv, Nqv, D/value_group] fp16 bits
  Rows<uint16_t> vz;
  Rows<Res> vr;       // [B, H_kv, Nrv, D]
  int64_t nq = 0, nqv = 0, group = 1, gv = D, ngv = 1;  // ngv = D / gv

  __device__ __forceinline__ void key(int64_t b, int64_t h, int64_t j, int c0,
                                      float (&k)[D / kLanesPerSlot]) const {
    constexpr int kCpl = D / kLanesPerSlot;
    if (j < nq) {
      const uint8_t* row = kq.row(b, h, j, kPacked);
      const int64_t grp = j / group;
      const uint16_t* s = ks.row(b, h, grp, D);
      const uint16_t* z = kz.row(b, h, grp, D);
#pragma unroll
      for (int c = 0; c < kCpl; ++c)
        k[c] = fmaf(static_cast<float>(unpack_code<BITS>(row, c0 + c)),
                    half_bits_to_float(s[c0 + c]), half_bits_to_float(z[c0 + c]));
    } else {
      const Res* r = kr.row(b, h, j - nq, D);
#pragma unroll
      for (int c = 0; c < kCpl; ++c) k[c] = to_float(r[c0 + c]);
    }
  }

  __device__ __forceinline__ float value(int64_t b, int64_t h, int64_t j, int c) const {
    if (j < nqv) {
      const int64_t gi = c / gv;
      const float code = static_cast<float>(unpack_code<BITS>(vq.row(b, h, j, kPacked), c));
      return fmaf(code, half_bits_to_float(vs.row(b, h, j, ngv)[gi]),
                  half_bits_to_float(vz.row(b, h, j, ngv)[gi]));
    }
    return to_float(vr.row(b, h, j - nqv, D)[c]);
  }
};

}  // namespace kvb::cuda::detail
