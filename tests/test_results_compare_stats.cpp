// compare's statistics (results/compare.h) called directly, on made-up cells: the paired
// bootstrap covers the true mean difference and repeats per seed; identical cells give a
// zero-width interval at 0; clearly worse candidates are flagged and changes within the noise
// are not; the threshold and the direction of each metric are honoured; perplexity's NLL is
// compared through each run's paired ΔNLL (falling back to the raw SEs for older records or
// another reference); the suites' rules are the ones compare_cells() applies, and cells that are
// not applicable are left out.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "results/compare.h"
#include "suites/registry.h"

namespace kvb {
namespace {

using json = nlohmann::json;

const CompareRule kNll{"nll", Better::kLower, CompareTest::kStandardError};
const CompareRule kKl{"kl_mean", Better::kLower, CompareTest::kExact};
const CompareRule kScore{"score", Better::kHigher, CompareTest::kPairedBootstrap};

CompareCell ppl_cell(double nll, double nll_se, double kl, const std::string& spec = "full") {
  return {"perplexity",
          spec,
          {{"model", "models/m"},
           {"dataset", "prose"},
           {"metrics", {{"nll", nll}, {"nll_se", nll_se}, {"kl_mean", kl}}}},
          {}};
}

const CompareRule kPairedNll{"nll", Better::kLower, CompareTest::kPairedStandardError};

// A perplexity cell as this version records it: nll paired token by token with the full cache.
CompareCell paired_cell(double nll, double nll_se, double ref_nll, double delta_se,
                        const std::string& spec = "kivi(bits=2)") {
  CompareCell c = ppl_cell(nll, nll_se, 0.01, spec);
  json& m = c.record["metrics"];
  m["ref_nll"] = ref_nll;
  m["delta_nll"] = nll - ref_nll;
  m["delta_nll_se"] = delta_se;
  return c;
}

CompareCell score_cell(const std::vector<double>& scores, const std::string& suite = "niah") {
  CompareCell c{suite, "full", {{"model", "m"}, {"dataset", "d"}, {"metrics", json::object()}}, {}};
  for (size_t i = 0; i < scores.size(); ++i)
    c.samples[std::to_string(i) + "/0/h" + std::to_string(i)] = scores[i];
  return c;
}

TEST(ResultsCompareStats, BootstrapCoversTheTrueMeanDifferenceAndRepeatsPerSeed) {
  // Differences spread evenly around 0.3: the true mean.
  std::vector<double> d;
  for (int i = 0; i < 220; ++i) d.push_back(0.3 + 0.1 * (i % 11 - 5));
  const CompareInterval ci = bootstrap_interval(d, 7);
  EXPECT_LT(ci.lo, 0.3);
  EXPECT_GT(ci.hi, 0.3);
  EXPECT_LT(ci.hi - ci.lo, 0.1);  // sd 0.32 over 220 samples: a 95% width near 0.084
  const CompareInterval again = bootstrap_interval(d, 7);
  EXPECT_EQ(again.lo, ci.lo);
  EXPECT_EQ(again.hi, ci.hi);
  const CompareInterval other = bootstrap_interval(d, 8);
  EXPECT_TRUE(other.lo != ci.lo || other.hi != ci.hi);

  // Random data: the interval holds the true mean (0.5 here) for most seeds of the data.
  int covered = 0;
  for (uint64_t s = 0; s < 40; ++s) {
    std::mt19937_64 rng(s);
    std::normal_distribution<double> n(0.5, 1.0);
    std::vector<double> x(100);
    for (double& v : x) v = n(rng);
    const CompareInterval c = bootstrap_interval(x, s + 100);
    covered += c.lo < 0.5 && 0.5 < c.hi;
  }
  EXPECT_GE(covered, 33);  // 95% nominal; 33 of 40 is far below what chance gives

  EXPECT_EQ(bootstrap_interval({}, 1).lo, 0.0);
  EXPECT_EQ(bootstrap_interval({}, 1).hi, 0.0);
}

TEST(ResultsCompareStats, IdenticalCellsGiveAZeroWidthIntervalAtZeroAndNoRegression) {
  const CompareCell p = ppl_cell(2.5, 0.0, 0.01);
  for (const CompareRule& rule : {kNll, kKl}) {
    const CompareRow r = compare_metric(rule, p, p, 0.0, 1);
    EXPECT_EQ(r.base, r.cand) << rule.metric;
    EXPECT_EQ(r.ci.lo, 0.0) << rule.metric;
    EXPECT_EQ(r.ci.hi, 0.0) << rule.metric;
    EXPECT_FALSE(r.regressed) << rule.metric;
  }
  // With standard errors the interval is centred on 0 and not a regression either.
  const CompareCell q = ppl_cell(2.5, 0.02, 0.01);
  const CompareRow nll = compare_metric(kNll, q, q, 0.0, 1);
  EXPECT_DOUBLE_EQ(nll.ci.lo, -nll.ci.hi);
  EXPECT_FALSE(nll.regressed);

  const CompareCell s = score_cell({1, 0, 1, 1, 0.5, 0});
  const CompareRow r = compare_metric(kScore, s, s, 0.0, 1);
  EXPECT_EQ(r.ci.lo, 0.0);
  EXPECT_EQ(r.ci.hi, 0.0);
  EXPECT_DOUBLE_EQ(r.base, 3.5 / 6);
  EXPECT_EQ(r.base, r.cand);
  EXPECT_FALSE(r.regressed);
}

TEST(ResultsCompareStats, ClearlyWorseCandidatesAreFlagged) {
  // NLL up by 5 combined standard errors (hypot(0.01, 0.01) = 0.0141).
  const CompareRow nll =
      compare_metric(kNll, ppl_cell(2.0, 0.01, 0), ppl_cell(2.0707, 0.01, 0), 0.0, 1);
  EXPECT_TRUE(nll.regressed);
  EXPECT_NEAR(nll.ci.lo, 0.0707 - 1.96 * 0.0141421, 1e-6);
  EXPECT_NEAR(nll.ci.hi, 0.0707 + 1.96 * 0.0141421, 1e-6);
  // KL from the full cache grew.
  EXPECT_TRUE(compare_metric(kKl, ppl_cell(2, 0, 0.0), ppl_cell(2, 0, 0.05), 0.0, 1).regressed);
  // A lower score on every sample.
  std::vector<double> base, cand;
  for (int i = 0; i < 20; ++i) {
    base.push_back(1.0);
    cand.push_back(i % 2 ? 0.5 : 0.0);
  }
  const CompareRow s = compare_metric(kScore, score_cell(base), score_cell(cand), 0.0, 3);
  EXPECT_TRUE(s.regressed);
  EXPECT_EQ(s.base, 1.0);
  EXPECT_EQ(s.cand, 0.25);
  EXPECT_LT(s.ci.hi, 0.0);
}

TEST(ResultsCompareStats, ChangesWithinTheNoiseAreNotFlagged) {
  // NLL up by half a combined standard error.
  EXPECT_FALSE(
      compare_metric(kNll, ppl_cell(2.0, 0.01, 0), ppl_cell(2.007, 0.01, 0), 0.0, 1).regressed);
  // Scores: some samples lost, as many gained.
  std::vector<double> base, cand;
  for (int i = 0; i < 20; ++i) {
    base.push_back(i % 2);
    cand.push_back(i % 4 < 2 ? 1.0 - i % 2 : i % 2);
  }
  const CompareRow s = compare_metric(kScore, score_cell(base), score_cell(cand), 0.0, 3);
  EXPECT_FALSE(s.regressed);
  EXPECT_LT(s.ci.lo, 0.0);
  EXPECT_GT(s.ci.hi, 0.0);
  // Exact metrics: differences of rounding size are not a change.
  EXPECT_FALSE(
      compare_metric(kKl, ppl_cell(2, 0, 0.1), ppl_cell(2, 0, 0.1 + 1e-14), 0.0, 1).regressed);
}

TEST(ResultsCompareStats, ThresholdMovesTheLine) {
  // NLL worse by 0.05 with tiny standard errors: a regression unless the threshold covers it.
  const CompareCell b = ppl_cell(2.0, 1e-4, 0.0), c = ppl_cell(2.05, 1e-4, 0.05);
  EXPECT_TRUE(compare_metric(kNll, b, c, 0.01, 1).regressed);
  EXPECT_FALSE(compare_metric(kNll, b, c, 0.1, 1).regressed);
  EXPECT_TRUE(compare_metric(kKl, b, c, 0.04, 1).regressed);
  EXPECT_FALSE(compare_metric(kKl, b, c, 0.05, 1).regressed);  // grew by exactly the threshold
  // Every score down by 0.2.
  const CompareCell sb = score_cell(std::vector<double>(10, 1.0));
  const CompareCell sc = score_cell(std::vector<double>(10, 0.8));
  EXPECT_TRUE(compare_metric(kScore, sb, sc, 0.1, 1).regressed);
  EXPECT_FALSE(compare_metric(kScore, sb, sc, 0.3, 1).regressed);
}

TEST(ResultsCompareStats, DirectionDecidesWhichSideIsWorse) {
  const CompareInterval up{0.1, 0.2}, down{-0.2, -0.1}, across{-0.1, 0.1};
  const CompareRule lower{"x", Better::kLower, CompareTest::kStandardError};
  const CompareRule higher{"x", Better::kHigher, CompareTest::kStandardError};
  EXPECT_TRUE(is_regression(lower, up, 0.0));
  EXPECT_FALSE(is_regression(lower, down, 0.0));
  EXPECT_FALSE(is_regression(lower, across, 0.0));
  EXPECT_FALSE(is_regression(higher, up, 0.0));
  EXPECT_TRUE(is_regression(higher, down, 0.0));
  EXPECT_FALSE(is_regression(higher, across, 0.0));
  // A lower NLL and a higher score are improvements, however clear.
  EXPECT_FALSE(
      compare_metric(kNll, ppl_cell(2.5, 0.01, 0.1), ppl_cell(2.0, 0.01, 0.0), 0.0, 1).regressed);
  EXPECT_FALSE(compare_metric(kScore, score_cell(std::vector<double>(10, 0.0)),
                              score_cell(std::vector<double>(10, 1.0)), 0.0, 1)
                   .regressed);
  // The same higher score read as lower-is-better is a regression.
  const CompareRule score_lower{"score", Better::kLower, CompareTest::kPairedBootstrap};
  EXPECT_TRUE(compare_metric(score_lower, score_cell(std::vector<double>(10, 0.0)),
                             score_cell(std::vector<double>(10, 1.0)), 0.0, 1)
                  .regressed);
}

TEST(ResultsCompareStats, PairedNllUsesEachRunsDeltaAgainstItsOwnReference) {
  // NLL up by 0.02: inside the raw SEs (1.96·hypot(0.05, 0.05) = 0.139), but the paired SEs
  // (0.002 each) put the interval well above 0.
  const CompareCell base = paired_cell(2.00, 0.05, 1.99, 0.002);
  const CompareCell cand = paired_cell(2.02, 0.05, 1.99, 0.002);
  const CompareRow raw = compare_metric(kNll, base, cand, 0.0, 1);
  EXPECT_FALSE(raw.regressed);
  const CompareRow paired = compare_metric(kPairedNll, base, cand, 0.0, 1);
  EXPECT_TRUE(paired.regressed);
  EXPECT_EQ(paired.base, 2.00);
  EXPECT_EQ(paired.cand, 2.02);
  const double half = 1.96 * std::hypot(0.002, 0.002);
  EXPECT_NEAR(paired.ci.lo, 0.02 - half, 1e-12);
  EXPECT_NEAR(paired.ci.hi, 0.02 + half, 1e-12);
  ASSERT_TRUE(paired_interval("nll", base, cand).has_value());
  // Within the paired noise: not flagged.
  EXPECT_FALSE(
      compare_metric(kPairedNll, base, paired_cell(2.002, 0.05, 1.99, 0.002), 0.0, 1).regressed);
  // Records without the paired figures (older databases): the raw standard errors.
  const CompareRow old = compare_metric(kPairedNll, ppl_cell(2.00, 0.05, 0), cand, 0.0, 1);
  EXPECT_FALSE(paired_interval("nll", ppl_cell(2.00, 0.05, 0), cand).has_value());
  EXPECT_EQ(old.ci.lo, raw.ci.lo);
  EXPECT_EQ(old.ci.hi, raw.ci.hi);
  // Another reference (the full cache's NLL moved between the runs, e.g. a changed forward
  // pass): the paired differences are not comparable, so the raw standard errors decide.
  const CompareCell moved = paired_cell(2.02, 0.05, 2.01, 0.002);
  EXPECT_FALSE(paired_interval("nll", base, moved).has_value());
  const CompareRow fb = compare_metric(kPairedNll, base, moved, 0.0, 1);
  EXPECT_NEAR(fb.ci.lo, raw.ci.lo, 1e-12);
  EXPECT_FALSE(fb.regressed);
  // The full cache against itself: 0 exactly.
  const CompareCell full = paired_cell(1.99, 0.05, 1.99, 0.0, "full");
  const CompareRow ff = compare_metric(kPairedNll, full, full, 0.0, 1);
  EXPECT_EQ(ff.ci.lo, 0.0);
  EXPECT_EQ(ff.ci.hi, 0.0);
  // The perplexity suite's rule is the paired one.
  EXPECT_EQ(find_suite("perplexity")->compare_rules().at(0).test,
            CompareTest::kPairedStandardError);
}

TEST(ResultsCompareStats, CellsThatAreNotApplicableAreLeftOut) {
  CompareCells base, cand;
  base["p"] = paired_cell(2.0, 0.01, 2.0, 0.0, "snapkv(budget=8)");
  cand["p"] = base["p"];
  cand["p"].record["metrics"] = {{"applicable", false}, {"not_applicable", "never read back"}};
  base["q"] = paired_cell(2.0, 0.01, 1.9, 0.001);
  cand["q"] = paired_cell(2.0, 0.01, 1.9, 0.001);
  const Comparison c = compare_cells(base, cand, 0.0);
  EXPECT_EQ(c.not_applicable, 1u);
  EXPECT_EQ(c.unmatched, 0u);
  ASSERT_EQ(c.rows.size(), 2u);  // nll and kl_mean of "q"
  EXPECT_EQ(c.rows[0].method, "kivi(bits=2)");
}

TEST(ResultsCompareStats, CompareCellsAppliesEachSuitesRulesAndCountsUnmatched) {
  CompareCells base, cand;
  base["p"] = ppl_cell(2.0, 0.01, 0.0);
  cand["p"] = ppl_cell(2.2, 0.01, 0.3, "kivi(bits=2)");
  base["n"] = score_cell({1, 1, 1, 1}, "niah");
  cand["n"] = score_cell({1, 1, 1, 1}, "niah");
  base["s"] = score_cell({1, 0, 1, 0}, "scbench");
  cand["s"] = score_cell({1, 0, 1, 0}, "scbench");
  cand["only-in-candidate"] = score_cell({0}, "niah");
  const Comparison c = compare_cells(base, cand, 0.0);
  EXPECT_EQ(c.unmatched, 1u);
  ASSERT_EQ(c.rows.size(), 4u);
  // By key: "n", "p" (nll, then kl_mean), "s".
  EXPECT_EQ(c.rows[0].suite, "niah");
  EXPECT_EQ(c.rows[0].metric, "score");
  EXPECT_FALSE(c.rows[0].regressed);
  EXPECT_EQ(c.rows[1].suite, "perplexity");
  EXPECT_EQ(c.rows[1].metric, "nll");
  EXPECT_EQ(c.rows[1].model, "m");
  EXPECT_EQ(c.rows[1].dataset, "prose");
  EXPECT_EQ(c.rows[1].method, "full → kivi(bits=2)");
  EXPECT_TRUE(c.rows[1].regressed);
  EXPECT_EQ(c.rows[2].metric, "kl_mean");
  EXPECT_TRUE(c.rows[2].regressed);
  EXPECT_EQ(c.rows[3].suite, "scbench");
  EXPECT_EQ(c.rows[3].metric, "score");
  EXPECT_EQ(c.rows[3].method, "full");
  // The bootstrap's seed is the key's: the same comparison twice gives the same rows.
  const Comparison again = compare_cells(base, cand, 0.0);
  for (size_t i = 0; i < c.rows.size(); ++i) {
    EXPECT_EQ(again.rows[i].ci.lo, c.rows[i].ci.lo);
    EXPECT_EQ(again.rows[i].ci.hi, c.rows[i].ci.hi);
  }
}

}  // namespace
}  // namespace kvb
