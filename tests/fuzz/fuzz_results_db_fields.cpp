// The values inside a valid results database: the input is up to 20 parts (split_parts), part
// i replacing the value of column kColumns[i] in the first row of its table of a copy of the
// seed database (an empty part leaves the value). Records, specs, params and names that a
// hand-edited or foreign-written database holds then go through the same reads as
// fuzz_results_db (results_fuzz_util.h).
#include <sqlite3.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "tests/fuzz/results_fuzz_util.h"

namespace {

constexpr const char* kColumns[][2] = {
    {"cells", "record"},        {"cells", "params"},
    {"cells", "suite"},         {"cells", "key"},
    {"methods", "spec"},        {"datasets", "spec"},
    {"datasets", "name"},       {"runs", "config"},
    {"runs", "name"},           {"models", "path"},
    {"models", "config"},       {"metrics", "name"},
    {"metrics", "value"},       {"samples", "prediction"},
    {"samples", "score"},       {"memory", "payload_bytes"},
    {"kernel_timings", "name"}, {"runs", "suite_name"},
    {"runs", "started_at"},     {"cells", "finished_at"},
};
constexpr size_t kParts = sizeof(kColumns) / sizeof(kColumns[0]);

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvb::fuzz;
  const std::string path = scratch_path("fields.db");
  remove_db(path);
  copy_bytes(seed_db_path(), path);
  const auto parts = split_parts({reinterpret_cast<const char*>(data), size}, kParts);
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) report("cannot open the seed copy", path);
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].empty()) continue;
    const std::string sql = std::string("UPDATE ") + kColumns[i][0] + " SET " + kColumns[i][1] +
                            " = ? WHERE rowid = (SELECT min(rowid) FROM " + kColumns[i][0] + ")";
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK)
      report("cannot prepare", sql + ": " + sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, parts[i].data(), static_cast<int>(parts[i].size()), SQLITE_TRANSIENT);
    sqlite3_step(st);  // a UNIQUE clash leaves the value: fine
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  exercise_results_db(path, {reinterpret_cast<const char*>(data), size});
  return 0;
}
