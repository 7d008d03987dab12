// The shared-context suite (suites/suite.h) over run_scbench(): nothing to prepare beyond the
// dataset's task, which every method reads as it is.
#include <memory>

#include "datasets/loader.h"
#include "suites/scbench.h"
#include "suites/suite.h"

namespace kvb {
namespace {

class ScbenchRun : public PreparedRun {
 public:
  ScbenchRun(const Model& model, const Tokenizer& tok, const ScTask& task, ScbenchParams p)
      : model_(&model), tok_(&tok), task_(&task), p_(std::move(p)) {}

  CellResult run_cell(const KVMethod& method,
                      const std::function<void(double)>& progress) const override {
    return {run_scbench(*model_, *tok_, method, *task_, p_, progress), nullptr};
  }

 private:
  const Model* model_;
  const Tokenizer* tok_;
  const ScTask* task_;
  ScbenchParams p_;
};

class ScbenchSuite : public Suite {
 public:
  std::string name() const override { return "scbench"; }
  std::string help() const override {
    return "Shared context (SCBench-like): one long context, several queries in one session "
           "(multi_turn) or each from the compressed context (multi_request), scored per turn.";
  }
  DatasetKind dataset_kind() const override { return DatasetKind::kSharedContext; }

  nlohmann::json canonical_params(const nlohmann::json& params,
                                  const std::string& where) const override {
    return scbench_params_json(parse_scbench_params(params, where));
  }

  std::unique_ptr<PreparedRun> prepare(const SuiteInputs& in) const override {
    return std::make_unique<ScbenchRun>(in.model, in.tok, in.dataset.task,
                                        parse_scbench_params(in.params));
  }

  MetricRef headline() const override { return {"score", Better::kHigher}; }

  std::string summary(const nlohmann::json& m) const override {
    std::string t = "score " + format_number("%.3f", summary_number(m, "score")) + "  turns [";
    const std::vector<double> turns = summary_numbers(m, "turn_scores");
    for (size_t i = 0; i < turns.size(); ++i) t += (i ? " " : "") + format_number("%.2f", turns[i]);
    return t + "]";
  }

  std::vector<CompareRule> compare_rules() const override {
    return {{"score", Better::kHigher, CompareTest::kPairedBootstrap}};
  }

  BoardLayout board() const override {
    using F = BoardColumn::Format;
    BoardLayout b;
    b.columns = {{"score", "score", F::kNumber, "%.3f"},
                 {"score per turn", "turn_scores", F::kSeries, "%.2f"}};
    b.pareto = {"score", Better::kHigher};
    b.pareto_title = "mean score";
    b.pareto_axis = "mean score";
    b.pareto_y_max = 1.0;
    b.charts = {{BoardChart::Kind::kLines, "turn_scores", "scbench-turns", "mean score by turn",
                 "turn", "mean score",
                 "mean score of each turn over the samples, each method's latest cell.", 1.0}};
    return b;
  }
};

}  // namespace

const Suite& scbench_suite() {
  static const ScbenchSuite suite;
  return suite;
}

}  // namespace kvb
