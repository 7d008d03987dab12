// SnapKV's observation-window vote (Li et al. 2024), shared by snapkv, pyramidkv and adakv.
//
// The last `window` prompt queries of a layer are kept until end_prefill; there they vote over
// the slots the store holds: each query's softmax attention (scale 1/sqrt(D), causal by source
// position, the view's logit_bias added) is summed over the window's queries and over the G query
// heads of each KV head, the window's own slots get vote 0, and the votes are pooled over the
// token axis (kernel `pool`, stride 1, same length; max or avg, as in FasterDecoding/SnapKV).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "methods/evict/score_selector.h"
#include "methods/kv_method.h"

namespace kvb {

// The last `window` queries appended to each layer, with their positions.
class WindowQueries {
 public:
  WindowQueries(std::string method, int64_t n_layers, int64_t window)
      : method_(std::move(method)), window_(window), layers_(static_cast<size_t>(n_layers)) {}
  // Keeps the chunk's last queries (a.q must be defined: the engine hands them to append()).
  void record(int layer, const KVAppend& a);
  void clear(int layer) { layers_[static_cast<size_t>(layer)] = Layer(); }
  bool has(int layer) const { return layers_[static_cast<size_t>(layer)].q.defined(); }
  const torch::Tensor& q(int layer) const { return layers_[static_cast<size_t>(layer)].q; }
  const torch::Tensor& pos(int layer) const { return layers_[static_cast<size_t>(layer)].pos; }
  int64_t bytes(int layer) const;  // fp32 queries + int64 positions held
  void deep_copy();                // replaces every held tensor by a clone (after a copy)

 private:
  struct Layer {
    torch::Tensor q;    // [B, H_q, w, D] fp32: the last w <= window queries
    torch::Tensor pos;  // [w] int64
  };
  std::string method_;
  int64_t window_;
  std::vector<Layer> layers_;
};

// The window's pooled votes over the view's slots: [B, H_kv, S] float32. q: [B, H_q, w, D]
// post-RoPE queries, qpos: [w] int64 their positions; in_window: [B, H_kv, S] bool (slots that
// vote 0, the window itself), or undefined.
torch::Tensor window_votes(const KVView& v, const torch::Tensor& q, const torch::Tensor& qpos,
                           const torch::Tensor& in_window, int64_t pool, bool max_pool);

// The state of a score selector ranking by the window vote at end_prefill (SnapKV, PyramidKV):
// the rule's `recent` is the window, its budget (per layer: ScoreRule::layer_budgets) what each
// KV head keeps.
class WindowVoteState : public ScoreSelectorState {
 public:
  WindowVoteState(const std::string& method, const ScoreRule& rule, const ModelShape& shape,
                  int64_t pool, bool max_pool)
      : ScoreSelectorState(rule, shape),
        pool_(pool),
        max_pool_(max_pool),
        queries_(method, shape.n_layers, rule.recent) {}

 protected:
  torch::Tensor appended(int layer, const KVAppend& a, const SelectContext& ctx) override;
  torch::Tensor decision_scores(int layer, const SelectContext& ctx,
                                const torch::Tensor& in_window) override;  // [B, H_kv, S]
  void prefill_done(int layer) override { queries_.clear(layer); }
  int64_t extra_metadata_bytes(int layer) const override { return queries_.bytes(layer); }
  std::unique_ptr<ScoreSelectorState> copy() const override;

 private:
  int64_t pool_;
  bool max_pool_;
  WindowQueries queries_;  // per layer, until end_prefill
};

}  // namespace kvb
