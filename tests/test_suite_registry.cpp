// The suite registry (suites/registry.h): one entry per suite the schema allows, in the schema's
// order; each suite's summary line, params and prepared cells as the runner uses them.
#include <gtest/gtest.h>

#include <set>

#include "common/check.h"
#include "common/json_io.h"
#include "datasets/loader.h"
#include "datasets/prose.h"
#include "harness/model/model.h"
#include "harness/tokenizer/tokenizer.h"
#include "methods/registry.h"
#include "suites/config.h"
#include "suites/perplexity.h"
#include "suites/registry.h"
#include "suites/runner.h"
#include "tests/suite_test_util.h"

namespace kvb {
namespace {

using json = nlohmann::json;

const Suite& suite(const std::string& name) {
  const Suite* s = find_suite(name);
  if (!s) throw Error("no suite " + name);
  return *s;
}

TEST(SuiteRegistry, ListsTheSchemasSuitesOnceEachInItsOrder) {
  const json schema = read_json_file(suite_schema_path());
  const auto names = schema["$defs"]["run"]["properties"]["suite"]["enum"];
  std::vector<std::string> listed;
  for (const Suite* s : suite_registry()) listed.push_back(s->name());
  EXPECT_EQ(names.get<std::vector<std::string>>(), listed);
  EXPECT_EQ(suite_names(), "perplexity, niah, scbench");
  EXPECT_EQ(find_suite("ruler"), nullptr);
  for (const Suite* s : suite_registry()) {
    EXPECT_EQ(find_suite(s->name()), s);
    EXPECT_FALSE(s->help().empty()) << s->name();
    EXPECT_FALSE(s->compare_rules().empty()) << s->name();
    EXPECT_FALSE(s->board().columns.empty()) << s->name();
  }
}

TEST(SuiteRegistry, SummaryLinesAreTheProgressLinesOfEachSuite) {
  EXPECT_EQ(suite("perplexity")
                .summary({{"ppl", 12.3456},
                          {"ppl_se", 0.123},
                          {"kl_mean", 0.00123},
                          {"kl_p99", 0.0456},
                          {"top1_agreement", 0.9876}}),
            "KL 0.00123 (p99 0.0456)  top1 98.8%  ppl 12.35 ± 0.12");  // a record before ΔNLL
  EXPECT_EQ(suite("perplexity")
                .summary({{"ppl", 12.3456},
                          {"ppl_se", 0.123},
                          {"kl_mean", 0.00123},
                          {"kl_p99", 0.0456},
                          {"delta_nll", 0.00234},
                          {"delta_nll_se", 0.00051},
                          {"top1_agreement", 0.9876}}),
            "KL 0.00123 (p99 0.0456)  ΔNLL +0.00234 ± 0.00051  top1 98.8%  ppl 12.35 ± 0.12");
  EXPECT_EQ(
      suite("perplexity")
          .summary({{"ppl", 12.3456}, {"ppl_se", 0.123}, {"kl_mean", 0.0}, {"reference", true}}),
      "ppl 12.35 ± 0.12  (the reference: KL 0 by construction)");
  // Any suite's cell that is not applicable.
  EXPECT_EQ(cell_summary(suite("perplexity"),
                         {{"applicable", false}, {"not_applicable", "never read back"}}),
            "n/a (never read back)");
  EXPECT_EQ(cell_summary(suite("niah"), {{"score", 0.25}}), "score 0.250");
  EXPECT_EQ(suite("niah").summary({{"score", 0.25}}), "score 0.250");
  EXPECT_EQ(suite("scbench").summary({{"score", 0.5}, {"turn_scores", {1.0, 0.0}}}),
            "score 0.500  turns [1.00 0.00]");
}

TEST(SuiteRegistry, SummaryTableTellsRunsOfOneSuiteAndDatasetApartByTheirParams) {
  auto rec = [](const std::string& dataset, const json& params, double score) {
    return json{{"suite", "niah"},       {"model", "models/m"}, {"dataset", dataset},
                {"method", "full"},      {"params", params},   {"metrics", {{"score", score}}}};
  };
  const json a{{"depths", 3}, {"max_new_tokens", 10}}, b{{"depths", 5}, {"max_new_tokens", 10}};
  const std::string t =
      summary_table({rec("prose", a, 0.5), rec("prose", b, 0.25), rec("essays", a, 1.0)});
  EXPECT_NE(t.find("prose (depths=3)"), std::string::npos) << t;
  EXPECT_NE(t.find("prose (depths=5)"), std::string::npos) << t;
  // One run on a dataset: nothing to tell apart, the dataset's name alone.
  EXPECT_EQ(t.find("essays ("), std::string::npos) << t;
  EXPECT_NE(t.find("essays"), std::string::npos) << t;
  EXPECT_EQ(t.find("max_new_tokens"), std::string::npos) << t;  // the same in every run
}

TEST(SuiteRegistry, CanonicalParamsFillDefaultsAndNameTheJsonPath) {
  EXPECT_EQ(suite("perplexity").canonical_params({{"ctx", 32}}, "$.runs[0].params"),
            json({{"ctx", 32}, {"stride", 0}, {"chunk", 1}, {"max_windows", 0}}));
  try {
    suite("perplexity").canonical_params({{"ctx", 32}, {"stride", 33}}, "$.runs[0].params");
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "$.runs[0].params.stride: must not exceed ctx (32)");
  }
  EXPECT_EQ(suite("scbench").canonical_params(json::object(), "$.runs[2].params")["mode"],
            "multi_turn");
  EXPECT_THROW(suite("niah").canonical_params({{"context_lengths", {64}}, {"needle", "no number"}},
                                              "$.runs[1].params"),
               InputError);
}

TEST(SuiteRegistry, PreparedPerplexityRunRecordsItsProtocol) {
  const Model model = Model::random(test::tiny_suite_config(258), 3);
  const auto tok = make_byte_tokenizer(258);
  Dataset d;
  d.type = "prose";
  d.is_text = true;
  d.text = generate_prose(400, 5);
  const Suite& s = suite("perplexity");
  const json params = s.canonical_params({{"ctx", 64}, {"chunk", 16}, {"max_windows", 2}}, "$");
  const auto prep = s.prepare({model, *tok, d, params, "$", 1});
  const CellResult full = prep->run_cell(*make_method("full"), {});
  EXPECT_EQ(full.metrics["kl_mean"], 0.0);
  EXPECT_EQ(full.protocol["reference"], "full(dtype=fp32)");
  EXPECT_EQ(full.protocol["mode"], "decode");
  EXPECT_EQ(full.protocol["ctx"], 64);
  EXPECT_EQ(full.protocol["tokens"], full.metrics["tokens"]);
  // The prepared text serves every method; the numbers are run_perplexity()'s.
  const CellResult s2 = prep->run_cell(*make_method("streaming(sink=2,window=16)"), {});
  const PerplexityParams p = parse_perplexity_params(params);
  const PerplexityResult direct =
      run_perplexity(model, *make_method("streaming(sink=2,window=16)"), *make_method("full"),
                     tokenize_for_perplexity(*tok, d.text, p), p);
  EXPECT_EQ(s2.metrics["nll"], direct.nll);
  EXPECT_EQ(s2.metrics["kl_mean"], direct.kl_mean);
  EXPECT_GT(direct.kl_mean, 0.0);
}

}  // namespace
}  // namespace kvb
