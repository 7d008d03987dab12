// `random(budget=N, seed=0)`: keep a uniformly random subset of `budget` slots per KV head — the
// baseline every eviction method must beat (kvpress's RandomPress).
//
// Each token gets a fixed random key per (seed, layer, batch row, KV head, position), a hash, so
// the choice repeats for a given seed whatever the chunking. Timing as knorm's: continuous, after
// every append, whenever more than `budget` slots are held the lowest keys go. Keeping the
// `budget` highest keys among all tokens seen is a uniformly random `budget`-subset of them
// (bottom-k sampling), at every step; no window is protected.
#include <cstdint>

#include "methods/evict/score_selector.h"
#include "methods/registry.h"

namespace kvb {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

class RandomState : public ScoreSelectorState {
 public:
  RandomState(const ScoreRule& rule, const ModelShape& shape, uint64_t seed)
      : ScoreSelectorState(rule, shape), seed_(seed) {}

 protected:
  // [B, H_kv, T] float32 in [0, 1): 24 bits of the hash, exact in float32.
  torch::Tensor appended(int layer, const KVAppend& a, const SelectContext& ctx) override {
    const int64_t b = a.k.size(0), h = a.k.size(1), t = a.k.size(2);
    torch::Tensor pos = a.pos.to(torch::kCPU, torch::kLong).contiguous();
    const int64_t* p = pos.data_ptr<int64_t>();
    torch::Tensor keys = torch::empty({b, h, t}, torch::kFloat32);
    float* out = keys.data_ptr<float>();
    const uint64_t by_layer = splitmix64(splitmix64(seed_) ^ static_cast<uint64_t>(layer));
    for (int64_t row = 0; row < b * h; ++row) {
      const uint64_t by_row = splitmix64(by_layer ^ static_cast<uint64_t>(row));
      for (int64_t i = 0; i < t; ++i) {
        const uint64_t x = splitmix64(by_row ^ static_cast<uint64_t>(p[i]));
        out[row * t + i] = static_cast<float>(x >> 40) * (1.0f / 16777216.0f);
      }
    }
    return keys.to(a.k.device());
  }

  std::unique_ptr<ScoreSelectorState> copy() const override {
    return std::make_unique<RandomState>(*this);
  }

 private:
  uint64_t seed_;
};

class RandomSelector : public ScoreSelector {
 public:
  explicit RandomSelector(const StageSpec& stage)
      : ScoreSelector(stage, {.budget = spec_int(stage, "budget"),
                              .when = ScoreRule::kOverBudget,
                              .held_scores = true}),
        seed_(static_cast<uint64_t>(spec_int(stage, "seed"))) {}
  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override {
    return std::make_unique<RandomState>(rule(), shape, seed_);
  }

 private:
  uint64_t seed_;
};

}  // namespace

MethodEntry random_entry() {
  return {
      .name = "random",
      .family = "evict",
      .help =
          "Random eviction, the baseline: each KV head keeps a uniformly random `budget` of "
          "the tokens seen (fixed by `seed`), evicting whenever it holds more (continuously).",
      .params = {{"budget", "int", "", {}, 1, kMaxSpecTokens, "slots kept per KV head"},
                 {"seed",
                  "int",
                  "0",
                  {},
                  0,
                  4294967295.0,
                  "random seed (the same seed keeps the same slots)"}},
      .make =
          SelectorFactory([](const StageSpec& s) { return std::make_unique<RandomSelector>(s); }),
      .finalize = nullptr,
      .contract = {.examples = {"random(budget=128)", "random(budget=100,seed=7)"},
                   .view_tolerance = exact_view,
                   .lossless = {"random(budget=37)"},
                   .compressing = {"random(budget=12)"}},
  };
}

}  // namespace kvb
