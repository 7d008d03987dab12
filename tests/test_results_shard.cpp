// `kvbench plan`, `run --shard`, `merge`, `export` and `report`: shards 1/3..3/3 merged hold
// exactly the rows of the unsharded run; merging is idempotent and refuses conflicting duplicates.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/json_io.h"
#include "results/sqlite_store.h"
#include "tests/results_test_util.h"
#include "tests/suite_test_util.h"

namespace kvb {
namespace {

using json = nlohmann::json;

// Every table's rows by natural keys (no row ids), timestamps and timings left out (of the
// kernel timings, what was timed).
std::vector<std::string> content(const std::string& path) {
  const std::string strip = std::string("json_remove(c.record, ") + kVolatileRecordPaths + ")";
  const std::string cj = " JOIN cells c ON c.id = x.cell_id ";
  const std::vector<std::string> queries = {
      "SELECT name, config_hash, suite_name, git_commit, git_dirty, build_type, compiler, "
      "torch_version, cuda_version, device, threads, host, seed, config FROM runs ORDER BY 1, 2",
      "SELECT path, weights_hash, config FROM models ORDER BY 1, 2",
      "SELECT spec FROM methods ORDER BY 1",
      "SELECT name, content_hash, spec FROM datasets ORDER BY 1, 2",
      std::string("SELECT r.name, c.key, c.suite, m.path, m.weights_hash, me.spec, d.name, "
                  "d.content_hash, c.params, ") +
          strip +
          " FROM cells c JOIN runs r ON r.id = c.run_id JOIN models m ON m.id = c.model_id "
          "JOIN methods me ON me.id = c.method_id JOIN datasets d ON d.id = c.dataset_id "
          "ORDER BY 1, 2",
      "SELECT c.key, x.idx, x.turn, x.input_hash, x.prediction, x.score, x.tokens FROM samples x" +
          cj + "ORDER BY 1, 2, 3",
      "SELECT c.key, x.name, x.value, x.se FROM metrics x" + cj +
          "WHERE x.name NOT IN ('seconds', 'tokens_per_second') ORDER BY 1, 2",
      "SELECT c.key, x.payload_bytes, x.metadata_bytes, x.tokens, x.bits_per_token, "
      "x.promised_bytes FROM memory x" +
          cj + "ORDER BY 1",
      "SELECT r.name, k.cell_key, k.name, k.shape, k.device, k.reps FROM kernel_timings k "
      "JOIN runs r ON r.id = k.run_id ORDER BY 1, 2, 3, 4, 5"};
  std::vector<std::string> rows;
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  for (size_t q = 0; q < queries.size(); ++q) {
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, queries[q].c_str(), -1, &s, nullptr), SQLITE_OK)
        << queries[q] << ": " << sqlite3_errmsg(db);
    while (sqlite3_step(s) == SQLITE_ROW) {
      std::string row = std::to_string(q) + ":";
      for (int i = 0; i < sqlite3_column_count(s); ++i) {
        const auto* p = sqlite3_column_text(s, i);
        row += std::string(p ? reinterpret_cast<const char*>(p) : "NULL") + "|";
      }
      rows.push_back(row);
    }
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return rows;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

class ResultsShard : public ::testing::Test {
 protected:
  void SetUp() override {
    const json config = test::small_suite_config(
        dir_, {.seed = 7,
               .methods = {"full", "streaming(sink=2,window=24)", "streaming(sink=4,window=32)"}});
    write_file(cfg(), config.dump(2));
  }
  std::string cfg() const { return dir_.path("suite.json"); }
  test::CmdResult run(const std::string& db, const std::string& extra = "") {
    return test::run_kvbench("run --progress lines --suite " + test::q(cfg()) + " --db " +
                             test::q(db) + " " + extra);
  }
  test::TempDir dir_;
};

TEST_F(ResultsShard, PlanShardsPartitionTheCellList) {
  auto all = test::run_kvbench("plan --suite " + test::q(cfg()));
  ASSERT_EQ(all.code, 0) << all.err;
  const auto keys = lines(all.out);
  ASSERT_EQ(keys.size(), 6u);
  std::vector<std::string> joined;
  for (int i = 1; i <= 3; ++i) {
    auto s = test::run_kvbench("plan --suite " + test::q(cfg()) + " --shard " + std::to_string(i) +
                               "/3");
    ASSERT_EQ(s.code, 0) << s.err;
    const auto part = lines(s.out);
    EXPECT_EQ(part.size(), 2u);
    joined.insert(joined.end(), part.begin(), part.end());
  }
  std::vector<std::string> a = keys, b = joined;
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  EXPECT_EQ(a, b);
  for (const char* bad : {"0/3", "4/3", "1/0", "x", "1/2/3"}) {
    auto r = test::run_kvbench("plan --suite " + test::q(cfg()) + " --shard " + bad);
    EXPECT_EQ(r.code, 2) << bad;
    EXPECT_NE(r.err.find("--shard"), std::string::npos) << r.err;
  }
}

TEST_F(ResultsShard, MergedShardsEqualTheUnshardedRunAndMergeIsIdempotent) {
  const std::string whole = dir_.path("whole.db"), merged = dir_.path("merged.db");
  ASSERT_EQ(run(whole).code, 0);
  std::string shards;
  for (int i = 1; i <= 3; ++i) {
    const std::string db = dir_.path("s" + std::to_string(i) + ".db");
    auto r = run(db, "--shard " + std::to_string(i) + "/3");
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("2 cells computed"), std::string::npos) << r.out;
    shards += " " + test::q(db);
  }
  auto m = test::run_kvbench("merge " + test::q(merged) + shards);
  ASSERT_EQ(m.code, 0) << m.err;
  EXPECT_NE(m.out.find("6 cells added"), std::string::npos) << m.out;
  const auto expect = content(whole);
  EXPECT_GT(expect.size(), 20u);
  EXPECT_EQ(content(merged), expect);

  auto again = test::run_kvbench("merge " + test::q(merged) + shards);
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.out.find("0 cells added"), std::string::npos) << again.out;
  EXPECT_EQ(content(merged), expect);

  // A shard whose cell says something else is refused, and the target is left as it was.
  const std::string bad = dir_.path("bad.db");
  write_file(bad, test::slurp(dir_.path("s2.db")));
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(bad.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "UPDATE cells SET record = json_set(record, '$.metrics.extra', 1) "
                           "WHERE id = (SELECT min(id) FROM cells)",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  const std::string before = test::slurp(merged);
  auto refused = test::run_kvbench("merge " + test::q(merged) + " " + test::q(bad));
  EXPECT_EQ(refused.code, 2) << refused.err;
  EXPECT_EQ(test::count_lines(refused.err), 1) << refused.err;
  EXPECT_NE(refused.err.find("bad.db: cell '"), std::string::npos) << refused.err;
  EXPECT_EQ(test::slurp(merged), before);
}

TEST_F(ResultsShard, ExportWritesCsvAndJsonl) {
  const std::string db = dir_.path("r.db");
  ASSERT_EQ(run(db).code, 0);
  auto j = test::run_kvbench("export --db " + test::q(db) + " --format jsonl");
  ASSERT_EQ(j.code, 0) << j.err;
  const auto recs = lines(j.out);
  ASSERT_EQ(recs.size(), 6u);
  for (const auto& l : recs) {
    const json r = json::parse(l);
    EXPECT_EQ(r["run_id"], 1);
    EXPECT_TRUE(r.contains("metrics") && r.contains("key")) << l;
  }
  auto c = test::run_kvbench("export --db " + test::q(db) + " --format csv --run 1");
  ASSERT_EQ(c.code, 0) << c.err;
  const auto rows = lines(c.out);
  ASSERT_GT(rows.size(), 6u);
  EXPECT_EQ(rows[0], "run_id,run_name,suite,model,method,dataset,metric,value,se");
  EXPECT_NE(c.out.find(",\"streaming(sink=2,window=24)\",prose,ppl,"), std::string::npos) << c.out;
  // --table memory: a row per cell, with the numbers the memory table holds.
  auto m = test::run_kvbench("export --db " + test::q(db) + " --format csv --table memory");
  ASSERT_EQ(m.code, 0) << m.err;
  const auto mem = lines(m.out);
  ASSERT_EQ(mem.size(), 7u) << m.out;
  EXPECT_EQ(mem[0], "run_id,run_name,suite,model,method,dataset,payload_bytes,metadata_bytes,"
                    "tokens,bits_per_token,promised_bytes,read_bytes_per_step");
  EXPECT_NE(m.out.find(",\"streaming(sink=2,window=24)\",prose,"), std::string::npos) << m.out;
  int64_t payload = 0, metadata = 0, tokens = 0;
  for (size_t i = 1; i < mem.size(); ++i) {
    // The last six fields are numbers (read_bytes_per_step empty outside perplexity); the method
    // spec before them may hold quoted commas.
    std::string row = mem[i];
    std::vector<std::string> f;  // read per step, promised, bits per token, tokens, metadata,
                                 // payload
    for (int k = 0; k < 6; ++k) {
      const size_t at = row.rfind(',');
      ASSERT_NE(at, std::string::npos) << mem[i];
      f.push_back(row.substr(at + 1));
      row.resize(at);
    }
    f.erase(f.begin());
    EXPECT_GT(std::stoll(f[4]), 0) << mem[i];
    payload += std::stoll(f[4]), metadata += std::stoll(f[3]), tokens += std::stoll(f[2]);
  }
  EXPECT_EQ(payload, test::scalar(db, "SELECT sum(payload_bytes) FROM memory"));
  EXPECT_EQ(metadata, test::scalar(db, "SELECT sum(metadata_bytes) FROM memory"));
  EXPECT_EQ(tokens, test::scalar(db, "SELECT sum(tokens) FROM memory"));
  const std::string before = test::slurp(db);
  auto missing = test::run_kvbench("export --db " + test::q(db) + " --format csv --run 9");
  EXPECT_EQ(missing.code, 2);
  EXPECT_NE(missing.err.find(db + ": no run '9'"), std::string::npos) << missing.err;
  EXPECT_EQ(test::slurp(db), before);
}

TEST_F(ResultsShard, ReportWritesAnHtmlLeaderboard) {
  const std::string db = dir_.path("r.db"), html = dir_.path("board.html");
  ASSERT_EQ(run(db).code, 0);
  auto r = test::run_kvbench("report --db " + test::q(db) + " --run 1 --out " + test::q(html));
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string page = test::slurp(html);
  EXPECT_EQ(page.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(page.find("<h2>perplexity · prose</h2>"), std::string::npos) << page;
  EXPECT_NE(page.find("<h2>niah · prose</h2>"), std::string::npos) << page;
  EXPECT_NE(page.find("<code>streaming(sink=2,window=24)</code>"), std::string::npos) << page;
  // One row per cell (rows of the timings table start with the run, not a rank).
  size_t rows = 0;
  const std::string row = "<tr class=\"kvb-row\"><td class=\"n\"";
  for (size_t p = page.find(row); p != std::string::npos; p = page.find(row, p + 1)) ++rows;
  EXPECT_EQ(rows, 6u);
  auto missing = test::run_kvbench("report --db " + test::q(db) + " --run 5 --out " +
                                   test::q(dir_.path("x.html")));
  EXPECT_EQ(missing.code, 2);
  EXPECT_NE(missing.err.find(db + ": no run '5'"), std::string::npos) << missing.err;
  EXPECT_FALSE(std::filesystem::exists(dir_.path("x.html")));
}

}  // namespace
}  // namespace kvb
