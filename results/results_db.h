// A read-only handle on a kvbench results database, for the commands that read one back
// (export, compare, report, leaderboard). Opening checks the file first (check_results_db): a
// missing file, a file that is not a kvbench database or one of a newer schema is a
// kvb::InputError "<path>: <problem>", and nothing is ever written.
#pragma once

#include <string>
#include <vector>

struct sqlite3;

namespace kvb {

class ResultsDb {
 public:
  explicit ResultsDb(std::string path);
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

 private:
  std::string path_;
  int version_ = 0;
  sqlite3* db_ = nullptr;
};

}  // namespace kvb
