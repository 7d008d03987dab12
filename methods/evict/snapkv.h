// `snapkv(budget=N, window=32, pool=7, pooling=max)`: SnapKV (Li et al. 2024). Once the prompt
// is in (end_prefill), the last `window` prompt queries vote: their softmax attention over the
// prompt's keys (causal, scale 1/sqrt(D)) is summed over the window's queries, pooled over the
// token axis (kernel `pool`, stride 1, same length; max or avg as in FasterDecoding/SnapKV), and
// each KV head keeps its top `budget - window` prefix tokens plus the window itself. Prompts of
// at most `budget` tokens are kept whole; decode tokens are never evicted. Without end_prefill
// (perplexity decode mode) nothing is compressed.
//
// GQA: a KV head's votes are the sum over its G query heads (mean and sum rank alike).
// The votes are computed from the keys the store holds (dequantized when the storage quantizes)
// and the window's post-RoPE queries, which the selector keeps until end_prefill.
#pragma once

#include "methods/chain.h"

namespace kvb {

class SnapKVSelector : public SelectorMethod {
 public:
  SnapKVSelector(int64_t budget, int64_t window, int64_t pool, bool max_pool)
      : budget_(budget), window_(window), pool_(pool), max_pool_(max_pool) {}
  std::string spec() const override;
  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override;
  int64_t promised_slots(int64_t tokens) const override { return std::min(tokens, budget_); }

 private:
  int64_t budget_, window_, pool_;
  bool max_pool_;
};

}  // namespace kvb
