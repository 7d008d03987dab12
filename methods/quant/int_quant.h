// `int(bits=8|4|2, group=64)`: per-token asymmetric integer quantization (FlexGen style) of keys
// and values alike. Each token's D channels split into groups of `group` consecutive channels
// (min(group, D) when the head is narrower), each with an fp16 scale and zero point; codes are
// packed 8/bits per byte.
#pragma once

#include "methods/slot_store.h"

namespace kvb {

class IntMethod : public StorageMethod {
 public:
  IntMethod(int bits, int64_t group) : bits_(bits), group_(group) {}
  std::string spec() const override;
  std::unique_ptr<SlotStore> make_store(const ModelShape& shape) const override;
  MemoryUse layer_promise(const ModelShape& shape, int64_t slots,
                          torch::ScalarType compute) const override;
  int bits() const { return bits_; }
  int64_t group_for(int64_t head_dim) const;  // effective group; throws if it does not divide D

 private:
  int bits_;
  int64_t group_;
};

}  // namespace kvb
