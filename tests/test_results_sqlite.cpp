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

#include "harness/common/json_io.h"
#include "results/sqlite_store.h"
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

int64_t scalar(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  int64_t v = -1;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
      v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return v;
}

void exec_rw(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sql;
  sqlite3_close(db);
}

class ResultsSqlite : public ::testing::Test {
 protected:
  void SetUp() override {
    test::make_tiny_model_dir(dir_.path("m"));
    write_file(
        dir_.path("kv.jsonl"),
        R"({"id": "a", "context": "k1: v1, k2: v2", "multi_turns": [{"input": "k1?", "answer": "v1"}, {"input": "k2?", "answer": ["v2"]}]})"
        "\n");
    json config = {
        {"name", "t"},
        {"seed", 5},
        {"models", {dir_.path("m")}},
        {"methods", {"full", "streaming(sink=2,window=24)", "streaming(sink=4,window=32)"}},
        {"datasets",
         {{"prose", {{"type", "prose"}, {"words", 400}}},
          {"kv",
           {{"type", "scbench_jsonl"}, {"path", dir_.path("kv.jsonl")}, {"metric", "substring"}}}}},
        {"runs",
         {{{"suite", "perplexity"},
           {"datasets", {"prose"}},
           {"params", {{"ctx", 64}, {"chunk", 16}, {"max_windows", 2}}}},
          {{"suite", "niah"},
           {"datasets", {"prose"}},
           {"params", {{"context_lengths", {160}}, {"depths", {0.0, 1.0}}, {"max_new_tokens", 3}}}},
          {{"suite", "scbench"},
           {"datasets", {"kv"}},
           {"params", {{"mode", "multi_request"}, {"max_new_tokens", 4}}}}}}};
    write_file(cfg(), config.dump(2));
  }
  std::string cfg() const { return dir_.path("suite.json"); }
  test::CmdResult run(const std::string& db, const std::string& extra = "") {
    return test::run_kvbench("run --progress lines --suite " + test::q(cfg()) + " --db " +
                             test::q(db) + " " + extra);
  }
  // Runs against `db` and checks: exit 2, one line naming the file, the file's bytes unchanged.
  void expect_refused(const std::string& db, const std::string& problem) {
    const std::string before = test::slurp(db);
    auto r = run(db);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find(db + ": "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(problem), std::string::npos) << r.err;
    EXPECT_EQ(test::slurp(db), before);
  }
  static constexpr int kCells = 9;
  test::TempDir dir_;
};

TEST(ResultsSchema, EmbeddedSchemaIsSchemaSql) {
  EXPECT_EQ(std::string(kSchemaV1),
            test::slurp(std::string(KVB_SOURCE_DIR) + "/results/schema.sql"));
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
  EXPECT_EQ(scalar(db, "SELECT count(*) FROM memory WHERE bits_per_token > 0"), 3);
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

TEST_F(ResultsSqlite, ForeignCorruptOrNewerFilesAreRefusedUntouched) {
  const std::string text = dir_.path("notes.db");
  write_file(text, "these are my notes\n");
  expect_refused(text, "not an SQLite database");

  const std::string foreign = dir_.path("foreign.db");
  exec_rw(foreign, "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);");
  expect_refused(foreign, "not a kvbench results database");

  const std::string newer = dir_.path("newer.db");
  ASSERT_EQ(run(newer, "--max-cells 1").code, 0);
  exec_rw(newer, "PRAGMA user_version = 99");
  expect_refused(newer, "schema version 99 is newer");

  const std::string corrupt = dir_.path("corrupt.db");
  ASSERT_EQ(run(corrupt, "--max-cells 1").code, 0);
  {
    std::string bytes = test::slurp(corrupt);
    ASSERT_GT(bytes.size(), 4096u);
    for (size_t i = 100; i < 4096; ++i) bytes[i] = '\xab';  // page 1: the schema's b-tree
    write_file(corrupt, bytes);
  }
  expect_refused(corrupt, "SQLite database");
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
