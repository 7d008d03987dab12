#include "methods/evict/h2o.h"

#include <limits>

#include "harness/common/check.h"

namespace kvb {
namespace {

class H2OState : public SelectorState {
 public:
  H2OState(int64_t budget, int64_t recent, int64_t n_layers)
      : budget_(budget), recent_(recent), layers_(static_cast<size_t>(n_layers)) {}

  bool wants_attention(int layer) const override { return true; }

  void on_append(int layer, const KVAppend& a, const SelectContext& ctx) override {
    Layer& L = layers_[layer];
    const int64_t b = a.k.size(0), h = a.k.size(1), t = a.k.size(2);
    if (!L.score.defined() || L.score.size(2) < L.len + t) {
      const int64_t cap = L.score.defined() ? L.score.size(2) : 0;
      torch::Tensor grown = torch::zeros({b, h, std::max<int64_t>(L.len + t, std::max<int64_t>(64, 2 * cap))},
                                         a.k.options().dtype(torch::kFloat32));
      if (L.len > 0) grown.narrow(2, 0, L.len).copy_(L.score.narrow(2, 0, L.len));
      L.score = grown;
    }
    L.score.narrow(2, L.len, t).zero_();
    L.len += t;
  }

  void observe(int layer, const torch::Tensor& probs, const SelectContext& ctx) override {
    Layer& L = layers_[layer];
    const int64_t b = L.score.size(0), h = L.score.size(1), t = probs.size(2), s = probs.size(3);
    KVB_CHECK(s == L.len, "h2o: attention over ", s, " slots, ", L.len, " held");
    torch::Tensor by_kv = probs.view({b, h, probs.size(1) / h, t, s}).sum({2, 3});  // [B, H_kv, S]
    L.score.narrow(2, 0, s).add_(by_kv);
  }

  Eviction select(int layer, const SelectContext& ctx) override {
    Layer& L = layers_[layer];
    if (L.len <= budget_) return {};
    torch::Tensor pos = ctx.store.positions(layer);  // [B, H, S]
    torch::Tensor rank = L.score.narrow(2, 0, L.len)
                             .masked_fill(pos > ctx.last_pos - recent_, std::numeric_limits<float>::infinity());
    Eviction e;
    if (L.len == budget_ + 1) {
      e.drop_one = rank.argmin(-1);
    } else {
      e.keep = std::get<0>(std::get<1>(rank.topk(budget_, -1)).sort(-1));
    }
    return e;
  }

  void keep(int layer, const torch::Tensor& idx) override {
    Layer& L = layers_[layer];
    torch::Tensor g = L.score.narrow(2, 0, L.len).gather(2, idx);
    L.len = idx.size(2);
    L.score.narrow(2, 0, L.len).copy_(g);
  }

  void drop_swap(int layer, const torch::Tensor& slot, int64_t slots_before) override {
    Layer& L = layers_[layer];
    torch::Tensor src = L.score.narrow(2, slots_before - 1, 1).clone();
    L.score.scatter_(2, slot.unsqueeze(-1), src);
    L.len = slots_before - 1;
  }

  int64_t metadata_bytes(int layer) const override {
    const Layer& L = layers_[layer];
    return L.score.defined() ? L.score.size(0) * L.score.size(1) * L.len * 4 : 0;
  }

  std::unique_ptr<SelectorState> clone() const override {
    auto c = std::make_unique<H2OState>(*this);
    for (Layer& L : c->layers_)
      if (L.score.defined()) L.score = L.score.clone();
    return c;
  }

 private:
  struct Layer {
    torch::Tensor score;  // [B, H_kv, capacity] fp32 accumulated attention, first len live
    int64_t len = 0;
  };
  int64_t budget_, recent_;
  std::vector<Layer> layers_;
};

}  // namespace

std::string H2OSelector::spec() const {
  return "h2o(budget=" + std::to_string(budget_) + ",recent=" + std::to_string(recent_) + ")";
}

std::unique_ptr<SelectorState> H2OSelector::make_selector(const ModelShape& shape) const {
  return std::make_unique<H2OState>(budget_, recent_, shape.n_layers);
}

}  // namespace kvb
