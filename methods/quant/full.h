// `full(dtype=fp32|fp16|bf16)`: the uncompressed baseline cache.
#pragma once

#include "methods/kv_method.h"

namespace kvb {

class FullMethod : public KVMethod {
 public:
  explicit FullMethod(torch::ScalarType dtype = torch::kFloat32) : dtype_(dtype) {}
  std::string spec() const override;
  std::unique_ptr<KVCacheState> make_state(const ModelShape& shape) const override;
  // Dense keys and values in dtype(); positions are implicit (no metadata).
  std::optional<MemoryUse> promised_memory(const ModelShape& shape, int64_t tokens,
                                           torch::ScalarType compute = torch::kFloat32) const override;
  torch::ScalarType dtype() const { return dtype_; }

 private:
  torch::ScalarType dtype_;
};

}  // namespace kvb
