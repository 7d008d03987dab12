// ResultStore in SQLite (schema: results/schema.sql, compiled in as kSchemaSql).
//
// The database is versioned through PRAGMA user_version and marked with PRAGMA application_id;
// the first write applies every migration newer than the file's version, so an older file is
// upgraded in place. Each write_cell() is one transaction (cell row, its per-sample rows,
// metrics, memory, timings), so a killed run loses at most the cell in flight. A run is
// identified by its name ("" unless given) and the hash of its suite config: the same pair
// again continues that run (its finished cells are skipped by key); has_cell() and cells() see
// the current run only.
//
// Opening takes the database's writer lock (results/db_file.h: a second writer is refused,
// "<path>: database is in use by another kvbench process (pid N)") and then checks the whole
// file read-only (results/results_db.h: bytes, integrity, schema, types, every record), all
// before anything is written: an existing file that is not SQLite, is damaged, belongs to
// another program or carries a schema newer than this build is kvb::InputError
// "<path>: <problem>", and is left byte-for-byte untouched. Nothing is written until something
// is to be stored: the run's row goes in with its first cell (or with end_run()), a run whose
// cells were all finished before leaves the file as it was, and its ended_at is kept. The one
// exception is a -journal left by a write interrupted in rollback-journal mode: SQLite's
// recovery rolls it back before the checks can read the file.
//
// Journal mode (results/db_file.h): WAL from the first write on, rollback (DELETE) again when the
// store closes, so that a database at rest can be read without leaving files beside it.
#pragma once

#include <functional>

#include "common/timing.h"
#include "results/db_file.h"
#include "results/store.h"

struct sqlite3;

namespace kvb {

inline constexpr int kSchemaVersion = 3;
inline constexpr int kApplicationId = 0x4b564231;  // "KVB1"
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
  // With the writer's lock already taken (DbLock::exclusive(), which names the path).
  explicit SqliteStore(DbLock lock);
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
  // 0 before begin_run() / use_run(), and after begin_run() of a new run until its row is
  // written (with its first cell, timing, or end_run()).
  int64_t run_id() const { return run_id_; }
  // Runs `body` in one write transaction: what it files (begin_run(), use_run(), end_run(),
  // add_kernel_timing(); not write_cell(), which has its own) commits together, or not at all
  // when it throws.
  void transaction(const std::function<void()>& body);

  // Copies every run, cell and kernel timing of the kvbench database at `path` (of this schema
  // or an older one; it is not changed, and is read under `held`, the caller's shared lock on
  // it, or one taken here) into this one, in one transaction: runs match by (name, config hash),
  // cells by (run, key), timings by (run, cell key, name, shape, device); rows already here are
  // left as they are, so merging twice changes nothing. A cell here whose record differs (beyond
  // timestamps and timings) or a run whose build provenance or seed differs: kvb::InputError,
  // nothing merged. Returns the number of cells added.
  int64_t merge(const std::string& path, const DbLock* held = nullptr);

 private:
  // Before the first write: WAL mode, the migrations up to kSchemaVersion.
  void prepare_write();
  // The current run's row, written now (inside a transaction) if begin_run() left it pending.
  void ensure_run();
  // `body` inside transaction(), or as it is when one is open already.
  void write(const std::function<void()>& body);
  void file_kernel_timing(const KernelTiming& t);
  int64_t intern(const char* select, const char* insert, const std::vector<std::string>& vals);
  std::string path_;
  DbLock lock_;  // released after db_ is closed (results/db_file.h)
  sqlite3* db_ = nullptr;
  int version_ = 0;       // the file's schema version (0: no kvbench tables yet)
  bool writing_ = false;  // prepare_write() done
  int64_t run_id_ = 0;
  nlohmann::json pending_run_;  // begin_run()'s run, until its row is written
};

// The read-only checks of results/results_db.h on `path`: 0 when it is absent, empty or an
// SQLite file with nothing in it, else its schema version. `held`: the caller's lock on it.
int check_results_db(const std::string& path, const DbLock* held = nullptr);

}  // namespace kvb
