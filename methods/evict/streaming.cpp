#include "methods/evict/streaming.h"

#include <limits>

#include "harness/common/check.h"

namespace kvb {
namespace {

class StreamingState : public SelectorState {
 public:
  StreamingState(int64_t sink, int64_t window, int64_t n_layers)
      : sink_(sink), window_(window), first_(static_cast<size_t>(n_layers), -1) {}

  void on_append(int layer, const KVAppend& a, const SelectContext& ctx) override {
    if (first_[layer] < 0 && a.pos.size(0) > 0) first_[layer] = a.pos[0].item<int64_t>();
  }

  // Sinks rank above everything, then recency: the lowest-ranked slots are evicted.
  Eviction select(int layer, const SelectContext& ctx) override {
    const int64_t s = ctx.store.slots(layer), cap = sink_ + window_;
    if (s <= cap) return {};
    torch::Tensor pos = ctx.store.positions(layer);  // [B, H, S]
    torch::Tensor rank = pos.to(torch::kDouble).masked_fill(pos < first_[layer] + sink_,
                                                            std::numeric_limits<double>::infinity());
    Eviction e;
    if (s == cap + 1) {
      e.drop_one = rank.argmin(-1);
    } else {
      e.keep = std::get<0>(std::get<1>(rank.topk(cap, -1)).sort(-1));
    }
    return e;
  }

  std::unique_ptr<SelectorState> clone() const override { return std::make_unique<StreamingState>(*this); }

 private:
  int64_t sink_, window_;
  std::vector<int64_t> first_;  // per layer: position of the first token appended
};

}  // namespace

std::string StreamingSelector::spec() const {
  return "streaming(sink=" + std::to_string(sink_) + ",window=" + std::to_string(window_) + ")";
}

std::unique_ptr<SelectorState> StreamingSelector::make_selector(const ModelShape& shape) const {
  return std::make_unique<StreamingState>(sink_, window_, shape.n_layers);
}

}  // namespace kvb
