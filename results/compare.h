// `kvbench compare`'s statistics: the cells of two runs, matched, become one row per compared
// metric — baseline, candidate, a 95% interval of their difference and a verdict. Which metrics
// and which test come from the suite's compare_rules() (suites/suite.h); a suite this build does
// not know is compared on its per-sample scores (paired bootstrap, higher is better).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "suites/suite.h"

namespace kvb {

class ResultsDb;

// One cell of a run, as compare reads it.
struct CompareCell {
  std::string suite, spec;                // spec: the canonical method spec
  nlohmann::json record;                  // the cell's record (model, dataset, metrics)
  std::map<std::string, double> samples;  // "idx/turn/input hash" -> score
};
// By match key: suite|model weights hash|spec (or "*")|dataset content hash|params.
using CompareCells = std::map<std::string, CompareCell>;

// The cells of run `run_id` of `db`; with `only_spec` set (any spelling), that method's cells
// only, matched without their spec (so two methods' cells pair up). A cell's method matches when
// `only_spec` canonicalized in the cell's dtype is its spec (spec_in_dtype).
// The canonical spec of `spec` in a run of compute dtype `dtype` ("fp32", "bf16", ...): `full`
// and the store of a selector used alone hold the run's dtype, so a bare `h2o(budget=8)` is
// `h2o(budget=8,recent=4)+full(dtype=bf16)` in a bf16 run. kvb::InputError on a bad spec.
std::string spec_in_dtype(const std::string& spec, const std::string& dtype);

CompareCells load_compare_cells(const ResultsDb& db, const std::string& run_id,
                                const std::string& only_spec);

struct CompareInterval {
  double lo = 0, hi = 0;
};

struct CompareRow {
  std::string suite, model, dataset, method, metric;  // model: the directory's name
  double base = 0, cand = 0;
  CompareInterval ci;  // of cand - base
  bool regressed = false;
};

struct Comparison {
  std::vector<CompareRow> rows;  // by the candidate's match keys, each cell's rules in order
  size_t unmatched = 0;          // candidate cells without a baseline cell
  size_t not_applicable = 0;     // matched pairs left out: either cell is not applicable
};

// Every candidate cell against the baseline cell of the same key. `threshold` >= 0: how far
// beyond zero, on the worse side, an interval must lie to count as a regression.
Comparison compare_cells(const CompareCells& base, const CompareCells& cand, double threshold);

// One rule on a matched pair; `seed` seeds the bootstrap (compare_cells: FNV-1a of the key).
// The row's suite, model, dataset and method are left empty.
CompareRow compare_metric(const CompareRule& rule, const CompareCell& base, const CompareCell& cand,
                          double threshold, uint64_t seed);

// CompareTest::kPairedStandardError's interval of Δ`metric`: delta_<metric> of the candidate
// less the baseline's ± 1.96·hypot(delta_<metric>_se of each), both paired token by token with
// their own reference; nullopt when either cell lacks those figures or ref_<metric> differs
// between them (more than 1e-9 relative), where the caller falls back to kStandardError.
std::optional<CompareInterval> paired_interval(const std::string& metric, const CompareCell& base,
                                               const CompareCell& cand);

// The 95% percentile interval of mean(d) over 1000 resamples of d with replacement, drawn from
// mt19937_64(seed); {0, 0} when d is empty.
CompareInterval bootstrap_interval(const std::vector<double>& d, uint64_t seed);

// Whether `ci` (of cand - base) lies entirely beyond `threshold` on the worse side of `rule`.
bool is_regression(const CompareRule& rule, const CompareInterval& ci, double threshold);

}  // namespace kvb
