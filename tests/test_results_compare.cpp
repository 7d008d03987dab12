// `kvbench compare`: two runs of one suite and seed agree exactly and report no regression; a
// candidate with a worse method is flagged with exit 1; a missing run fails with exit 2.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/json_io.h"
#include "tests/suite_test_util.h"

namespace kvb {
namespace {

using json = nlohmann::json;

class ResultsCompare : public ::testing::Test {
 protected:
  void SetUp() override {
    write_config("base.json", "full");
    write_config("worse.json", "streaming(sink=2,window=24)");
  }
  void write_config(const std::string& name, const std::string& method) {
    const json config = test::small_suite_config(
        dir_, {.seed = 3, .methods = {method}, .niah_depths = {0.0, 0.5, 1.0}});
    write_file(dir_.path(name), config.dump(2));
  }
  test::CmdResult run(const std::string& config, const std::string& name) {
    return test::run_kvbench("run --progress lines --suite " + test::q(dir_.path(config)) +
                             " --db " + test::q(db()) + " --run-name " + name);
  }
  test::CmdResult compare(const std::string& args) {
    return test::run_kvbench("compare --db " + test::q(db()) + " " + args);
  }
  std::string db() const { return dir_.path("r.db"); }
  test::TempDir dir_;
};

// In a bf16 run `full` and a selector's store hold bf16, and their specs say so
// ("streaming(sink=2,window=24)+full(dtype=bf16)"); report and compare still take the spec as a
// user writes it.
TEST_F(ResultsCompare, Bf16CellsAreFoundByTheSpecAsWritten) {
  json config = test::small_suite_config(
      dir_, {.seed = 3, .methods = {"full", "streaming(sink=2,window=24)"},
             .niah_depths = {0.0, 1.0}});
  config["dtype"] = "bf16";
  write_file(dir_.path("bf16.json"), config.dump(2));
  ASSERT_EQ(run("bf16.json", "a").code, 0);
  const std::string page = dir_.path("p.html");
  auto r = test::run_kvbench("report --db " + test::q(db()) +
                             " --methods 'streaming(window=24,sink=2)' --out " + test::q(page));
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string html = test::slurp(page);
  EXPECT_NE(html.find("streaming(sink=2,window=24)+full(dtype=bf16)"), std::string::npos);
  // Only the chosen method: `full(dtype=bf16)` appears only as the streaming cells' store.
  auto count = [&](const std::string& what) {
    size_t n = 0;
    for (size_t at = html.find(what); at != std::string::npos; at = html.find(what, at + 1)) ++n;
    return n;
  };
  EXPECT_GT(count("+full(dtype=bf16)"), 0u);
  EXPECT_EQ(count("full(dtype=bf16)"), count("+full(dtype=bf16)"));
  r = compare("--baseline a --candidate a --baseline-method full --candidate-method "
              "'streaming(sink=2,window=24)'");
  EXPECT_NE(r.code, 2) << r.out << r.err;
  EXPECT_NE(r.out.find("full(dtype=bf16) → streaming(sink=2,window=24)+full(dtype=bf16)"),
            std::string::npos)
      << r.out;
}

TEST_F(ResultsCompare, SameSuiteAndSeedTwiceIsNoRegression) {
  ASSERT_EQ(run("base.json", "a").code, 0);
  ASSERT_EQ(run("base.json", "b").code, 0);
  auto r = compare("--baseline a --candidate 2 --json " + test::q(dir_.path("c.json")));
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("| suite | model |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("3 comparisons, 0 regressed"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("REGRESSED"), std::string::npos) << r.out;
  const json c = json::parse(test::slurp(dir_.path("c.json")));
  ASSERT_EQ(c["rows"].size(), 3u);
  for (const auto& row : c["rows"]) {
    EXPECT_EQ(row["baseline"], row["candidate"]) << row.dump();  // identical metrics
    EXPECT_FALSE(row["regressed"].get<bool>());
  }
}

TEST_F(ResultsCompare, WorseMethodIsFlaggedWithExit1) {
  ASSERT_EQ(run("base.json", "a").code, 0);
  ASSERT_EQ(run("worse.json", "w").code, 0);
  // Different specs never match by themselves ...
  auto none = compare("--baseline a --candidate w");
  EXPECT_EQ(none.code, 2) << none.out << none.err;
  EXPECT_NE(none.err.find("no cells in common"), std::string::npos) << none.err;
  // ... but are paired when named.
  auto r = compare(
      "--baseline a --candidate w --baseline-method full --candidate-method "
      "'streaming(window=24,sink=2)'");
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("REGRESSED"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("kl_mean"), std::string::npos) << r.out;
}

TEST_F(ResultsCompare, MissingRunOrFileFailsWithExit2AndChangesNothing) {
  ASSERT_EQ(run("base.json", "a").code, 0);
  const std::string before = test::slurp(db());
  auto r = compare("--baseline a --candidate 42");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(db() + ": no run '42'"), std::string::npos) << r.err;
  EXPECT_EQ(test::slurp(db()), before);
  auto m = test::run_kvbench("compare --db " + test::q(dir_.path("none.db")) +
                             " --baseline 1 --candidate 1");
  EXPECT_EQ(m.code, 2) << m.err;
  EXPECT_NE(m.err.find("none.db: no such file"), std::string::npos) << m.err;
  EXPECT_FALSE(std::filesystem::exists(dir_.path("none.db")));
}

}  // namespace
}  // namespace kvb
