// `full(dtype=auto|fp32|fp16|bf16)`: the uncompressed cache, the dense slot store. Alone it is
// the baseline; as the last stage of a chain (`h2o(budget=512)+full(dtype=fp16)`) it stores what
// the selectors keep, and selectors used alone store into `full`. dtype=auto (the default) is the
// run's compute dtype, resolved by canonicalize(), so the canonical spec names it: `full` is
// full(dtype=fp32) in an fp32 run and full(dtype=bf16) in a bf16 run.
//
// Per layer, keys and values live in [B, H_kv, capacity, D] buffers of `dtype` whose capacity
// doubles, so a decode step's append is amortised O(1) and view() is a narrow() of the buffers
// (no copy). Dropping a slot moves the last one into its place (O(D) per head). Positions stay
// implicit (no bytes) until a slot is dropped or positions stop being contiguous.
#pragma once

#include "methods/slot_store.h"

namespace kvb {

class FullMethod : public StorageMethod {
 public:
  explicit FullMethod(torch::ScalarType dtype = torch::kFloat32);
  explicit FullMethod(const StageSpec& stage);  // full(dtype=...), default-filled
  std::unique_ptr<SlotStore> make_store(const ModelShape& shape) const override;
  // Dense keys and values in dtype(); implicit positions (no metadata).
  MemoryUse layer_promise(const ModelShape& shape, const KeptSlots& kept,
                          torch::ScalarType compute) const override;
  torch::ScalarType dtype() const { return dtype_; }

 private:
  torch::ScalarType dtype_;
};

}  // namespace kvb
