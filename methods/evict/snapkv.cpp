#include "methods/evict/snapkv.h"

#include <cmath>
#include <limits>

#include "harness/common/check.h"

namespace kvb {
namespace {

class SnapKVState : public SelectorState {
 public:
  SnapKVState(int64_t budget, int64_t window, int64_t pool, bool max_pool, int64_t n_layers)
      : budget_(budget), window_(window), pool_(pool), max_pool_(max_pool), layers_(static_cast<size_t>(n_layers)) {}

  // Keeps the last `window` queries (and their positions) seen so far.
  void on_append(int layer, const KVAppend& a, const SelectContext& ctx) override {
    Layer& L = layers_[layer];
    if (L.done) return;
    KVB_CHECK(a.q.defined(), "snapkv: the engine must hand queries to append()");
    const int64_t t = a.q.size(2), r = std::min(t, window_);
    torch::Tensor q = a.q.narrow(2, t - r, r).to(torch::kFloat32);
    torch::Tensor p = a.pos.narrow(0, t - r, r).to(torch::kLong);
    if (L.q.defined()) {
      q = torch::cat({L.q, q}, 2);
      p = torch::cat({L.qpos, p}, 0);
    }
    const int64_t n = q.size(2), keep = std::min(n, window_);
    L.q = q.narrow(2, n - keep, keep).clone();
    L.qpos = p.narrow(0, n - keep, keep).clone();
  }

  Eviction end_prefill(int layer, const SelectContext& ctx) override {
    Layer& L = layers_[layer];
    if (L.done) return {};
    L.done = true;
    torch::Tensor q = L.q, qpos = L.qpos;
    L.q = torch::Tensor();
    L.qpos = torch::Tensor();
    const int64_t s = ctx.store.slots(layer);
    if (s <= budget_ || !q.defined()) return {};

    KVView v = ctx.store.view(layer);
    const int64_t b = v.k.size(0), h = v.k.size(1), d = v.k.size(3), w = q.size(2), g = q.size(1) / h;
    torch::Tensor k = v.k.to(torch::kFloat32);
    torch::Tensor qg = q.reshape({b, h, g * w, d});
    torch::Tensor scores = torch::matmul(qg, k.transpose(-1, -2)).div_(std::sqrt(static_cast<double>(d)));
    scores = scores.view({b, h, g, w, s});
    if (v.logit_bias.defined()) scores.add_(v.logit_bias.to(torch::kFloat32).view({b, h, 1, 1, s}));
    torch::Tensor future = v.pos.view({b, h, 1, 1, s}) > qpos.view({1, 1, 1, w, 1});  // causal
    scores.masked_fill_(future, -std::numeric_limits<float>::infinity());
    torch::Tensor votes = torch::softmax(scores, -1).sum({2, 3});  // [B, H_kv, S]

    torch::Tensor in_window = v.pos > ctx.last_pos - window_;  // [B, H_kv, S]
    votes.masked_fill_(in_window, 0);
    torch::Tensor flat = votes.view({b * h, 1, s});
    torch::Tensor pooled = max_pool_ ? torch::max_pool1d(flat, {pool_}, {1}, {pool_ / 2})
                                     : torch::avg_pool1d(flat, {pool_}, {1}, {pool_ / 2});
    torch::Tensor rank = pooled.view({b, h, s}).masked_fill(in_window, std::numeric_limits<float>::infinity());
    Eviction e;
    e.keep = std::get<0>(std::get<1>(rank.topk(budget_, -1)).sort(-1));
    return e;
  }

  int64_t metadata_bytes(int layer) const override {
    const Layer& L = layers_[layer];
    return L.q.defined() ? L.q.numel() * 4 + L.qpos.numel() * 8 : 0;
  }

  std::unique_ptr<SelectorState> clone() const override {
    auto c = std::make_unique<SnapKVState>(*this);
    for (Layer& L : c->layers_) {
      if (L.q.defined()) L.q = L.q.clone();
      if (L.qpos.defined()) L.qpos = L.qpos.clone();
    }
    return c;
  }

 private:
  struct Layer {
    torch::Tensor q;     // [B, H_q, w, D] fp32: the last w <= window queries
    torch::Tensor qpos;  // [w] int64
    bool done = false;
  };
  int64_t budget_, window_, pool_;
  bool max_pool_;
  std::vector<Layer> layers_;
};

}  // namespace

std::string SnapKVSelector::spec() const {
  return "snapkv(budget=" + std::to_string(budget_) + ",pool=" + std::to_string(pool_) +
         ",pooling=" + (max_pool_ ? "max" : "avg") + ",window=" + std::to_string(window_) + ")";
}

std::unique_ptr<SelectorState> SnapKVSelector::make_selector(const ModelShape& shape) const {
  return std::make_unique<SnapKVState>(budget_, window_, pool_, max_pool_, shape.n_layers);
}

}  // namespace kvb
