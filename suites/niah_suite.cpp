// The needle-in-a-haystack suite (suites/suite.h) over run_niah(): the grid of prompts built
// once per (model, run, dataset), so every method sees the same haystacks and needles.
#include <memory>

#include "common/json_reader.h"
#include "datasets/loader.h"
#include "datasets/needle.h"
#include "suites/config.h"
#include "suites/niah.h"
#include "suites/suite.h"

namespace kvb {
namespace {

class NiahRun : public PreparedRun {
 public:
  NiahRun(const Model& model, const Tokenizer& tok, NiahParams p, std::vector<NiahPoint> grid)
      : model_(&model), tok_(&tok), p_(std::move(p)), grid_(std::move(grid)) {}

  CellResult run_cell(const KVMethod& method,
                      const std::function<void(double)>& progress) const override {
    return {run_niah(*model_, *tok_, method, grid_, p_, progress),
            {{"samples_per_cell", p_.samples_per_cell},
             {"haystack",
              "sample 0 of a grid point from the corpus' first sentence, sample s > 0 "
              "from a sentence drawn from its seed"},
             {"allow_extrapolation", p_.allow_extrapolation}}};
  }

 private:
  const Model* model_;
  const Tokenizer* tok_;
  NiahParams p_;
  std::vector<NiahPoint> grid_;
};

class NiahSuite : public Suite {
 public:
  std::string name() const override { return "niah"; }
  std::string help() const override {
    return "Needle in a haystack: a grid of context lengths x depths, greedy answers scored by "
           "exact or substring match, a heatmap per method.";
  }
  DatasetKind dataset_kind() const override { return DatasetKind::kText; }

  nlohmann::json canonical_params(const nlohmann::json& params,
                                  const std::string& where) const override {
    return niah_params_json(parse_niah_params(params, where));
  }

  std::unique_ptr<PreparedRun> prepare(const SuiteInputs& in) const override {
    NiahParams p = parse_niah_params(in.params, in.where);
    std::vector<NiahPoint> grid =
        build_niah_grid(in.tok, make_haystack(in.tok, in.dataset.text), p, in.seed);
    return std::make_unique<NiahRun>(in.model, in.tok, std::move(p), std::move(grid));
  }

  std::vector<ContextDemand> context_demands(const nlohmann::json& params) const override {
    std::vector<ContextDemand> out;
    const auto lens =
        JsonNode(params, "", "$.params").at("context_lengths").integers(16, kMaxContextTokens);
    for (size_t i = 0; i < lens.size(); ++i)
      out.push_back({"context_lengths[" + std::to_string(i) + "]", lens[i]});
    return out;
  }

  MetricRef headline() const override { return {"score", Better::kHigher}; }

  std::string summary(const nlohmann::json& m) const override {
    return "score " + format_number("%.3f", summary_number(m, "score"));
  }

  std::vector<CompareRule> compare_rules() const override {
    return {{"score", Better::kHigher, CompareTest::kPairedBootstrap}};
  }

  BoardLayout board() const override {
    BoardLayout b;
    b.columns = {{"score", "score", BoardColumn::Format::kNumber, "%.3f"}};
    b.pareto = {"score", Better::kHigher};
    b.pareto_title = "mean score";
    b.pareto_axis = "mean score";
    b.pareto_y_max = 1.0;
    b.charts = {{BoardChart::Kind::kHeatmap, "heatmap", "niah-heatmap", "",
                 "context length (tokens)", "needle depth", "", 1.0}};
    return b;
  }
};

}  // namespace

const Suite& niah_suite() {
  static const NiahSuite suite;
  return suite;
}

}  // namespace kvb
