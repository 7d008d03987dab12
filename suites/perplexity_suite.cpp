// The perplexity suite (suites/suite.h) over run_perplexity(): the text tokenized once per
// (model, run, dataset), a full-cache reference run alongside every method.
#include <memory>

#include "common/check.h"
#include "datasets/loader.h"
#include "methods/registry.h"
#include "suites/perplexity.h"
#include "suites/suite.h"

namespace kvb {
namespace {

class PerplexityRun : public PreparedRun {
 public:
  PerplexityRun(const Model& model, PerplexityParams p, PerplexityText text)
      : model_(&model), p_(p), text_(std::move(text)), reference_(make_method("full")) {}

  CellResult run_cell(const KVMethod& method,
                      const std::function<void(double)>& progress) const override {
    const PerplexityResult r = run_perplexity(*model_, method, *reference_, text_, p_, progress);
    return {r.metrics_json(),
            {{"ctx", p_.ctx},
             {"stride", r.stride},
             {"chunk", p_.chunk},
             {"tokens", r.tokens},
             {"windows", r.windows},
             {"normalisation", "token"},
             {"mode", "decode"},
             {"reference", reference_->spec()},
             {"bos", !text_.prefix.empty()}}};
  }

 private:
  const Model* model_;
  PerplexityParams p_;
  PerplexityText text_;
  std::unique_ptr<KVMethod> reference_;
};

class PerplexitySuite : public Suite {
 public:
  std::string name() const override { return "perplexity"; }
  std::string help() const override {
    return "Decode-mode perplexity: windows of ctx tokens fed in chunks, each token scored "
           "once, against the full cache run alongside (PPL ± SE, KL, top-1 agreement).";
  }
  DatasetKind dataset_kind() const override { return DatasetKind::kText; }

  nlohmann::json canonical_params(const nlohmann::json& params,
                                  const std::string& where) const override {
    const PerplexityParams p = parse_perplexity_params(params);
    KVB_INPUT_CHECK(p.stride <= p.ctx, where, ".stride: must not exceed ctx (", p.ctx, ")");
    return perplexity_params_json(p);
  }

  std::unique_ptr<PreparedRun> prepare(const SuiteInputs& in) const override {
    const PerplexityParams p = parse_perplexity_params(in.params);
    return std::make_unique<PerplexityRun>(in.model, p,
                                           tokenize_for_perplexity(in.tok, in.dataset.text, p));
  }

  MetricRef headline() const override { return {"ppl", Better::kLower}; }

  std::string summary(const nlohmann::json& m) const override {
    return "ppl " + format_number("%.4g", m["ppl"].get<double>()) + " ± " +
           format_number("%.2g", m["ppl_se"].get<double>()) + "  KL " +
           format_number("%.3g", m["kl_mean"].get<double>()) + " (p99 " +
           format_number("%.3g", m["kl_p99"].get<double>()) + ")  top1 " +
           format_number("%.1f%%", 100.0 * m["top1_agreement"].get<double>());
  }

  // The mean NLL within its standard errors; KL from the full cache exactly.
  std::vector<CompareRule> compare_rules() const override {
    return {{"nll", Better::kLower, CompareTest::kStandardError},
            {"kl_mean", Better::kLower, CompareTest::kExact}};
  }

  BoardLayout board() const override {
    using F = BoardColumn::Format;
    BoardLayout b;
    b.columns = {{"ppl ± se", "ppl", F::kWithSe, "%.4g"},
                 {"KL vs full", "kl_mean", F::kNumber, "%.3g"},
                 {"top-1 agreement", "top1_agreement", F::kPercent, "%.1f%%"}};
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
