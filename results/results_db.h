// A read-only handle on a kvbench results database, for the commands that read one back
// (export, compare, report, leaderboard) and for the checks every writer makes before its first
// write (check_results_db). Opening checks the whole file, never writing it (results/db_file.h:
// no -wal, -shm or -journal is left behind either):
//   1. its bytes: the SQLite header, page size, and a size that is what the header records;
//   2. PRAGMA integrity_check, the first problem reported (a damaged page, an index out of step
//      with its table; about 3 ms per MB);
//   3. kvbench's application id and a schema version this build knows;
//   4. the tables, columns and indexes of that version (built from results/schema.sql), rows
//      that refer to rows that exist (PRAGMA foreign_key_check), and every value of the type its
//      column declares;
//   5. every stored record (cells.record) parses and has the shape its readers rely on
//      (suites/cell_record.h), every run's config parses.
// A failure is kvb::InputError "<path>: <problem>", one line.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "results/db_file.h"

struct sqlite3;

namespace kvb {

class ResultsDb {
 public:
  // `held`: a lock on the file the caller holds (a writer's exclusive lock, merge's shared lock
  // on an input), if any.
  explicit ResultsDb(std::string path, const DbLock* held = nullptr);
  ~ResultsDb();
  ResultsDb(const ResultsDb&) = delete;
  ResultsDb& operator=(const ResultsDb&) = delete;

  // Rows of `sql` with `args` bound as text, every column as text ("" for NULL).
  std::vector<std::vector<std::string>> query(const std::string& sql,
                                              const std::vector<std::string>& args = {}) const;
  // The id of run `run` (an id or a name); kvb::InputError "<path>: no run '<run>'" when none,
  // or when a name is shared by several runs.
  std::string resolve_run(const std::string& run) const;
  const std::string& path() const { return path_; }
  int version() const { return version_; }  // PRAGMA user_version

  // What the checks above found: 0 for a file that is absent, empty, or an SQLite database
  // with nothing in it (which a writer may turn into a kvbench database), else the schema
  // version. Throws as the constructor does.
  static int check(const std::string& path, const DbLock* held);

 private:
  ResultsDb(std::string path, const DbLock* held, bool empty_ok);
  void check_contents(bool empty_ok);
  std::string path_;
  int version_ = 0;
  std::optional<DbLock> shared_;  // a reader's lock, while a WAL-mode file is read immutable
  sqlite3* db_ = nullptr;
};

}  // namespace kvb
