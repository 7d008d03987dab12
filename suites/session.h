// A sequence being fed through a KV-cache state at running positions: prefill in chunks, greedy
// decoding on top, and snapshots (clone) for multi-request suites. Built on Model::forward only.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "harness/model/model.h"
#include "methods/kv_method.h"

namespace kvb {

class Session {
 public:
  Session(const Model& model, std::unique_ptr<KVCacheState> state, int64_t pos = 0)
      : model_(&model), state_(std::move(state)), pos_(pos) {}

  // Feeds `ids` at positions pos()..pos()+n-1 in forward calls of `chunk` tokens (0 = one call).
  // Returns the logits after the last token [V] fp32.
  torch::Tensor feed(const std::vector<int64_t>& ids, int64_t chunk = 0);
  // Greedy decoding from `last` logits [V]: up to max_new tokens, ending before a stop id. Every
  // produced token but the last is fed back (so the state holds them afterwards).
  std::vector<int64_t> greedy(const torch::Tensor& last, int64_t max_new,
                              const std::vector<int64_t>& stop_ids);
  // The state's compression point after a prompt (SnapKV and the like compress here).
  void end_prefill() { state_->end_prefill(); }

  Session clone() const { return Session(*model_, state_->clone(), pos_); }
  KVCacheState& state() { return *state_; }
  const KVCacheState& state() const { return *state_; }
  int64_t pos() const { return pos_; }

 private:
  const Model* model_;
  std::unique_ptr<KVCacheState> state_;
  int64_t pos_;
};

// Greedy argmax of logits [V] (ties: lowest id), as the engine's Sampler does at temperature 0.
int64_t argmax_token(const torch::Tensor& logits);

}  // namespace kvb
