// `razorattention(sink=4, recent=1024, heads=auto, roles=calibrated)`: RazorAttention (Tang et al.
// 2024, no official code; written from the paper). Retrieval heads keep the whole cache; the
// other heads keep the first `sink` tokens and the `recent` latest (evicting per KV head as tokens
// arrive, methods/evict/headwise.h) plus ONE compensation token per head: the mean of every key
// and every value the head dropped, read with logit_bias log(count) so that attention weighs it as
// the `count` tokens it stands for (the paper's eq. 4-5; methods/head_split_store.h holds it in
// the compute dtype, counted as a slot: 2 x head_dim payload elements and an 8-byte count).
//
// Head roles (the paper's data-free scores for RoPE models): a calibration prompt of a random
// token sequence R of distinct tokens, repeated (R R; |R| = min(256, max_position / 2, vocab)),
// goes in as one forward call with attention recorded. For a query in the second copy at i, its
// token's previous occurrence is i - |R|:
//   echo score      = attention from i to i - |R|      (the previous occurrence itself)
//   induction score = attention from i to i - |R| + 1  (the token after it)
// averaged over the second copy and 2 seeded sequences; a KV head scores the most of its query
// heads (GQA). Retrieval heads: round(heads x n_layers x n_head_kv) of them, one fifteenth
// (rounded) chosen by echo score first, the rest by induction score (ties: lower layer-major
// index) — the paper protects echo heads and induction heads apart, the latter far more.
// The paper's buffer is max(S0, N / C) tokens; kvbench keeps integer budgets: `recent` tokens.
//
// roles=calibrated (the default) refuses to make a state until calibrated (kvbench run does
// it; the artifact is cached as DuoAttention's is); roles=<pattern of r and s> sets them
// explicitly, and heads is then what the pattern gives (heads=auto in the spec).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <unordered_set>

#include "common/check.h"
#include "methods/evict/headwise.h"
#include "methods/quant/full.h"
#include "methods/registry.h"

namespace kvb {
namespace {

constexpr int64_t kSamples = 2, kMaxRepeat = 256;
constexpr double kDefaultHeads = 0.15;

// A full-cache state that records each layer's attention weights (the calibration probe).
class AttentionProbe : public KVCacheState {
 public:
  AttentionProbe(const ModelShape& shape, torch::ScalarType compute)
      : store_(FullMethod(compute).make_store(shape)),
        probs_(static_cast<size_t>(shape.n_layers)) {}
  void append(int layer, const KVAppend& a) override { store_->append(layer, a); }
  bool wants_attention(int) const override { return true; }
  void observe(int layer, const torch::Tensor& p) override {
    probs_[static_cast<size_t>(layer)] = p.to(torch::kCPU, torch::kFloat32);
  }
  KVView view(int layer) const override { return store_->view(layer); }
  MemoryUse memory() const override { return store_->memory(); }
  MemoryUse memory(int layer) const override { return store_->memory(layer); }
  std::unique_ptr<KVCacheState> clone() const override {
    KVB_CHECK(false, "the calibration probe is not cloned");
    return nullptr;
  }
  const torch::Tensor& probs(int layer) const { return probs_[static_cast<size_t>(layer)]; }

 private:
  std::unique_ptr<SlotStore> store_;
  std::vector<torch::Tensor> probs_;  // per layer [B, H_q, T, S + T]
};

class RazorSelector : public HeadwiseSelector {
 public:
  explicit RazorSelector(const StageSpec& s)
      : HeadwiseSelector(s, true),
        heads_(s.params.at("heads") == "auto" ? kDefaultHeads : spec_float(s, "heads")) {}

  std::shared_ptr<const SelectorMethod> calibrated(
      const CalibrationContext& ctx, const CalibrationStateFactory& make) const override;

 protected:
  int64_t calibrated_streaming(int64_t total) const override {
    return total - std::llround(heads_ * static_cast<double>(total));
  }
  std::shared_ptr<HeadwiseSelector> copy() const override {
    return std::make_shared<RazorSelector>(*this);
  }

 private:
  double heads_;
};

std::vector<int64_t> distinct_tokens(int64_t m, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> tok(0, vocab - 1);
  std::vector<int64_t> out;
  std::unordered_set<int64_t> seen;
  while (static_cast<int64_t>(out.size()) < m) {
    const int64_t t = tok(rng);
    if (seen.insert(t).second) out.push_back(t);
  }
  return out;
}

std::shared_ptr<const SelectorMethod> RazorSelector::calibrated(
    const CalibrationContext& ctx, const CalibrationStateFactory&) const {
  if (roles_param() != "calibrated") return nullptr;
  const std::string path = artifact_path(ctx);
  if (auto roles = read_artifact(ctx, path)) return with_artifact(std::move(*roles), path, false);
  KVB_INPUT_CHECK(ctx.run && ctx.vocab_size > 1, spec(), ": calibration needs a model to run");
  const ModelShape& shape = ctx.shape;
  const int64_t n = shape.n_layers * shape.n_head_kv;
  const int64_t group = shape.n_head_q / std::max<int64_t>(shape.n_head_kv, 1);
  int64_t m = std::min(kMaxRepeat, ctx.vocab_size);
  if (shape.max_position > 0) m = std::min(m, shape.max_position / 2);
  KVB_INPUT_CHECK(m >= 2, spec(), ": the model is too small to calibrate on");
  torch::Tensor echo = torch::zeros({shape.n_layers, shape.n_head_q}, torch::kFloat64);
  torch::Tensor induction = torch::zeros_like(echo);
  torch::Tensor rows = torch::arange(m, 2 * m, torch::kLong);
  for (int64_t s = 0; s < kSamples; ++s) {
    std::vector<int64_t> ids = distinct_tokens(m, ctx.vocab_size, 0x7261'7a00ULL + s);
    ids.insert(ids.end(), ids.begin(), ids.end());
    AttentionProbe probe(shape, ctx.compute);
    ctx.run(probe, ids, static_cast<int64_t>(ids.size()));
    for (int l = 0; l < shape.n_layers; ++l) {
      const torch::Tensor& p = probe.probs(l);  // [1, H_q, 2m, 2m]
      KVB_CHECK(p.defined() && p.size(2) == 2 * m && p.size(3) == 2 * m,
                "razorattention calibration: attention of layer ", l, " not recorded whole");
      torch::Tensor ph = p[0].to(torch::kFloat64);  // [H_q, 2m, 2m]
      using torch::indexing::Slice;
      echo.select(0, l).add_(ph.index({Slice(), rows, rows - m}).mean(-1) / kSamples);
      induction.select(0, l).add_(ph.index({Slice(), rows, rows - m + 1}).mean(-1) / kSamples);
    }
  }
  // A KV head scores what its most echo / induction-like query head does.
  torch::Tensor kv_echo = std::get<0>(echo.view({shape.n_layers, shape.n_head_kv, group}).max(-1))
                              .reshape({n});
  torch::Tensor kv_ind =
      std::get<0>(induction.view({shape.n_layers, shape.n_head_kv, group}).max(-1)).reshape({n});
  const int64_t retrieval = n - calibrated_streaming(n);
  const int64_t by_echo = std::llround(static_cast<double>(retrieval) / 15.0);
  std::vector<uint8_t> roles(static_cast<size_t>(n), 1);  // 1 = streaming
  auto pick = [&](const torch::Tensor& score, int64_t count) {
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    auto a = score.accessor<double, 1>();
    std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return a[x] > a[y]; });
    for (int64_t j : order) {
      if (count == 0) break;
      if (roles[static_cast<size_t>(j)] == 0) continue;
      roles[static_cast<size_t>(j)] = 0;
      --count;
    }
  };
  pick(kv_echo, by_echo);
  pick(kv_ind, retrieval - by_echo);
  auto to_vec = [](const torch::Tensor& t) {
    return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
  };
  write_artifact(ctx, path, roles,
                 {{"echo_scores", to_vec(kv_echo.contiguous())},
                  {"induction_scores", to_vec(kv_ind.contiguous())},
                  {"retrieval_by_echo", by_echo},
                  {"repeat_tokens", m},
                  {"prompts", kSamples}});
  return with_artifact(std::move(roles), path, true);
}

void finalize(const std::string& text, StageSpec& st) {
  const std::string& roles = st.params.at("roles");
  if (auto why = roles_problem(roles)) stage_fail(text, st, "roles: " + *why);
  std::string& heads = st.params.at("heads");
  if (roles != "calibrated" && heads != "auto")
    stage_fail(text, st, "heads is decided by the explicit roles (leave it out)");
  if (roles == "calibrated" && heads == "auto") heads = "0.15";
}

}  // namespace

MethodEntry razorattention_entry() {
  return {
      .name = "razorattention",
      .family = "evict",
      .help =
          "RazorAttention: retrieval heads (echo/induction scores on a repeated random sequence, "
          "a fraction `heads` of all KV heads) keep every token; the others keep `sink` + "
          "`recent` plus one compensation token (mean of what they dropped, weighted by its "
          "count). Roles calibrated on the model and cached, or an explicit roles=<r/s pattern>.",
      .params = {{"sink", "int", "4", {}, 0, kMaxSpecTokens, "attention-sink tokens non-retrieval heads keep"},
                 {"recent", "int", "1024", {}, 1, kMaxSpecTokens, "recent tokens non-retrieval heads keep"},
                 {"heads", "float", "auto", {}, 0, 1,
                  "fraction of KV heads kept as retrieval heads (calibrated roles; auto: 0.15, or "
                  "what roles= gives)"},
                 {"roles", "text", "calibrated", {}, 0, 0,
                  "calibrated, or a pattern of r (retrieval) / s (streaming) repeated over the "
                  "layer-major KV heads"}},
      .make = SelectorFactory([](const StageSpec& s) { return std::make_unique<RazorSelector>(s); }),
      .finalize = finalize,
      .contract = {.examples = {"razorattention(sink=4,recent=60,roles=rs)",
                                "razorattention(sink=2,recent=30,roles=s)",
                                "razorattention(sink=4,recent=20,roles=srr)"},
                   .view_tolerance = exact_view,
                   .lossless = {"razorattention(roles=r)",
                                "razorattention(sink=4,recent=64,roles=s)"},
                   .compressing = {"razorattention(sink=2,recent=8,roles=rs)"}},
  };
}

}  // namespace kvb
