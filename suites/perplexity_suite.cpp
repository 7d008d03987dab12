// The perplexity suite (suites/suite.h) over plan_perplexity(), compute_perplexity_reference()
// and run_perplexity_pass(): the text tokenized and planned once per (model, run, dataset); the
// full-cache reference computed once, when the first cell needs it, and paired with every
// method's pass; the `full` cell is the reference pass itself.
#include <memory>

#include "common/check.h"
#include "common/json_reader.h"
#include "datasets/loader.h"
#include "methods/registry.h"
#include "suites/config.h"
#include "suites/perplexity.h"
#include "suites/suite.h"

namespace kvb {
namespace {

// Whether the method only acts at end_prefill() (SnapKV and its one-shot family): in decode
// mode, which never calls it, such a method holds the full cache and measures nothing.
bool one_shot(const KVMethod& method) { return acts_only_at_end_prefill(method.spec()); }

using json = nlohmann::json;

// The metrics of a cell that is not applicable: what was measured of the method itself (ppl,
// memory, time) but nothing that reads as fidelity to the full cache.
json not_applicable_metrics(const std::string& why, json measured) {
  for (const char* k : {"delta_nll", "delta_nll_se", "ln_ppl_ratio", "ln_ppl_ratio_se", "kl_mean",
                        "kl_mean_se", "kl_median", "kl_p90", "kl_p99", "kl_p999", "kl_max",
                        "top1_agreement", "top1_agreement_se", "dp_mean", "dp_mean_se"})
    measured.erase(k);
  measured["applicable"] = false;
  measured["not_applicable"] = why;
  return measured;
}

class PerplexityRun : public PreparedRun {
 public:
  PerplexityRun(const Model& model, PerplexityParams p, const PerplexityText& text)
      : model_(&model),
        p_(std::move(p)),
        bos_(!text.prefix.empty()),
        plan_(plan_perplexity(text, p_)),
        reference_(make_method("full", model.dtype())) {}

  CellResult run_cell(const KVMethod& method,
                      const std::function<void(double)>& progress) const override {
    const bool is_reference = method.spec() == reference_->spec();
    std::string why;
    if (!is_reference && p_.mode == "decode" && one_shot(method))
      why = "acts only at end_prefill(), which decode mode never calls; see \"mode\": \"prefill\"";
    else if (!is_reference && !plan_.reads_back)
      why = "chunk >= window: no window reads its cache back, so the store is never read";
    if (!why.empty())
      return {json{{"applicable", false},
                   {"not_applicable", why},
                   {"tokens", plan_.scored},
                   {"windows", plan_.windows.size()}},
              protocol(plan_.scored, false)};

    const bool compute = !ref_;
    const double share = compute && !is_reference ? 0.5 : 1.0;
    if (compute)
      ref_ = std::make_unique<PerplexityReference>(
          compute_perplexity_reference(*model_, *reference_, plan_, [&](double f) {
            if (progress) progress(share * f);
          }));
    if (is_reference) {
      json m = ref_->self.metrics_json();
      m["reference"] = true;
      return {m, protocol(ref_->self.tokens, true)};
    }
    const PerplexityResult r = run_perplexity_pass(*model_, method, *ref_, plan_, [&](double f) {
      if (progress) progress(1.0 - share + share * f);
    });
    json m = r.metrics_json();
    if (r.identical)
      m = not_applicable_metrics(
          "never changed what attention read: its logits equal the full cache's bitwise at "
          "every scored token",
          std::move(m));
    return {m, protocol(r.tokens, true)};
  }

 private:
  json protocol(int64_t tokens, bool with_reference) const {
    json j{{"ctx", p_.ctx},
           {"stride", plan_.stride},
           {"chunk", p_.chunk},
           {"tokens", tokens},
           {"windows", plan_.windows.size()},
           {"normalisation", "token"},
           {"mode", p_.mode},
           {"scoring", p_.scoring},
           {"reference", reference_->spec()},
           {"bos", bos_},
           {"allow_extrapolation", p_.allow_extrapolation}};
    if (p_.mode == "prefill") j["prefix"] = p_.prefix;
    if (with_reference && ref_) {
      j["kl"] = ref_->full_vocab() ? "full_vocabulary"
                                   : "top_" + std::to_string(ref_->top_ids.size(1)) + "_plus_tail";
      j["reference_seconds"] = ref_->self.seconds;
    }
    return j;
  }

  const Model* model_;
  PerplexityParams p_;
  bool bos_;
  PerplexityPlan plan_;
  std::unique_ptr<KVMethod> reference_;
  // Computed by the first cell that needs it (a resumed run whose cells are done computes none).
  mutable std::unique_ptr<PerplexityReference> ref_;
};

class PerplexitySuite : public Suite {
 public:
  std::string name() const override { return "perplexity"; }
  std::string help() const override {
    return "Perplexity in windows of ctx tokens (decode mode: fed in chunks; prefill mode: a "
           "prompt, end_prefill(), then token by token), paired token by token with the full "
           "cache computed once: KL, ΔNLL, top-1 agreement, PPL, each ± SE.";
  }
  DatasetKind dataset_kind() const override { return DatasetKind::kText; }

  nlohmann::json canonical_params(const nlohmann::json& params,
                                  const std::string& where) const override {
    const PerplexityParams p = parse_perplexity_params(params, where);
    check_perplexity_params(p, where);
    return perplexity_params_json(p);
  }

  std::unique_ptr<PreparedRun> prepare(const SuiteInputs& in) const override {
    const PerplexityParams p = parse_perplexity_params(in.params);
    return std::make_unique<PerplexityRun>(in.model, p,
                                           tokenize_for_perplexity(in.tok, in.dataset.text, p));
  }

  std::vector<ContextDemand> context_demands(const nlohmann::json& params) const override {
    return {{"ctx", JsonNode(params, "", "$.params").at("ctx").integer(2, kMaxContextTokens)}};
  }

  // Fidelity to the full cache ranks: a lossy method can have a lower perplexity by chance.
  MetricRef headline() const override { return {"kl_mean", Better::kLower}; }

  std::string summary(const nlohmann::json& m) const override {
    const auto num = [&m](const char* name) { return summary_number(m, name); };
    const std::string ppl =
        "ppl " + format_number("%.4g", num("ppl")) + " ± " + format_number("%.2g", num("ppl_se"));
    if (summary_flag(m, "reference")) return ppl + "  (the reference: KL 0 by construction)";
    std::string s = "KL " + format_number("%.3g", num("kl_mean")) + " (p99 " +
                    format_number("%.3g", num("kl_p99")) + ")";
    if (m.contains("delta_nll"))
      s += "  ΔNLL " + format_number("%+.3g", num("delta_nll")) + " ± " +
           format_number("%.2g", num("delta_nll_se"));
    return s + "  top1 " + format_number("%.1f%%", 100.0 * num("top1_agreement")) + "  " + ppl;
  }

  // The mean NLL paired with each run's own full-cache reference (falling back to its standard
  // errors for records without the paired figures); KL from the full cache exactly.
  std::vector<CompareRule> compare_rules() const override {
    return {{"nll", Better::kLower, CompareTest::kPairedStandardError},
            {"kl_mean", Better::kLower, CompareTest::kExact}};
  }

  BoardLayout board() const override {
    using F = BoardColumn::Format;
    BoardLayout b;
    b.columns = {{"KL vs full ± se", "kl_mean", F::kWithSe, "%.3g"},
                 {"ΔNLL ± se", "delta_nll", F::kWithSe, "%+.3g"},
                 {"top-1 agreement", "top1_agreement", F::kPercent, "%.1f%%"},
                 {"ppl ± se", "ppl", F::kWithSe, "%.4g"}};
    b.tie_break = MetricRef{"delta_nll", Better::kLower};
    b.pareto = {"kl_mean", Better::kLower};
    b.pareto_title = "KL from the full cache";
    b.pareto_axis = "KL(full ‖ method), nats/token";
    b.pareto_y_max = 0.0;
    return b;
  }
};

}  // namespace

const Suite& perplexity_suite() {
  static const PerplexitySuite suite;
  return suite;
}

}  // namespace kvb
