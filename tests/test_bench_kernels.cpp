// `kvbench bench-kernels`: runs kvbench_bench for a suite's shapes and files every timing in the
// results database with its device, shape and the run's commit; the leaderboard page lists them.
// A bad suite is refused in one line naming the file (exit 2) and a failing benchmark binary
// records nothing; what the database held before is unchanged either way.
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>
#include <string>

#include "common/json_io.h"
#include "tests/results_test_util.h"

namespace kvb {
namespace {

using test::q;
using test::scalar;
using test::scalar_text;

class BenchKernels : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef KVB_BENCH_BINARY
    GTEST_SKIP() << "kvbench_bench is not built (KVB_BUILD_BENCH=OFF)";
#endif
  }
  std::string db() const { return dir_.path() + "/k.db"; }
  std::string file(const std::string& name, const std::string& text) const {
    const std::string p = dir_.path() + "/" + name;
    write_file(p, text);
    return p;
  }
  test::CmdResult bench(const std::string& suite, const std::string& extra = "") const {
    return test::run_kvbench("bench-kernels --db " + q(db()) + " --suite " + q(suite) + extra);
  }
  test::TempDir dir_;
};

// Two tiny shapes x 2 bit widths, fused kernel and the fp32 baseline: a second or two.
constexpr const char* kTinySuite = R"({
  "name": "kernels-test", "filter": "^BM_KiviAttnFused/|^BM_AttnFp32/", "min_time": 0.01,
  "threads": 1,
  "shapes": [{"heads": 4, "kv_heads": 2, "head_dim": 32, "context": [256, 300], "bits": [2, 4]}]
})";

TEST_F(BenchKernels, FilesEveryTimingWithDeviceShapeAndCommit) {
  const std::string suite = file("suite.json", kTinySuite);
  auto r = bench(suite);
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("6 kernel timings in run 1"), std::string::npos) << r.out;

  EXPECT_EQ(scalar(db(), "SELECT count(*) FROM runs"), 1);
  EXPECT_EQ(scalar_text(db(), "SELECT suite_name FROM runs"), "kernels-test");
  EXPECT_TRUE(std::regex_match(scalar_text(db(), "SELECT git_commit FROM runs"),
                               std::regex("[0-9a-f]{40}|unknown")))
      << scalar_text(db(), "SELECT git_commit FROM runs");
  // The suite as given is the run's config.
  EXPECT_EQ(scalar_text(db(), "SELECT json_extract(config, '$.suite.name') FROM runs"),
            "kernels-test");
  EXPECT_EQ(scalar(db(), "SELECT count(*) FROM kernel_timings"), 6);
  EXPECT_EQ(scalar(db(), "SELECT count(*) FROM kernel_timings WHERE device = 'cpu'"), 6);
  for (const char* ctx : {"256", "300"}) {
    for (const char* bits : {"2", "4"}) {
      const std::string shape = std::string("hq:4/hkv:2/d:32/ctx:") + ctx + "/bits:" + bits;
      SCOPED_TRACE(shape);
      EXPECT_EQ(scalar(db(), "SELECT count(*) FROM kernel_timings WHERE name = "
                             "'BM_KiviAttnFused/" + shape + "' AND shape = '" + shape +
                             "' AND median_ms > 0 AND gbps > 0 AND bytes_moved > 0 AND "
                             "roofline_fraction > 0 AND roofline_fraction < 10"),
                1);
    }
    EXPECT_EQ(scalar(db(), std::string("SELECT count(*) FROM kernel_timings WHERE shape = "
                                       "'hq:4/hkv:2/d:32/ctx:") + ctx + "' AND name LIKE "
                                       "'BM_AttnFp32/%' AND gbps > 0"),
              1);
  }
  // The packed bytes a call reads grow with the context and shrink with the bits.
  EXPECT_LT(scalar(db(), "SELECT bytes_moved FROM kernel_timings WHERE shape = "
                         "'hq:4/hkv:2/d:32/ctx:300/bits:2'"),
            scalar(db(), "SELECT bytes_moved FROM kernel_timings WHERE shape = "
                         "'hq:4/hkv:2/d:32/ctx:300/bits:4'"));

  // The leaderboard page shows them.
  const std::string out = dir_.path() + "/board";
  r = test::run_kvbench("leaderboard --db " + q(db()) + " --out " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string html = test::slurp(out + "/index.html");
  EXPECT_NE(html.find("BM_KiviAttnFused/hq:4/hkv:2/d:32/ctx:300/bits:2"), std::string::npos);
  EXPECT_NE(html.find("BM_AttnFp32/hq:4/hkv:2/d:32/ctx:256"), std::string::npos);
  // with the commit they were measured at
  const std::string commit = scalar_text(db(), "SELECT substr(git_commit, 1, 12) FROM runs");
  EXPECT_NE(html.find("<td>" + commit), std::string::npos) << commit;
  EXPECT_NE(test::slurp(out + "/leaderboard.md").find("| " + commit), std::string::npos);

  // A second run is a run of its own (timings are added, not replaced).
  r = bench(suite);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(scalar(db(), "SELECT count(*) FROM runs"), 2);
  EXPECT_EQ(scalar(db(), "SELECT count(*) FROM kernel_timings"), 12);
}

TEST_F(BenchKernels, BadSuitesAreRefusedInOneLineAndRecordNothing) {
  // A database with something in it already.
  ASSERT_EQ(bench(file("ok.json", R"({"filter": "^BM_AttnFp32/", "min_time": 0.01,
      "shapes": [{"heads": 2, "kv_heads": 1, "head_dim": 32, "context": 64, "bits": 2}]})"))
                .code,
            0);
  const std::string before = test::slurp(db());
  const std::pair<const char*, const char*> cases[] = {
      {R"({"shapes": [{"heads": 9, "kv_heads": 2, "head_dim": 64, "context": 64, "bits": 2}]})",
       "must divide heads"},
      {R"({"shapes": [{"heads": 4, "kv_heads": 2, "head_dim": 48, "context": 64, "bits": 2}]})",
       "head dim 48"},
      {R"({"shapes": [{"heads": 4, "kv_heads": 2, "head_dim": 64, "context": 64, "bits": 3}]})",
       "bits 3"},
      {R"({"shapes": [{"heads": 4, "kv_heads": 2, "head_dim": 64, "context": 0, "bits": 2}]})",
       "context"},
      {R"({"shapes": [{"heads": 4, "kv_heads": 2, "head_dim": 64, "context": [], "bits": 2}]})",
       "empty list"},
      {R"({"shapes": []})", "empty list"},
      {R"({"repetitions": 0})", "repetitions"},
      {R"({"shape": []})", "unknown field \"shape\""},
      {R"({"filter": 7})", "filter"},
      {R"({"shapes": [)", ""},
  };
  int i = 0;
  for (const auto& [text, problem] : cases) {
    const std::string suite = file("bad" + std::to_string(i++) + ".json", text);
    test::expect_refused("bench-kernels --db " + q(db()) + " --suite " + q(suite), suite, problem);
    EXPECT_EQ(test::slurp(db()), before);
  }
  // A suite that is not there, and a benchmark binary that is not there: one line, exit 2.
  test::CmdResult r = bench(dir_.path() + "/none.json");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  r = bench(file("ok2.json", "{}"), " --bench " + q(dir_.path() + "/no_such_bench"));
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("no_such_bench: no benchmark binary"), std::string::npos) << r.err;
  // The checked-in nightly suite is one bench-kernels takes (it gets as far as running the
  // benchmark binary, here one that fails at once).
  r = bench(test::source_path("suites/kernels/nightly.json"), " --bench /bin/false");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("/bin/false exited with status 1"), std::string::npos) << r.err;
  // A benchmark binary that fails: nothing recorded.
  r = bench(file("ok3.json", "{}"), " --bench /bin/false");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("nothing was recorded"), std::string::npos) << r.err;
  EXPECT_EQ(test::slurp(db()), before);
}

}  // namespace
}  // namespace kvb
