// The engine: prefill a prompt through a KV-cache state, then decode token by token.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "harness/model/model.h"
#include "methods/kv_method.h"

namespace kvb {

struct SamplingOptions {
  double temperature = 0.0;  // 0 = greedy
  double top_p = 1.0;
  uint64_t seed = 0;
};

// Picks the next token from logits [V] (fp32). Greedy when temperature == 0 (ties: lowest id).
class Sampler {
 public:
  explicit Sampler(SamplingOptions opt);
  int64_t sample(const torch::Tensor& logits);

 private:
  SamplingOptions opt_;
  uint64_t state_;  // splitmix64 stream: results do not depend on torch's RNG
  double uniform();
};

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  std::vector<int64_t> stop_ids;  // generation ends after producing one of these (not emitted)
  int64_t prefill_chunk = 0;      // 0: the whole prompt in one forward call
  // Called with each input position's logits [V] in order: prompt tokens first, then each
  // generated token that is fed back. Row t = logits after feeding input token t.
  std::function<void(const torch::Tensor&)> on_logits;
};

struct GenerateResult {
  std::vector<int64_t> tokens;  // generated ids (stop token excluded)
  bool stopped = false;         // a stop id ended generation
  double prefill_seconds = 0, decode_seconds = 0;
};

GenerateResult generate(const Model& model, KVCacheState& cache, const std::vector<int64_t>& prompt,
                        const GenerateOptions& opt);

}  // namespace kvb
