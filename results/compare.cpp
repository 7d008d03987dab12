#include "results/compare.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

#include "common/number_text.h"
#include "common/check.h"
#include "common/dtype.h"
#include "common/hash.h"
#include "methods/registry.h"
#include "suites/cell_record.h"
#include "results/results_db.h"
#include "suites/registry.h"

namespace kvb {
namespace {

using json = nlohmann::json;

// Exact differences this small are rounding, not a change.
constexpr double kExactTolerance = 1e-12;

std::vector<CompareRule> rules_of(const std::string& suite) {
  if (const Suite* s = find_suite(suite)) return s->compare_rules();
  return {{"score", Better::kHigher, CompareTest::kPairedBootstrap}};
}

double metric_of(const CompareCell& c, const std::string& name) {
  const json& m = c.record.at("metrics");
  KVB_INPUT_CHECK(m.contains(name) && m[name].is_number(), "cell of ", c.suite, ", ", c.spec,
                  ": no metric '", name, "'");
  return m[name].get<double>();
}

bool has_number(const json& m, const std::string& name) {
  return m.contains(name) && m[name].is_number();
}

// metrics[name] when it is a number, else `fallback` (a NaN is stored as null).
double number_or(const json& m, const std::string& name, double fallback) {
  return has_number(m, name) ? m[name].get<double>() : fallback;
}

}  // namespace

std::optional<CompareInterval> paired_interval(const std::string& metric, const CompareCell& base,
                                               const CompareCell& cand) {
  const json& b = base.record.at("metrics");
  const json& c = cand.record.at("metrics");
  const std::string d = "delta_" + metric, se = d + "_se", ref = "ref_" + metric;
  for (const json* m : {&b, &c})
    if (!has_number(*m, d) || !has_number(*m, se) || !has_number(*m, ref)) return std::nullopt;
  // Paired differences from two references are not comparable unless the references agree.
  const double rb = b[ref].get<double>(), rc = c[ref].get<double>();
  if (std::abs(rb - rc) > 1e-9 * std::max(1.0, std::abs(rb))) return std::nullopt;
  const double delta = c[d].get<double>() - b[d].get<double>();
  const double half = 1.96 * std::hypot(b[se].get<double>(), c[se].get<double>());
  return CompareInterval{delta - half, delta + half};
}

std::string spec_in_dtype(const std::string& spec, const std::string& dtype) {
  return make_method(spec, parse_dtype(dtype))->spec();
}

CompareCells load_compare_cells(const ResultsDb& db, const std::string& run_id,
                                const std::string& only_spec) {
  CompareCells out;
  for (auto& r : db.query(
           "SELECT c.id, c.suite, m.weights_hash, me.spec, d.content_hash, c.params, c.record "
           "FROM cells c JOIN models m ON m.id = c.model_id JOIN methods me ON me.id = "
           "c.method_id JOIN datasets d ON d.id = c.dataset_id WHERE c.run_id = ? ORDER BY c.id",
           {run_id})) {
    json record = parse_cell_record(r[6], db.path() + ": cell " + r[0]);
    if (!only_spec.empty() &&
        r[3] != spec_in_dtype(only_spec, record.value("dtype", std::string("fp32"))))
      continue;
    CompareCell c{r[1], r[3], std::move(record), {}};
    for (auto& s :
         db.query("SELECT idx, turn, input_hash, score FROM samples WHERE cell_id = ?", {r[0]}))
      c.samples[s[0] + "/" + s[1] + "/" + s[2]] = parse_double_text(s[3], "results database");
    const std::string key =
        r[1] + "|" + r[2] + "|" + (only_spec.empty() ? r[3] : "*") + "|" + r[4] + "|" + r[5];
    out[key] = std::move(c);
  }
  return out;
}

CompareInterval bootstrap_interval(const std::vector<double>& d, uint64_t seed) {
  if (d.empty()) return {0.0, 0.0};
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, d.size() - 1);
  std::vector<double> means(1000);
  for (double& m : means) {
    double s = 0;
    for (size_t i = 0; i < d.size(); ++i) s += d[pick(rng)];
    m = s / static_cast<double>(d.size());
  }
  std::sort(means.begin(), means.end());
  return {means[24], means[974]};
}

bool is_regression(const CompareRule& rule, const CompareInterval& ci, double threshold) {
  const double t = threshold + (rule.test == CompareTest::kExact ? kExactTolerance : 0.0);
  return rule.better == Better::kLower ? ci.lo > t : ci.hi < -t;
}

CompareRow compare_metric(const CompareRule& rule, const CompareCell& base, const CompareCell& cand,
                          double threshold, uint64_t seed) {
  CompareRow r;
  r.metric = rule.metric;
  switch (rule.test) {
    case CompareTest::kPairedStandardError:
      r.base = metric_of(base, rule.metric);
      r.cand = metric_of(cand, rule.metric);
      if (const auto ci = paired_interval(rule.metric, base, cand)) {
        r.ci = *ci;
        break;
      }
      [[fallthrough]];  // records without the paired figures, or against another reference
    case CompareTest::kStandardError: {
      r.base = metric_of(base, rule.metric);
      r.cand = metric_of(cand, rule.metric);
      const std::string se = rule.metric + "_se";
      const double half = 1.96 * std::hypot(number_or(base.record.at("metrics"), se, 0.0),
                                            number_or(cand.record.at("metrics"), se, 0.0));
      r.ci = {r.cand - r.base - half, r.cand - r.base + half};
      break;
    }
    case CompareTest::kExact:
      r.base = metric_of(base, rule.metric);
      r.cand = metric_of(cand, rule.metric);
      r.ci.lo = r.ci.hi = r.cand - r.base;
      break;
    case CompareTest::kPairedBootstrap: {
      std::vector<double> diff;
      double sb = 0, sc = 0;
      for (const auto& [key, score] : cand.samples)
        if (auto b = base.samples.find(key); b != base.samples.end()) {
          diff.push_back(score - b->second);
          sb += b->second;
          sc += score;
        }
      const double n = std::max<double>(1.0, static_cast<double>(diff.size()));
      r.base = sb / n;
      r.cand = sc / n;
      r.ci = bootstrap_interval(diff, seed);
      break;
    }
  }
  r.regressed = is_regression(rule, r.ci, threshold);
  return r;
}

Comparison compare_cells(const CompareCells& base, const CompareCells& cand, double threshold) {
  Comparison out;
  for (const auto& [key, c] : cand) {
    const auto it = base.find(key);
    if (it == base.end()) {
      ++out.unmatched;
      continue;
    }
    const CompareCell& b = it->second;
    if (not_applicable_reason(b.record.value("metrics", json::object())) ||
        not_applicable_reason(c.record.value("metrics", json::object()))) {
      ++out.not_applicable;
      continue;
    }
    for (const CompareRule& rule : rules_of(c.suite)) {
      CompareRow r = compare_metric(rule, b, c, threshold, fnv1a64(key));
      r.suite = c.suite;
      r.model = std::filesystem::path(c.record.value("model", std::string())).filename().string();
      r.dataset = c.record.value("dataset", std::string());
      r.method = b.spec == c.spec ? c.spec : b.spec + " → " + c.spec;
      out.rows.push_back(std::move(r));
    }
  }
  return out;
}

}  // namespace kvb
