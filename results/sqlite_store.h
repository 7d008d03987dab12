// ResultStore in SQLite (schema: results/schema.sql, compiled in as kSchemaSql).
//
// The database is versioned through PRAGMA user_version and marked with PRAGMA application_id;
// opening applies every migration newer than the file's version, so an older file is upgraded in
// place. WAL mode; each write_cell() is one transaction (cell row, its per-sample rows, metrics,
// memory, timings), so a killed run loses at most the cell in flight. A run is identified by its
// name ("" unless given) and the hash of its suite config: the same pair again continues that run
// (its finished cells are skipped by key); has_cell() and cells() see the current run only.
//
// An existing file that is not SQLite, is damaged, belongs to another program or carries a
// schema newer than this build: kvb::InputError "<path>: <problem>", and the file is left
// byte-for-byte untouched (it is checked read-only before anything is written).
#pragma once

#include <functional>

#include "common/timing.h"
#include "results/store.h"

struct sqlite3;

namespace kvb {

inline constexpr int kSchemaVersion = 2;
// results/schema.sql, compiled in at build time.
extern const char* const kSchemaSql;
// Migration i + 1 (from user_version i to i + 1): the part of schema.sql from its
// "-- migration i + 1" line to the next migration's (the first also holds the header comment).
std::string schema_migration(int i);

// The parts of a cell record that differ between two computations of the same cell (timestamp,
// wall times), as json_remove() paths: "'$.finished_at', ...". Merging compares records
// without them.
extern const char* const kVolatileRecordPaths;

class SqliteStore : public ResultStore {
 public:
  explicit SqliteStore(std::string path);
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  bool has_cell(const std::string& key) const override;
  void write_cell(const nlohmann::json& record) override;
  std::vector<nlohmann::json> cells() const override;
  std::string path() const override { return path_; }
  void begin_run(const nlohmann::json& run) override;
  void end_run() override;
  // Files a timing under the current run (after begin_run()); one taken before for the same
  // cell, name, shape and device is replaced. write_cell() files a record's metrics.timings so.
  void add_kernel_timing(const KernelTiming& t);
  // Makes run `id` (an existing row of runs) the current run, as begin_run() does for a new one.
  void use_run(int64_t id);
  int64_t run_id() const { return run_id_; }  // 0 before begin_run() / use_run()
  // Runs `body` in one write transaction: what it files (begin_run(), use_run(), end_run(),
  // add_kernel_timing(); not write_cell(), which has its own) commits together, or not at all
  // when it throws.
  void transaction(const std::function<void()>& body);

  // Copies every run, cell and kernel timing of the kvbench database at `path` (of this schema
  // or an older one; it is not changed) into this one, in one transaction: runs match by (name,
  // config hash), cells by (run, key), timings by (run, cell key, name, shape, device); rows
  // already here are left as they are, so merging twice changes nothing. A cell here whose record
  // differs (beyond timestamps and timings) or a run whose build provenance or seed differs:
  // kvb::InputError, nothing merged. Returns the number of cells added.
  int64_t merge(const std::string& path);

 private:
  int64_t intern(const char* select, const char* insert, const std::vector<std::string>& vals);
  std::string path_;
  sqlite3* db_ = nullptr;
  int64_t run_id_ = 0;
};

// Checks `path` read-only: absent or empty is fine, otherwise it must be a kvbench database of a
// schema this build knows. Returns the file's schema version (0 when absent or empty).
int check_results_db(const std::string& path);

}  // namespace kvb
