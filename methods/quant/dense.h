// Dense slot storage: the `full` stage of a chain (`h2o(budget=512)+full(dtype=fp16)`) and the
// storage of a selector used alone. Keys and values held in `dtype`; slots can be dropped.
#pragma once

#include "methods/slot_store.h"

namespace kvb {

class DenseMethod : public StorageMethod {
 public:
  explicit DenseMethod(torch::ScalarType dtype = torch::kFloat32) : dtype_(dtype) {}
  std::string spec() const override;  // full(dtype=...)
  std::unique_ptr<SlotStore> make_store(const ModelShape& shape) const override;
  MemoryUse layer_promise(const ModelShape& shape, int64_t slots,
                          torch::ScalarType compute) const override;

 private:
  torch::ScalarType dtype_;
};

}  // namespace kvb
