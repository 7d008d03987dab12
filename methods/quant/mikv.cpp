// `mikv(hi=8, lo=2, budget=N, recent=N/2, group=32)`: MiKV, "No Token Left Behind" (Yang et
// al. 2024). An eviction policy's cache (H2O: attention accumulated per token; over `budget`
// the lowest-score token outside the `recent` most recent is evicted) decides which tokens are
// important; instead of being evicted, a token H2O would drop is requantized from `hi` to `lo`
// bits and kept. So every token stays: min(L, budget) per KV head at hi bits (the newest
// tokens enter at hi), the rest at lo bits.
//
// hi=full keeps the important tokens in the compute dtype (the paper's main setting keeps them
// in fp16); hi=8|4 quantizes them per token (groups of `group` channels, fp16 scale and zero)
// as the paper's low-bit high-precision cache does. Values and keys are quantized alike, per
// token. Attention comes from the appended chunks' own queries (methods/quant/mixed_store.h:
// the stage works alone and behind selectors, where a storage stage gets no observe()), summed
// over the query heads of a KV group, as methods/evict/h2o.cpp accumulates it.
//
// Bytes per KV head after L tokens (nh = min(L, budget), nl = L - nh, g = min(group, D)):
// payload 2*(nh*row_hi + nl*D*lo/8) with row_hi = D*es (full) or D*hi/8; metadata
// 2*(nh[hi quantized] + nl)*(D/g)*4 (fp16 scale + zero per group) + L (class byte) + 4*L (the
// float32 accumulated score of every token). Exact alone; after a chain's drops an upper bound.
//
// Deviations: no outlier-aware channel balancing of the hi cache (the paper's optional
// refinement); demotion requantizes the hi codes' values (the paper quantizes the fp16 token).
#include <limits>

#include "common/check.h"
#include "methods/quant/mixed_store.h"
#include "methods/registry.h"

namespace kvb {
namespace {

int hi_bits_of(const StageSpec& s) {
  const std::string& v = s.params.at("hi");
  return v == "full" ? 0 : std::stoi(v);
}

class MiKVPolicy : public MixedPolicy {
 public:
  MiKVPolicy(int64_t budget, int64_t recent) : budget_(budget), recent_(recent) {}

  torch::Tensor classify(const torch::Tensor& cls, const torch::Tensor& score) const override {
    torch::Tensor out = torch::where(cls == kMixedFp, torch::full_like(cls, kMixedHi), cls);
    const int64_t s = cls.size(2);
    const int64_t nhi = (out[0][0] == kMixedHi).sum().item<int64_t>();
    if (nhi <= budget_) return out;
    // Demote the nhi - budget lowest-score hi slots outside the recent window.
    torch::Tensor ar = torch::arange(s, cls.options().dtype(torch::kLong)).view({1, 1, s});
    torch::Tensor cand = (out == kMixedHi).logical_and(ar < s - recent_);
    torch::Tensor key = torch::where(cand, score.to(torch::kFloat32),
                                     torch::full_like(score, std::numeric_limits<float>::infinity(),
                                                      score.options().dtype(torch::kFloat32)));
    torch::Tensor low = std::get<1>(key.topk(nhi - budget_, -1, /*largest=*/false));
    out.scatter_(2, low, kMixedLo);
    return out;
  }

 private:
  int64_t budget_, recent_;
};

class MiKVMethod : public StorageMethod {
 public:
  explicit MiKVMethod(const StageSpec& stage)
      : StorageMethod(stage), hi_(hi_bits_of(stage)), lo_(static_cast<int>(spec_int(stage, "lo"))),
        budget_(spec_int(stage, "budget")), recent_(spec_int(stage, "recent")),
        group_(spec_int(stage, "group")) {}

  std::unique_ptr<SlotStore> make_store(const ModelShape& shape) const override {
    const int64_t g = group_for(shape.head_dim);
    MixedConfig c{.hi_bits = hi_,
                  .lo_bits = lo_,
                  .hi_group = g,
                  .lo_group = g,
                  .key_channel_norm = false,
                  .scores_fp_only = false};
    return std::make_unique<MixedStore>(shape, c, std::make_shared<MiKVPolicy>(budget_, recent_));
  }

  bool promise_exact_after_any_drops() const override { return false; }
  bool promise_exact_for_known_slots() const override { return false; }

  MemoryUse layer_promise(const ModelShape& shape, const KeptSlots& kept,
                          torch::ScalarType compute) const override {
    const int64_t h = shape.n_head_kv, d = shape.head_dim, s = kept.slots;
    const int64_t g = group_for(d), es = static_cast<int64_t>(c10::elementSize(compute));
    const int64_t row_hi = hi_ == 0 ? d * es : d * hi_ / 8, row_lo = d * lo_ / 8;
    const int64_t meta_row = (d / g) * 4;  // fp16 scale and zero per group
    MemoryUse m;
    m.slots = h * s;
    m.tokens_seen = s;
    const int64_t nh = std::min(s, budget_), nl = s - nh;
    if (kept.dropped()) {  // bound: hi count at most min(slots, budget), metadata per slot
      m.payload_bytes = h * 2 * (nh * std::max(row_hi, row_lo) + nl * row_lo);
      m.metadata_bytes = h * (2 * s * meta_row + s + 4 * s);
      return m;
    }
    m.payload_bytes = h * 2 * (nh * row_hi + nl * row_lo);
    m.metadata_bytes = h * (2 * ((hi_ == 0 ? 0 : nh) + nl) * meta_row + s + 4 * s);
    return m;
  }

  StageSpec effective_stage(const ModelShape& shape) const override {
    StageSpec s = stage();
    s.params["group"] = std::to_string(group_for(shape.head_dim));
    return s;
  }

 private:
  int64_t group_for(int64_t d) const {
    const int64_t g = std::min(group_, d);
    KVB_INPUT_CHECK(d % g == 0 && g % (8 / lo_) == 0 && (hi_ == 0 || g % (8 / hi_) == 0), spec(),
                    ": head_dim ", d, " is not a multiple of the group (", g, ")");
    return g;
  }

  int hi_, lo_;
  int64_t budget_, recent_, group_;
};

}  // namespace

MethodEntry mikv_entry() {
  return {
      .name = "mikv",
      .family = "quant",
      .help =
          "MiKV (No Token Left Behind): H2O's choice (accumulated attention, `recent` newest "
          "always) keeps `budget` tokens per KV head at `hi` bits (full: compute dtype); the "
          "tokens H2O would evict are requantized to `lo` bits instead.",
      .params = {{"hi", "enum", "8", {"full", "8", "4"}, 0, 0, "bits of the important tokens"},
                 {"lo", "int", "2", {"2", "4"}, 0, 0, "bits of the other tokens"},
                 {"budget", "int", "", {}, 1, kMaxSpecTokens, "tokens per KV head at hi bits"},
                 {"recent",
                  "int",
                  "auto",
                  {},
                  0,
                  kMaxSpecTokens,
                  "newest tokens always at hi bits (auto: budget/2)"},
                 {"group", "int", "32", {}, 1, kMaxSpecGroup, "channels per group (capped at D)"}},
      .make = StorageFactory([](const StageSpec& s) { return std::make_unique<MiKVMethod>(s); }),
      .finalize =
          [](const std::string& text, StageSpec& s) {
            if (s.params.at("recent") == "auto")
              s.params["recent"] = std::to_string(spec_int(s, "budget") / 2);
            if (spec_int(s, "recent") > spec_int(s, "budget"))
              stage_fail(text, s, "recent must not exceed budget");
            if (s.params.at("hi") != "full" && spec_int(s, "lo") > spec_int(s, "hi"))
              stage_fail(text, s, "lo must not exceed hi");
          },
      .contract = {.examples = {"mikv(budget=128)", "mikv(budget=100,hi=4,lo=2,recent=10)",
                                "mikv(budget=64,hi=full)"},
                   .view_tolerance =
                       [](const StageSpec& s) { return spec_int(s, "lo") == 2 ? 0.6 : 0.15; },
                   .lossless = {"mikv(budget=64,hi=full)"},
                   .compressing = {"mikv(budget=12,hi=full)", "mikv(budget=12,hi=8)"}},
  };
}

}  // namespace kvb
