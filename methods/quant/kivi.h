// `kivi(bits=2|4, group=32, residual=128)`: KIVI (Liu et al. 2024, jy-yuan/KIVI).
//
//   keys   per-channel: a group of `group` consecutive tokens shares one fp16 scale and zero
//          point per channel. New keys wait in a full-precision residual; when it holds
//          `residual` tokens they are quantized together (residual/group groups) and it empties.
//   values per-token: each token's D channels split into groups of min(group, D), each with an
//          fp16 scale and zero. The `residual` most recent values stay in full precision; older
//          ones are quantized as they leave the residual (one per decode step).
// Codes are packed (4 per byte at 2 bits, 2 at 4 bits) in uint8 tensors; the residual is held in
// the compute dtype. After L tokens: floor(L/R)*R keys and max(0, L-R) values are quantized,
// whatever the chunking. view() dequantizes with kernels/cpu/quant_kernels.h each call (no
// dequantized copy is kept between steps).
//
// In a chain, keep() re-packs the kept slots into the layout KIVI has for that many tokens: kept
// values keep their codes' values (per-token re-quantization of a dequantized row is exact up to
// fp16 rounding); kept keys that were already quantized are quantized again in new groups.
#pragma once

#include "methods/slot_store.h"

namespace kvb {

class KiviMethod : public StorageMethod {
 public:
  KiviMethod(int bits, int64_t group, int64_t residual) : bits_(bits), group_(group), residual_(residual) {}
  std::string spec() const override;
  std::unique_ptr<SlotStore> make_store(const ModelShape& shape) const override;
  MemoryUse layer_promise(const ModelShape& shape, int64_t slots,
                          torch::ScalarType compute) const override;
  int bits() const { return bits_; }
  int64_t group() const { return group_; }
  int64_t residual() const { return residual_; }
  int64_t value_group(int64_t head_dim) const;  // min(group, D); throws if it does not divide D

 private:
  int bits_;
  int64_t group_, residual_;
};

}  // namespace kvb
