// The suite interface: everything the config checker, the runner, `kvbench compare` and the
// leaderboard need to know about a suite (perplexity, niah, scbench, ...). Each suite implements
// it in its own file and is listed once in suites/registry.cpp; no other code tests a suite's
// name.
//
// A run of a suite config, per suite:
//   load_suite_config   dataset_kind() checks the run's datasets, canonical_params() its params
//   run_suite_file      prepare() once per (model, run, dataset), shared by every method; then
//                       PreparedRun::run_cell() per method; summary() is the cell's progress line
//   compare             compare_rules(): which metrics, which statistical test (results/compare.h)
//   leaderboard         headline() ranks the cells, board() lays out table and charts
//
// A cell whose metrics say "applicable": false (with "not_applicable": "<reason>") measured
// nothing the suite can rank: its summary is "n/a (<reason>)", the leaderboard lists it unranked
// and leaves it out of the Pareto plot, and compare leaves it out.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace kvb {

class KVMethod;
class Model;
class Tokenizer;
struct Dataset;

// The kind of dataset a suite reads (datasets/loader.h: Dataset::is_text).
enum class DatasetKind {
  kText,           // text, wikitext2, text_dir, prose
  kSharedContext,  // scbench_*, mixture
};
// As config errors name it: "a text dataset (text, wikitext2, text_dir, prose)".
std::string describe_dataset_kind(DatasetKind kind);

// Which way a metric is better.
enum class Better { kLower, kHigher };

struct MetricRef {
  std::string name;  // a field of a cell's metrics
  Better better;
};

// How `kvbench compare` tests one metric of two matched cells. Δ = candidate - baseline gets an
// interval; the cell regressed when the interval lies entirely beyond the threshold on the worse
// side (Better::kLower: above +threshold; kHigher: below -threshold).
enum class CompareTest {
  kStandardError,    // Δ ± 1.96·hypot(se_base, se_cand), the SEs recorded as "<metric>_se"
  kExact,            // Δ itself (a deterministic metric); differences within 1e-12 are rounding
  kPairedBootstrap,  // the cells' per-sample scores paired by sample, turn and input hash: the
                     // 95% percentile interval of the mean difference (1000 seeded resamples)
  kPairedStandardError,  // each cell's metric paired token by token with its own reference
                         // ("delta_<metric>" ± "delta_<metric>_se" against "ref_<metric>"):
                         // Δ = delta_cand - delta_base ± 1.96·hypot of the paired SEs, when both
                         // cells have them and the same reference value (within 1e-9 relative);
                         // else kStandardError on the metric itself
};
struct CompareRule {
  std::string metric;  // kPairedBootstrap: the name its row shows (the scores are the samples')
  Better better;
  CompareTest test;
};

// A column of the suite's leaderboard table, between "method" and "bits/token". A cell without
// the metric shows "–".
struct BoardColumn {
  enum class Format {
    kNumber,   // printf(format, v)
    kWithSe,   // printf(format, v), then " ± " + printf("%.2g", metrics["<metric>_se"]) if there
    kPercent,  // printf(format, 100 v)
    kSeries,   // an array: printf(format, x) joined by " · "; sorts as text
  };
  std::string title, metric;
  Format format;
  std::string printf;  // of one number
};

// A chart per model in the suite's leaderboard section, after the Pareto plot.
struct BoardChart {
  enum class Kind {
    kHeatmap,  // one per method: metrics[metric] = {context_lengths, depths, scores[len][depth]}
    kLines,    // one line per method through the array metrics[metric], x = 1, 2, ...
  };
  Kind kind;
  std::string metric;
  std::string chart;    // its data-chart attribute
  std::string title;    // kLines: the <title> after "<suite> · <dataset> · <model>: "
  std::string x, y;     // axis labels
  std::string caption;  // kLines: the caption after "<suite> · <dataset> · <model>: "
  double y_max = 0;     // the y axis reaches at least this
};

struct BoardLayout {
  std::vector<BoardColumn> columns;
  std::optional<MetricRef> tie_break;  // orders cells the headline metric ties
  MetricRef pareto;                    // quality against bits per token held, with the Pareto front
  std::string pareto_title;  // "<suite> · <dataset> · <model>: <title> against bits per token"
  std::string pareto_axis;   // its y axis label
  double pareto_y_max = 0;   // the y axis reaches at least this
  std::vector<BoardChart> charts;
};

// What a suite prepares from: the model and tokenizer loaded for the cells, the run's dataset
// and its canonical parameters. References stay valid while the PreparedRun lives.
struct SuiteInputs {
  const Model& model;
  const Tokenizer& tok;
  const Dataset& dataset;
  const nlohmann::json& params;  // canonical_params()'s result
  std::string where;             // "$.runs[i].params"
  uint64_t seed;                 // the config's
};

// A context length a run asks of the model, checked against its max_position_embeddings before
// anything runs (unless the run's params set "allow_extrapolation": true).
struct ContextDemand {
  std::string field;  // where in the params: "ctx", "context_lengths[2]"
  int64_t positions;  // positions 0..positions-1
};

// One cell's outcome.
struct CellResult {
  nlohmann::json metrics;   // the record's "metrics"; "memory" = memory_use_json() of the state
  nlohmann::json protocol;  // the record's "protocol"; null when the suite records none
};

// A suite's data for one (model, run, dataset), prepared once and run for every method.
class PreparedRun {
 public:
  virtual ~PreparedRun() = default;
  // `progress` gets the fraction of the cell done.
  virtual CellResult run_cell(const KVMethod& method,
                              const std::function<void(double)>& progress) const = 0;
};

class Suite {
 public:
  virtual ~Suite() = default;
  // The config's "suite"; part of every record and cell key.
  virtual std::string name() const = 0;
  virtual std::string help() const = 0;  // one sentence
  virtual DatasetKind dataset_kind() const = 0;
  // `params` (schema-validated; {} when the run has none) with every default filled: the run's
  // identity in cell keys. kvb::InputError "<where>[.<field>]: <problem>" for what the schema
  // cannot say.
  virtual nlohmann::json canonical_params(const nlohmann::json& params,
                                          const std::string& where) const = 0;
  // Tokenized text, a needle grid, ...; kvb::InputError when the data does not fit the params.
  virtual std::unique_ptr<PreparedRun> prepare(const SuiteInputs& in) const = 0;
  // The context lengths the run's canonical params ask for; none by default.
  virtual std::vector<ContextDemand> context_demands(const nlohmann::json& params) const {
    return {};
  }
  // The metric that ranks cells (summary lines, the leaderboard's best-first order).
  virtual MetricRef headline() const = 0;
  // One line from a cell's metrics, for the progress line and summary_table().
  virtual std::string summary(const nlohmann::json& metrics) const = 0;
  virtual std::vector<CompareRule> compare_rules() const = 0;
  virtual BoardLayout board() const = 0;
};

// printf-style formatting of one number, for summary() and the leaderboard.
std::string format_number(const char* format, double v);

// What summary() reads from a cell's metrics, through the JSON layer, so that a stored record
// whose metrics lack a field or hold another type is kvb::InputError "metrics.<name>: ..." (the
// runner adds the store and the cell), not an exception from deep in nlohmann. A number as it is
// (a NaN too), null (how a NaN is stored) as NaN.
double summary_number(const nlohmann::json& metrics, const std::string& name);
// An array of such numbers.
std::vector<double> summary_numbers(const nlohmann::json& metrics, const std::string& name);
// metrics[name] when it is true; false when absent or anything else.
bool summary_flag(const nlohmann::json& metrics, const std::string& name);

// The params that tell runs of one suite on one dataset apart: "k=v, ..." of the fields of `mine`
// that differ in (or are absent from) one of `others` ("chunk=256, mode=prefill, prefix=768").
std::string params_label(const nlohmann::json& mine, const std::vector<const nlohmann::json*>& others);

// The reason a cell is not applicable (metrics "applicable": false), or nullopt.
std::optional<std::string> not_applicable_reason(const nlohmann::json& metrics);

// "n/a (<reason>)" for a cell that is not applicable, else the suite's summary().
std::string cell_summary(const Suite& suite, const nlohmann::json& metrics);

}  // namespace kvb
