// Helpers for the results-database tests: reading a database back, and files that are not a
// kvbench results database of a schema this build reads.
#pragma once

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/json_io.h"
#include "results/sqlite_store.h"
#include "tests/test_util.h"

namespace kvb::test {

// The first column of the first row of `sql`, read-only, as an integer (-1 when the query fails
// or is empty) or as text ("" then).
inline int64_t scalar(const std::string& path, const std::string& sql) {
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
inline std::string scalar_text(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string v;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
      v = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return v;
}

inline void exec_rw(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sql;
  sqlite3_close(db);
}

// A copy of the kvbench database `src` at `dst` as schema version 1 held it: migration 1's tables
// and columns only, memory rows for perplexity cells only, records without what later suites add.
inline void make_v1_copy(const std::string& src, const std::string& dst) {
  std::string quoted = "'";
  for (char c : src) quoted += c == '\'' ? std::string("''") : std::string(1, c);
  quoted += "'";
  exec_rw(dst,
          schema_migration(0) + "PRAGMA user_version = 1; ATTACH DATABASE " + quoted +
              " AS s; INSERT INTO runs SELECT id, name, config_hash, suite_name, git_commit, "
              "git_dirty, build_type, compiler, torch_version, device, threads, host, "
              "started_at, ended_at, seed, config FROM s.runs; "
              "INSERT INTO models SELECT * FROM s.models; "
              "INSERT INTO methods SELECT * FROM s.methods; "
              "INSERT INTO datasets SELECT * FROM s.datasets; "
              "INSERT INTO cells SELECT id, run_id, key, suite, model_id, method_id, dataset_id, "
              "params, finished_at, json_remove(record, '$.metrics.timings', CASE suite WHEN "
              "'perplexity' THEN '$.metrics.memory.promised_bytes' ELSE '$.metrics.memory' END) "
              "FROM s.cells; "
              "INSERT INTO samples SELECT * FROM s.samples; "
              "INSERT INTO metrics SELECT * FROM s.metrics; "
              "INSERT INTO memory SELECT m.cell_id, m.payload_bytes, m.metadata_bytes, m.tokens, "
              "m.bits_per_token FROM s.memory m JOIN s.cells c ON c.id = m.cell_id "
              "WHERE c.suite = 'perplexity'; DETACH DATABASE s;");
}

struct BadDb {
  std::string path;
  std::string problem;  // words of the one-line refusal
};

// Under `dir`: a text file, another program's SQLite file, and two copies of the kvbench
// database `valid` (bigger than one page): one claiming a newer schema, one with its schema
// page overwritten.
inline std::vector<BadDb> bad_databases(const TempDir& dir, const std::string& valid) {
  std::vector<BadDb> out;
  out.push_back({dir.path("notes.db"), "not an SQLite database"});
  write_file(out.back().path, "these are my notes\n");
  out.push_back({dir.path("foreign.db"), "not a kvbench results database"});
  exec_rw(out.back().path, "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);");
  out.push_back({dir.path("newer.db"), "schema version 99 is newer"});
  write_file(out.back().path, slurp(valid));
  exec_rw(out.back().path, "PRAGMA user_version = 99");
  out.push_back({dir.path("corrupt.db"), "SQLite database"});
  std::string bytes = slurp(valid);
  EXPECT_GT(bytes.size(), 4096u);
  for (size_t i = 100; i < 4096 && i < bytes.size(); ++i) bytes[i] = '\xab';  // page 1: schema
  write_file(out.back().path, bytes);
  return out;
}

// Runs kvbench with `args` and checks that it refused `file`: exit 2, one line on stderr naming
// the file and `problem`, the file's bytes unchanged.
inline void expect_refused(const std::string& args, const std::string& file,
                           const std::string& problem) {
  SCOPED_TRACE(args);
  const std::string before = slurp(file);
  auto r = run_kvbench(args);
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(file + ": "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(problem), std::string::npos) << r.err;
  EXPECT_EQ(slurp(file), before);
}

}  // namespace kvb::test
