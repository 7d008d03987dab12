// `kvbench run --db`: the SQLite results store. Provenance and per-sample rows land in their
// tables; a run killed with SIGKILL resumes to exactly the rows of an uninterrupted run; files
// that are not a kvbench database of a known schema fail with one line, exit 2, bytes untouched.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/json_io.h"
#include "results/sqlite_store.h"
#include "tests/results_test_util.h"
#include "tests/suite_test_util.h"

namespace kvb {
namespace {

using json = nlohmann::json;

// Every row of every table as text; timings and timestamps left out (they differ run to run).
std::map<std::string, std::vector<std::string>> dump(const std::string& path) {
  std::map<std::string, std::vector<std::string>> out;
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  for (const char* t :
       {"runs", "models", "methods", "datasets", "cells", "samples", "metrics", "memory"}) {
    sqlite3_stmt* s = nullptr;
    const std::string sql = std::string("SELECT * FROM ") + t + " ORDER BY 1, 2";
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sql;
    while (sqlite3_step(s) == SQLITE_ROW) {
      std::string row;
      bool timing = false;
      for (int i = 0; i < sqlite3_column_count(s); ++i) {
        const std::string col = sqlite3_column_name(s, i);
        const auto* p = sqlite3_column_text(s, i);
        std::string v = p ? reinterpret_cast<const char*>(p) : "NULL";
        if (col == "started_at" || col == "ended_at" || col == "finished_at") continue;
        if (col == "name" && (v == "seconds" || v == "tokens_per_second")) timing = true;
        if (col == "record") {
          json r = json::parse(v);
          r.erase("finished_at");
          r["metrics"].erase("seconds");
          r["metrics"].erase("tokens_per_second");
          r["metrics"].erase("timings");
          if (r.contains("protocol")) r["protocol"].erase("reference_seconds");
          v = r.dump();
        }
        row += col + "=" + v + "|";
      }
      if (!timing) out[t].push_back(row);
    }
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return out;
}

using test::scalar;

class ResultsSqlite : public ::testing::Test {
 protected:
  void SetUp() override {
    const json config = test::small_suite_config(
        dir_, {.methods = {"full", "streaming(sink=2,window=24)", "streaming(sink=4,window=32)"},
               .scbench_mode = "multi_request"});
    write_file(cfg(), config.dump(2));
  }
  std::string cfg() const { return dir_.path("suite.json"); }
  std::string run_args(const std::string& db, const std::string& extra = "") const {
    return "run --progress lines --suite " + test::q(cfg()) + " --db " + test::q(db) + " " + extra;
  }
  test::CmdResult run(const std::string& db, const std::string& extra = "") {
    return test::run_kvbench(run_args(db, extra));
  }
  static constexpr int kCells = 9;
  test::TempDir dir_;
};

// The build compiled in schema.sql as it is now, and its "-- migration N" parts are exactly
// migrations 1..kSchemaVersion: together they are the whole file, each but the first starts at
// its mark, and the mark of a migration kSchemaVersion does not know would be inside the last.
TEST(ResultsSchema, EmbeddedSchemaIsSchemaSql) {
  EXPECT_EQ(std::string(kSchemaSql), test::slurp(test::source_path("results/schema.sql")));
  std::string all;
  for (int i = 0; i < kSchemaVersion; ++i) {
    const std::string m = schema_migration(i);
    const std::string mark = "-- migration " + std::to_string(i + 1);
    EXPECT_TRUE(i == 0 ? m.find("\n" + mark) != std::string::npos : m.rfind(mark, 0) == 0) << m;
    EXPECT_EQ(m.find("\n-- migration " + std::to_string(i + 2)), std::string::npos) << m;
    all += m;
  }
  EXPECT_EQ(all, test::slurp(test::source_path("results/schema.sql")));
  EXPECT_THROW(schema_migration(kSchemaVersion), std::exception);
}

TEST_F(ResultsSqlite, RunFillsEveryTableWithProvenance) {
  const std::string db = dir_.path("res/r.db");
  auto r = run(db);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("results: " + db), std::string::npos) << r.out;
  EXPECT_EQ(scalar(db, "PRAGMA user_version"), kSchemaVersion);
  EXPECT_EQ(scalar(db, "PRAGMA application_id"), 0x4b564231);
  EXPECT_EQ(scalar(db, "SELECT count(*) FROM runs"), 1);
  EXPECT_EQ(scalar(db,
                   "SELECT count(*) FROM runs WHERE ended_at IS NOT NULL AND seed = 5 AND "
                   "threads > 0 AND torch_version <> '' AND compiler <> '' AND host <> '' "
                   "AND json_extract(config, '$.name') = 't'"),
            1);
  EXPECT_EQ(scalar(db, "SELECT count(*) FROM cells"), kCells);
  EXPECT_EQ(scalar(db,
                   "SELECT count(*) FROM models WHERE length(weights_hash) = 16 AND "
                   "json_extract(config, '$.hidden_size') = 32"),
            1);
  EXPECT_EQ(scalar(db, "SELECT count(*) FROM methods"), 3);
  EXPECT_EQ(scalar(db, "SELECT count(*) FROM datasets"), 2);
  // niah: 2 grid points per cell; scbench: 2 turns per cell.
  EXPECT_EQ(scalar(db, "SELECT count(*) FROM samples"), 3 * 2 + 3 * 2);
  EXPECT_EQ(scalar(db,
                   "SELECT count(*) FROM samples s JOIN cells c ON c.id = s.cell_id "
                   "WHERE c.suite = 'scbench' AND s.turn = 1"),
            3);
  EXPECT_EQ(scalar(db, "SELECT count(*) FROM metrics WHERE name = 'ppl' AND se > 0"), 3);
  // Every cell holds memory, and every method here promises how much.
  EXPECT_EQ(scalar(db, "SELECT count(*) FROM memory WHERE bits_per_token > 0 AND tokens > 0 AND "
                       "promised_bytes > 0"),
            kCells);
  // Perplexity feeds each window and nothing after it: the state holds what was promised.
  EXPECT_EQ(scalar(db,
                   "SELECT count(*) FROM memory x JOIN cells c ON c.id = x.cell_id WHERE "
                   "c.suite = 'perplexity' AND abs(x.promised_bytes - x.payload_bytes - "
                   "x.metadata_bytes) <= 0.01 * x.promised_bytes + 1"),
            3);
  // Perplexity records the bytes read per decode step; these methods read all they hold.
  EXPECT_EQ(scalar(db,
                   "SELECT count(*) FROM memory x JOIN cells c ON c.id = x.cell_id WHERE "
                   "c.suite = 'perplexity' AND x.read_bytes_per_step > 0 AND "
                   "x.read_bytes_per_step <= x.payload_bytes + x.metadata_bytes"),
            3);
  // NIAH's prefill timings: one row per cell and context length, over its 2 depths.
  EXPECT_EQ(scalar(db,
                   "SELECT count(*) FROM kernel_timings WHERE name = 'niah.prefill' AND "
                   "shape = 'context_len=160,chunk=0' AND device = 'cpu' AND reps = 2 AND "
                   "0 < min_ms AND min_ms <= median_ms AND median_ms <= max_ms"),
            3);
  EXPECT_EQ(scalar(db,
                   "SELECT count(*) FROM kernel_timings k WHERE NOT EXISTS (SELECT 1 FROM cells c "
                   "WHERE c.run_id = k.run_id AND c.key = k.cell_key AND c.suite = 'niah')"),
            0);
#ifdef KVB_HAVE_CUDA_KERNELS
  EXPECT_EQ(scalar(db, "SELECT count(*) FROM runs WHERE cuda_version GLOB '[1-9]*.[0-9]*'"), 1);
#else
  EXPECT_EQ(scalar(db, "SELECT count(*) FROM runs WHERE cuda_version = '' OR "
                       "cuda_version GLOB '[1-9]*.[0-9]*'"),
            1);
#endif
  // A second run finds every cell done and adds nothing.
  const auto before = dump(db);
  auto again = run(db);
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.out.find("0 cells computed, 9 finished earlier"), std::string::npos) << again.out;
  EXPECT_EQ(dump(db), before);
}

TEST_F(ResultsSqlite, SigkilledRunResumesToTheRowsOfAnUninterruptedRun) {
  const std::string whole = dir_.path("whole.db"), killed = dir_.path("killed.db");
  auto r = run(whole);
  ASSERT_EQ(r.code, 0) << r.err;

  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (!std::freopen("/dev/null", "w", stdout) || !std::freopen("/dev/null", "w", stderr))
      ::_exit(126);
    ::execl(KVB_BINARY, KVB_BINARY, "run", "--progress", "lines", "--suite", cfg().c_str(), "--db",
            killed.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int64_t done = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (done < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    done = scalar(killed, "SELECT count(*) FROM cells");
  }
  ::kill(pid, SIGKILL);
  int st = 0;
  ::waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFSIGNALED(st)) << "the run finished before it could be killed";
  const int64_t kept = scalar(killed, "SELECT count(*) FROM cells");
  EXPECT_GE(kept, 1);
  EXPECT_LT(kept, kCells);
  EXPECT_EQ(scalar(killed, "SELECT count(*) FROM runs WHERE ended_at IS NULL"), 1);

  auto resumed = run(killed);
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find(std::to_string(kept) + " finished earlier"), std::string::npos)
      << resumed.out;
  const auto a = dump(whole), b = dump(killed);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [table, rows] : a) {
    ASSERT_EQ(rows.size(), b.at(table).size()) << table;
    for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(rows[i], b.at(table)[i]) << table;
  }
}

TEST_F(ResultsSqlite, AddedKernelTimingsAreReadBackAndReplaced) {
  const std::string db = dir_.path("k.db");
  {
    SqliteStore store(db);
    store.begin_run({{"name", "bench"},
                     {"config_hash", "0"},
                     {"suite_name", "kernels"},
                     {"git_commit", ""},
                     {"git_dirty", false},
                     {"build_type", "Release"},
                     {"compiler", "c"},
                     {"torch_version", "t"},
                     {"cuda_version", "12.4"},
                     {"device", "cuda:0"},
                     {"threads", 1},
                     {"host", "h"},
                     {"started_at", "2024-01-01T00:00:00Z"},
                     {"seed", 0},
                     {"config", json::object()}});
    KernelTiming t = summarize_timing("dequant_rows", "rows=1048576,d=128,bits=2", "cuda:0",
                                      {0.5, 0.25, 2.0, 1.0});
    EXPECT_EQ(t.reps, 4);
    EXPECT_DOUBLE_EQ(t.median_ms, 0.75);
    EXPECT_DOUBLE_EQ(t.min_ms, 0.25);
    EXPECT_DOUBLE_EQ(t.max_ms, 2.0);
    t.bytes_moved = 1 << 20;
    t.gbps = 1.25;
    store.add_kernel_timing(t);
    t.median_ms = 0.5;  // measured again: replaces the row
    store.add_kernel_timing(t);
    store.add_kernel_timing(summarize_timing("dequant_rows", "rows=1048576,d=128,bits=4",
                                             "cuda:0", {3.0}));
  }
  EXPECT_EQ(scalar(db, "SELECT count(*) FROM kernel_timings"), 2);
  EXPECT_EQ(scalar(db,
                   "SELECT count(*) FROM kernel_timings k JOIN runs r ON r.id = k.run_id WHERE "
                   "r.name = 'bench' AND r.cuda_version = '12.4' AND k.cell_key = '' AND "
                   "k.shape = 'rows=1048576,d=128,bits=2' AND k.reps = 4 AND k.median_ms = 0.5 "
                   "AND k.min_ms = 0.25 AND k.max_ms = 2 AND k.bytes_moved = 1048576 AND "
                   "k.gbps = 1.25 AND k.gflops IS NULL AND k.roofline_fraction IS NULL"),
            1);
  EXPECT_EQ(scalar(db,
                   "SELECT count(*) FROM kernel_timings WHERE shape = 'rows=1048576,d=128,bits=4' "
                   "AND reps = 1 AND median_ms = 3 AND bytes_moved IS NULL AND gbps IS NULL"),
            1);
}

TEST_F(ResultsSqlite, Version1DatabaseIsUpgradedInPlace) {
  const std::string partial = dir_.path("partial.db"), old = dir_.path("old.db");
  ASSERT_EQ(run(partial, "--max-cells 4").code, 0);  // 3 perplexity cells, 1 niah cell
  test::make_v1_copy(partial, old);
  ASSERT_EQ(scalar(old, "PRAGMA user_version"), 1);
  ASSERT_EQ(scalar(old, "SELECT count(*) FROM cells"), 4);
  ASSERT_EQ(scalar(old, "SELECT count(*) FROM pragma_table_info('runs') WHERE name = "
                        "'cuda_version'"),
            0);

  // Merging from it leaves it as it is.
  const std::string before = test::slurp(old), merged = dir_.path("merged.db");
  auto m = test::run_kvbench("merge " + test::q(merged) + " " + test::q(old));
  ASSERT_EQ(m.code, 0) << m.err;
  EXPECT_NE(m.out.find("4 cells added"), std::string::npos) << m.out;
  EXPECT_EQ(test::slurp(old), before);
  EXPECT_EQ(scalar(merged, "SELECT count(*) FROM memory WHERE promised_bytes IS NULL"), 3);
  EXPECT_EQ(scalar(merged, "SELECT count(*) FROM runs WHERE cuda_version = ''"), 1);

  // Running on it upgrades it and finishes the run.
  auto r = run(old);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("5 cells computed, 4 finished earlier"), std::string::npos) << r.out;
  EXPECT_EQ(scalar(old, "PRAGMA user_version"), kSchemaVersion);
  EXPECT_EQ(scalar(old, "SELECT count(*) FROM runs"), 1);
  EXPECT_EQ(scalar(old, "SELECT count(*) FROM cells"), kCells);
  // Rows from before keep what version 1 knew; the new ones have everything.
  EXPECT_EQ(scalar(old, "SELECT count(*) FROM memory WHERE promised_bytes IS NULL"), 3);
  EXPECT_EQ(scalar(old, "SELECT count(*) FROM memory WHERE promised_bytes > 0"), 5);
  // Version 3's column: NULL in the rows from before.
  EXPECT_EQ(scalar(old, "SELECT count(*) FROM memory WHERE read_bytes_per_step IS NULL AND "
                        "promised_bytes IS NULL"),
            3);
  EXPECT_EQ(scalar(old, "SELECT count(DISTINCT cell_key) FROM kernel_timings"), 2);
  EXPECT_EQ(scalar(old, "SELECT count(*) FROM runs WHERE cuda_version = ''"), 1);
}

TEST_F(ResultsSqlite, ForeignCorruptOrNewerFilesAreRefusedUntouched) {
  const std::string valid = dir_.path("valid.db");
  ASSERT_EQ(run(valid, "--max-cells 1").code, 0);
  const auto bad = test::bad_databases(dir_, valid);
  ASSERT_EQ(bad.size(), 4u);
  for (const auto& b : bad) test::expect_refused(run_args(b.path), b.path, b.problem);
}

TEST_F(ResultsSqlite, DbAndOutTogetherAreRefused) {
  auto r =
      test::run_kvbench("run --suite " + test::q(cfg()) + " --db " + test::q(dir_.path("a.db")) +
                        " --out " + test::q(dir_.path("a.jsonl")));
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir_.path("a.db")));
}

}  // namespace
}  // namespace kvb
