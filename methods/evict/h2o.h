// `h2o(budget=N, recent=N/2)`: Heavy-Hitter Oracle (Zhang et al. 2023). Every token's attention
// is accumulated over all queries that saw it; when more than `budget` slots are held, the
// lowest-score slot outside the `recent` most recent tokens is evicted (after a long chunk: the
// `budget - recent` highest-score older slots are kept plus the recent ones).
//
// GQA: scores live per KV head (that is what is stored); a KV head's score for a token is the sum
// of the attention its G query heads gave the token (H2O's own code sums over heads of MHA).
#pragma once

#include "methods/chain.h"

namespace kvb {

class H2OSelector : public SelectorMethod {
 public:
  H2OSelector(int64_t budget, int64_t recent) : budget_(budget), recent_(recent) {}
  std::string spec() const override;
  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override;
  int64_t promised_slots(int64_t tokens) const override { return std::min(tokens, budget_); }
  int64_t promised_metadata(const ModelShape& shape, int64_t slots) const override {
    return shape.n_head_kv * slots * 4;  // fp32 accumulated score per slot
  }

 private:
  int64_t budget_, recent_;
};

}  // namespace kvb
