// `kvbench run` through the binary: cells written as they finish, an interrupted run resumes and
// skips finished cells, broken configs and datasets fail with exit 2 and lose nothing.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/json_io.h"
#include "tests/suite_test_util.h"

namespace kvb {
namespace {

using json = nlohmann::json;

std::vector<json> records(const std::string& path) {
  std::vector<json> r;
  std::istringstream in(test::slurp(path));
  std::string line;
  while (std::getline(in, line)) r.push_back(json::parse(line));
  return r;
}

class SuiteRun : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = test::small_suite_config(
        dir_, {.methods = {"full", "streaming(sink=2,window=24)"}, .scbench_mode = "multi_request"});
    write_config();
  }
  void write_config() { write_file(cfg(), config_.dump(2)); }
  std::string cfg() const { return dir_.path("suite.json"); }
  std::string out() const { return dir_.path("res/out.jsonl"); }
  test::CmdResult run(const std::string& extra = "") {
    return test::run_kvbench("run --suite " + test::q(cfg()) + " --out " + test::q(out()) + " " +
                             extra);
  }
  test::TempDir dir_;
  json config_;
};

TEST_F(SuiteRun, WritesEveryCellAndPrintsASummary) {
  auto r = run();
  ASSERT_EQ(r.code, 0) << r.err;
  auto recs = records(out());
  ASSERT_EQ(recs.size(), 6u);
  for (const auto& x : recs) {
    EXPECT_TRUE(x.contains("key") && x.contains("metrics") && x.contains("params")) << x.dump();
    if (x["suite"] == "perplexity") {
      EXPECT_EQ(x["protocol"]["normalisation"], "token");
      EXPECT_EQ(x["protocol"]["ctx"], 64);
      EXPECT_EQ(x["protocol"]["chunk"], 16);
      EXPECT_EQ(x["protocol"]["tokens"], 63 + 63);
      if (x["method"] == "full") {
        EXPECT_EQ(x["metrics"]["kl_mean"], 0.0);
      }
    }
    if (x["suite"] == "niah") {
      EXPECT_EQ(x["metrics"]["heatmap"]["scores"][0].size(), 2u);
    }
    if (x["suite"] == "scbench") {
      EXPECT_EQ(x["metrics"]["turn_scores"].size(), 2u);
    }
  }
  // Not a terminal: plain progress lines, one per cell; the table on stdout.
  EXPECT_NE(r.err.find("[1/6] perplexity"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[6/6] scbench"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("\r"), std::string::npos);
  EXPECT_NE(r.out.find("suite"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("streaming(sink=2,window=24)"), std::string::npos) << r.out;
}

TEST_F(SuiteRun, RecordsTheMethodParametersReallyUsedOnTheModel) {
  // The test model's heads are 8 wide: int's group of 64 is capped at 8, and the record says so
  // next to the canonical spec (which is the cell's identity and stays as written).
  config_ = test::small_suite_config(dir_, {.methods = {"int(bits=4,group=64)"}});
  write_config();
  auto r = run();
  ASSERT_EQ(r.code, 0) << r.err;
  const auto recs = records(out());
  ASSERT_FALSE(recs.empty());
  for (const auto& x : recs) {
    EXPECT_EQ(x["method"], "int(bits=4,group=64)") << x.dump();
    EXPECT_EQ(x["method_effective"], "int(bits=4,group=8)") << x.dump();
  }
}

TEST_F(SuiteRun, InterruptedRunResumesAndSkipsFinishedCells) {
  auto r = run("--max-cells 2");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string first = test::slurp(out());
  ASSERT_EQ(test::count_lines(first), 2);
  // A run killed mid-write leaves half a line: the next run drops it and computes that cell.
  write_file(out(), first + first.substr(0, 40));
  r = run("--max-cells 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("skip (finished earlier)"), std::string::npos) << r.err;
  std::string now = test::slurp(out());
  ASSERT_EQ(test::count_lines(now), 3);
  EXPECT_EQ(now.substr(0, first.size()), first);
  r = run();
  ASSERT_EQ(r.code, 0) << r.err;
  now = test::slurp(out());
  EXPECT_EQ(test::count_lines(now), 6);
  EXPECT_EQ(now.substr(0, first.size()), first);
  EXPECT_NE(r.out.find("3 cells computed, 3 finished earlier"), std::string::npos) << r.out;
  // Nothing left: a further run computes nothing and leaves the file as it is.
  r = run();
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(test::slurp(out()), now);
  EXPECT_NE(r.out.find("0 cells computed, 6 finished earlier"), std::string::npos) << r.out;
  std::set<std::string> keys;
  for (const auto& x : records(out())) keys.insert(x["key"].get<std::string>());
  EXPECT_EQ(keys.size(), 6u);
  // Changing a suite parameter makes new cells (the key hashes the parameters).
  config_["runs"][0]["params"]["chunk"] = 8;
  write_config();
  r = run();
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("2 cells computed, 4 finished earlier"), std::string::npos) << r.out;
}

void expect_exit2(const test::CmdResult& r, const std::string& must_contain) {
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(must_contain), std::string::npos)
      << "'" << must_contain << "' not in: " << r.err;
  EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
}

TEST_F(SuiteRun, BrokenConfigOrDatasetFailsWithExit2AndLosesNothing) {
  auto r = run("--max-cells 3");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string before = test::slurp(out());
  ASSERT_EQ(test::count_lines(before), 3);

  json good = config_;
  config_["methods"][1] = 5;
  write_config();
  expect_exit2(run(), cfg() + ": $.methods[1]: expected a string");
  EXPECT_EQ(test::slurp(out()), before);

  config_ = good;
  config_["runs"][1]["params"]["context_lengths"] = {160, "x"};
  write_config();
  expect_exit2(run(), cfg() + ": $.runs[1].params.context_lengths[1]: expected an integer");
  EXPECT_EQ(test::slurp(out()), before);

  config_ = good;
  config_["methods"][1] = "streaming(windw=3)";
  write_config();
  expect_exit2(run(), cfg() + ": $.methods[1]: spec 'streaming(windw=3)'");
  EXPECT_EQ(test::slurp(out()), before);

  write_file(cfg(), test::slurp(cfg()).substr(0, 50));
  expect_exit2(run(), cfg() + ": invalid JSON");
  EXPECT_EQ(test::slurp(out()), before);

  // A broken dataset: the JSONL's second line lacks its context.
  config_ = good;
  write_config();
  write_file(dir_.path("kv.jsonl"), test::slurp(dir_.path("kv.jsonl")) +
                                        R"({"id": "b", "multi_turns": []})"
                                        "\n");
  expect_exit2(run(), dir_.path("kv.jsonl") + ":2: $.context: missing");
  EXPECT_EQ(test::slurp(out()), before);
  write_file(dir_.path("kv.jsonl"),
             "{\"id\": \"a\", \"context\": \"c\", \"multi_turns\": [{\"input\": \"i\"}]}\n");
  expect_exit2(run(), dir_.path("kv.jsonl") + ":1: $.multi_turns[0].answer: missing");
  EXPECT_EQ(test::slurp(out()), before);

  // A results file that is not ours is not overwritten either.
  write_file(dir_.path("kv.jsonl"),
             R"({"id": "a", "context": "c", "multi_turns": [{"input": "i", "answer": 1}]})"
             "\n");
  write_file(out(), before + "not json\n");
  expect_exit2(run(), out() + ":4: not a result record");
  EXPECT_EQ(test::slurp(out()), before + "not json\n");
}

}  // namespace
}  // namespace kvb
