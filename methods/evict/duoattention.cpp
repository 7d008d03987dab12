// `duoattention(sink=64, recent=256, sparsity=auto, roles=calibrated)`: DuoAttention (Xiao et al.
// 2024). Retrieval heads keep the whole cache; streaming heads keep the first `sink` tokens and
// the `recent` latest, evicting as StreamingLLM does, per KV head, as tokens arrive
// (methods/evict/headwise.h). A ragged selector: each (layer, KV head) is a store of its own, so
// streaming heads really hold sink + recent slots.
//
// Head roles. The paper optimises a gate per head on synthetic pass-key retrieval data; kvbench
// calibrates by ablation instead, one head at a time:
//   - prompts: 2 synthetic pass-key prompts of token ids (seeded): random filler tokens with a
//     needle (4 marker tokens, then an 8-token pass key) at depth 1/3 and 2/3 of the part that
//     lies outside the sinks and the recent window; the question is the marker again, the answer
//     the pass key. The filler reaches min(2 (sink + recent) + 24, max_position - 12) tokens.
//   - the filler goes in as one forward call, then the marker and the pass key one token at a
//     time (teacher forcing), so every answer token reads the cache through the heads' roles;
//   - for each KV head: the answer's log-likelihood with that head alone streaming, subtracted
//     from the log-likelihood with every head retrieval (the full cache), averaged over prompts;
//   - the round(sparsity x n_layers x n_head_kv) heads whose drop is smallest (ties: lower
//     layer-major index) become streaming, the rest retrieval.
// The result is cached (methods/evict/headwise.h: artifact path, reuse); a run names the artifact
// it used in its cell record ("calibration": suites/runner.cpp).
//
// roles=calibrated (the default) refuses to make a state until calibrated: a model's roles are
// never guessed. roles=<pattern of r and s> sets them explicitly (tests, ablations); sparsity is
// then what the pattern gives, and the spec says sparsity=auto.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "common/check.h"
#include "methods/evict/headwise.h"
#include "methods/registry.h"

namespace kvb {
namespace {

constexpr int64_t kMarker = 4, kKey = 8, kSamples = 2;
constexpr double kDefaultSparsity = 0.5;

class DuoSelector : public HeadwiseSelector {
 public:
  explicit DuoSelector(const StageSpec& s)
      : HeadwiseSelector(s, false),
        sparsity_(s.params.at("sparsity") == "auto" ? kDefaultSparsity
                                                     : spec_float(s, "sparsity")) {}

  std::shared_ptr<const SelectorMethod> calibrated(
      const CalibrationContext& ctx, const CalibrationStateFactory& make) const override;

 protected:
  int64_t calibrated_streaming(int64_t heads) const override {
    return std::llround(sparsity_ * static_cast<double>(heads));
  }
  std::shared_ptr<HeadwiseSelector> copy() const override {
    return std::make_shared<DuoSelector>(*this);
  }

 private:
  double sparsity_;
};

struct PassKeyPrompt {
  std::vector<int64_t> ids;  // filler with the needle, marker, pass key
  int64_t context = 0;       // tokens fed as one forward call
  int64_t answer = 0;        // index of the first pass-key token after the question
};

std::vector<PassKeyPrompt> pass_key_prompts(int64_t context, int64_t sink, int64_t recent,
                                            int64_t vocab) {
  std::vector<PassKeyPrompt> out;
  // The needle lies in [sink, context - recent): neither a sink nor in the question's window.
  const int64_t lo = sink, hi = context - recent - (kMarker + kKey);
  for (int64_t i = 0; i < kSamples; ++i) {
    std::mt19937_64 rng(0x6475'6f00ULL + static_cast<uint64_t>(i));
    std::uniform_int_distribution<int64_t> tok(0, vocab - 1);
    PassKeyPrompt p;
    p.ids.resize(static_cast<size_t>(context));
    for (auto& t : p.ids) t = tok(rng);
    std::vector<int64_t> marker(kMarker), key(kKey);
    for (auto& t : marker) t = tok(rng);
    for (auto& t : key) t = tok(rng);
    const int64_t at = lo + (hi - lo) * (i + 1) / (kSamples + 1);
    std::copy(marker.begin(), marker.end(), p.ids.begin() + at);
    std::copy(key.begin(), key.end(), p.ids.begin() + at + kMarker);
    p.context = context;
    p.ids.insert(p.ids.end(), marker.begin(), marker.end());
    p.answer = static_cast<int64_t>(p.ids.size());
    p.ids.insert(p.ids.end(), key.begin(), key.end());
    out.push_back(std::move(p));
  }
  return out;
}

std::shared_ptr<const SelectorMethod> DuoSelector::calibrated(
    const CalibrationContext& ctx, const CalibrationStateFactory& make) const {
  if (roles_param() != "calibrated") return nullptr;
  const std::string path = artifact_path(ctx);
  if (auto roles = read_artifact(ctx, path)) return with_artifact(std::move(*roles), path, false);
  KVB_INPUT_CHECK(ctx.run && ctx.vocab_size > 1, spec(), ": calibration needs a model to run");
  const int64_t n = ctx.shape.n_layers * ctx.shape.n_head_kv;
  int64_t context = 2 * (sink() + recent()) + 2 * (kMarker + kKey);
  if (ctx.shape.max_position > 0)
    context = std::min(context, ctx.shape.max_position - kMarker - kKey);
  KVB_INPUT_CHECK(context - recent() - (kMarker + kKey) > sink(), spec(),
                  ": the model's ", ctx.shape.max_position,
                  " positions leave no room for a pass key outside the sinks and the recent "
                  "window; calibrate with smaller sink and recent");
  const std::vector<PassKeyPrompt> prompts =
      pass_key_prompts(context, sink(), recent(), ctx.vocab_size);
  auto log_likelihood = [&](const std::vector<uint8_t>& roles) {
    double total = 0;
    for (const PassKeyPrompt& p : prompts) {
      std::unique_ptr<KVCacheState> st = make(with_roles(roles));
      total += answer_log_likelihood(ctx.run(*st, p.ids, p.context), p.ids, p.answer);
    }
    return total / static_cast<double>(prompts.size());
  };
  const double full = log_likelihood(std::vector<uint8_t>(static_cast<size_t>(n), 0));
  std::vector<double> drop(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    std::vector<uint8_t> roles(static_cast<size_t>(n), 0);
    roles[static_cast<size_t>(j)] = 1;
    drop[static_cast<size_t>(j)] = full - log_likelihood(roles);
  }
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return drop[static_cast<size_t>(a)] < drop[static_cast<size_t>(b)];
  });
  std::vector<uint8_t> roles(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < calibrated_streaming(n); ++i) roles[static_cast<size_t>(order[i])] = 1;
  write_artifact(ctx, path, roles,
                 {{"scores", drop},
                  {"score", "answer log-likelihood drop with the head alone streaming"},
                  {"full_log_likelihood", full},
                  {"prompts", kSamples},
                  {"context_tokens", context},
                  {"answer_tokens", kKey}});
  return with_artifact(std::move(roles), path, true);
}

void finalize(const std::string& text, StageSpec& st) {
  const std::string& roles = st.params.at("roles");
  if (auto why = roles_problem(roles)) stage_fail(text, st, "roles: " + *why);
  std::string& sparsity = st.params.at("sparsity");
  if (roles != "calibrated" && sparsity != "auto")
    stage_fail(text, st, "sparsity is decided by the explicit roles (leave it out)");
  if (roles == "calibrated" && sparsity == "auto") sparsity = "0.5";
}

}  // namespace

MethodEntry duoattention_entry() {
  return {
      .name = "duoattention",
      .family = "evict",
      .help =
          "DuoAttention: retrieval heads keep every token, streaming heads keep `sink` + `recent` "
          "(StreamingLLM per KV head). Roles calibrated on the model (synthetic pass-key prompts: "
          "the heads whose streaming costs the answer least stream, a fraction `sparsity` of all "
          "KV heads), cached on disk; or an explicit roles=<r/s pattern> over the heads, "
          "layer-major, repeated.",
      .params = {{"sink", "int", "64", {}, 0, kMaxSpecTokens, "attention-sink tokens streaming heads keep"},
                 {"recent", "int", "256", {}, 1, kMaxSpecTokens, "recent tokens streaming heads keep"},
                 {"sparsity", "float", "auto", {}, 0, 1,
                  "fraction of KV heads that stream (calibrated roles; auto: 0.5, or what roles= gives)"},
                 {"roles", "text", "calibrated", {}, 0, 0,
                  "calibrated, or a pattern of r (retrieval) / s (streaming) repeated over the "
                  "layer-major KV heads"}},
      .make = SelectorFactory([](const StageSpec& s) { return std::make_unique<DuoSelector>(s); }),
      .finalize = finalize,
      .contract = {.examples = {"duoattention(sink=4,recent=60,roles=rs)",
                                "duoattention(sink=2,recent=30,roles=s)",
                                "duoattention(sink=4,recent=20,roles=srr)"},
                   .view_tolerance = exact_view,
                   .lossless = {"duoattention(roles=r)", "duoattention(sink=4,recent=64,roles=s)"},
                   .compressing = {"duoattention(sink=2,recent=8,roles=rs)"}},
  };
}

}  // namespace kvb
