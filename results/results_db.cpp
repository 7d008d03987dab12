#include "results/results_db.h"

#include <sqlite3.h>

#include <filesystem>

#include "common/check.h"
#include "results/sqlite_store.h"

namespace kvb {

ResultsDb::ResultsDb(std::string path) : path_(std::move(path)) {
  KVB_INPUT_CHECK(std::filesystem::exists(path_), path_, ": no such file");
  version_ = check_results_db(path_);
  KVB_INPUT_CHECK(version_ > 0, path_, ": not a kvbench results database");
  if (sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    const std::string m = db_ ? sqlite3_errmsg(db_) : "no memory";
    sqlite3_close(db_);
    throw InputError(path_ + ": cannot open: " + m);
  }
}

ResultsDb::~ResultsDb() { sqlite3_close(db_); }

std::vector<std::vector<std::string>> ResultsDb::query(const std::string& sql,
                                                       const std::vector<std::string>& args) const {
  sqlite3_stmt* s = nullptr;
  KVB_CHECK(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) == SQLITE_OK,
            sqlite3_errmsg(db_));
  for (size_t i = 0; i < args.size(); ++i)
    sqlite3_bind_text(s, static_cast<int>(i) + 1, args[i].c_str(), -1, SQLITE_TRANSIENT);
  std::vector<std::vector<std::string>> rows;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    std::vector<std::string> row;
    for (int i = 0; i < sqlite3_column_count(s); ++i) {
      const auto* p = sqlite3_column_text(s, i);
      row.push_back(p ? reinterpret_cast<const char*>(p) : "");
    }
    rows.push_back(std::move(row));
  }
  sqlite3_finalize(s);
  KVB_INPUT_CHECK(rc == SQLITE_DONE, path_, ": ", sqlite3_errmsg(db_));
  return rows;
}

std::string ResultsDb::resolve_run(const std::string& run) const {
  auto rows = query("SELECT id FROM runs WHERE CAST(id AS TEXT) = ?1 OR name = ?1", {run});
  KVB_INPUT_CHECK(!rows.empty(), path_, ": no run '", run, "'");
  KVB_INPUT_CHECK(rows.size() == 1, path_, ": run name '", run, "' is ambiguous; give the run id");
  return rows[0][0];
}

}  // namespace kvb
