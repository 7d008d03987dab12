#include "results/results_db.h"

#include <sqlite3.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <tuple>

#include "common/check.h"
#include "common/error_text.h"
#include "common/json_reader.h"
#include "suites/cell_record.h"
#include "results/sqlite_store.h"

namespace kvb {
namespace {

// One statement on a connection of `path`; a failure to step is the file's fault.
class Query {
 public:
  Query(sqlite3* db, const std::string& path, const std::string& sql) : db_(db), path_(path) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s_, nullptr) != SQLITE_OK) {
      const std::string m = sqlite_problem(db, path);
      sqlite3_finalize(s_);
      throw InputError(m);
    }
  }
  ~Query() { sqlite3_finalize(s_); }
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;
  void bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  bool step() {
    const int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw InputError(sqlite_problem(db_, path_));
  }
  int columns() const { return sqlite3_column_count(s_); }
  int64_t integer(int i) const { return sqlite3_column_int64(s_, i); }
  std::string text(int i) const {
    const auto* p = sqlite3_column_text(s_, i);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           static_cast<size_t>(sqlite3_column_bytes(s_, i)))
             : std::string();
  }

 private:
  sqlite3* db_;
  const std::string& path_;
  sqlite3_stmt* s_ = nullptr;
};

struct Column {
  std::string name, type;
  bool notnull = false;
};
// What a database's schema holds: (type, name, table) of every table and index, and the
// columns of every table.
struct SchemaShape {
  std::set<std::tuple<std::string, std::string, std::string>> objects;
  std::map<std::string, std::vector<Column>> tables;
};

SchemaShape shape_of(sqlite3* db, const std::string& path) {
  SchemaShape s;
  Query q(db, path,
          "SELECT type, name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index') "
          "ORDER BY name");
  while (q.step()) {
    s.objects.insert({q.text(0), q.text(1), q.text(2)});
    if (q.text(0) == "table") s.tables[q.text(1)];
  }
  for (auto& [table, cols] : s.tables) {
    Query info(db, path, "SELECT name, upper(type), \"notnull\" FROM pragma_table_info(?)");
    info.bind(1, table);
    while (info.step()) cols.push_back({info.text(0), info.text(1), info.integer(2) != 0});
  }
  return s;
}

// The schema a database of version `v` has: results/schema.sql's first v migrations.
const SchemaShape& reference_shape(int v) {
  static std::mutex mu;
  static std::map<int, SchemaShape> cache;
  std::lock_guard<std::mutex> g(mu);
  if (auto it = cache.find(v); it != cache.end()) return it->second;
  sqlite3* db = nullptr;
  KVB_CHECK(sqlite3_open(":memory:", &db) == SQLITE_OK, "sqlite: cannot open :memory:");
  std::string sql;
  for (int i = 0; i < v; ++i) sql += schema_migration(i);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  const std::string m = err ? err : "";
  sqlite3_free(err);
  if (rc != SQLITE_OK) {
    sqlite3_close(db);
    throw Error("results/schema.sql does not apply: " + m);
  }
  SchemaShape s = shape_of(db, ":memory:");
  sqlite3_close(db);
  return cache.emplace(v, std::move(s)).first->second;
}

// The typeof() values a column of declared type `c.type` may hold.
std::string allowed_types(const Column& c) {
  std::string t = c.type == "INTEGER" ? "'integer'"
                  : c.type == "REAL"  ? "'real', 'integer'"
                  : c.type == "TEXT"  ? "'text'"
                                      : "'integer', 'real', 'text', 'blob'";
  return t + (c.notnull ? "" : ", 'null'");
}

std::string quote_sql_name(const std::string& s) {
  std::string r = "\"";
  for (char c : s) r += c == '"' ? std::string("\"\"") : std::string(1, c);
  return r + "\"";
}

}  // namespace

ResultsDb::ResultsDb(std::string path, const DbLock* held)
    : ResultsDb(std::move(path), held, false) {}

ResultsDb::ResultsDb(std::string path, const DbLock* held, bool empty_ok) : path_(std::move(path)) {
  std::error_code ec;
  KVB_INPUT_CHECK(std::filesystem::exists(path_, ec), path_, ": no such file");
  const DbFileInfo info = check_db_file(path_);
  if (!info.present) {
    KVB_INPUT_CHECK(empty_ok, path_, ": not a kvbench results database (an empty file)");
    return;
  }
  db_ = open_db_readonly(path_, info, held, &shared_);
  try {
    check_contents(empty_ok);
  } catch (...) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

ResultsDb::~ResultsDb() { sqlite3_close(db_); }

int ResultsDb::check(const std::string& path, const DbLock* held) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return 0;
  return ResultsDb(path, held, true).version();
}

void ResultsDb::check_contents(bool empty_ok) {
  {
    // integrity_check(1): the first problem only. Its report starts with a line naming the
    // schema ("*** in database main ***") when the problem is in a table's pages.
    Query q(db_, path_, "PRAGMA integrity_check(1)");
    KVB_INPUT_CHECK(q.step(), path_, ": damaged SQLite database: integrity_check said nothing");
    std::string first = q.text(0);
    if (first != "ok") {
      if (first.rfind("*** ", 0) == 0 && first.find('\n') != std::string::npos)
        first = first.substr(first.find('\n') + 1);
      first = first.substr(0, first.find('\n'));
      throw InputError(path_ + ": damaged SQLite database: " + one_line(first, 200));
    }
  }
  auto number = [&](const char* sql) {
    Query q(db_, path_, sql);
    KVB_INPUT_CHECK(q.step(), path_, ": damaged SQLite database: ", sql, " said nothing");
    return q.integer(0);
  };
  const int64_t app = number("PRAGMA application_id");
  const int64_t version = number("PRAGMA user_version");
  const int64_t tables = number("SELECT count(*) FROM sqlite_master");
  if (app != kApplicationId) {
    KVB_INPUT_CHECK(tables == 0 && version == 0, path_,
                    ": not a kvbench results database (an SQLite file of another program)");
    KVB_INPUT_CHECK(empty_ok, path_, ": not a kvbench results database (an empty SQLite file)");
    version_ = 0;
    return;
  }
  KVB_INPUT_CHECK(version <= kSchemaVersion, path_, ": schema version ", version,
                  " is newer than this kvbench reads (", kSchemaVersion, "); use a newer kvbench");
  KVB_INPUT_CHECK(version >= 1, path_, ": damaged kvbench results database: schema version ",
                  version);
  version_ = static_cast<int>(version);

  // The schema of that version: every table and index, each table's columns.
  const SchemaShape& want = reference_shape(version_);
  const SchemaShape have = shape_of(db_, path_);
  for (const auto& o : want.objects)
    KVB_INPUT_CHECK(have.objects.count(o), path_, ": damaged kvbench results database: schema ",
                    "version ", version_, " has ", std::get<0>(o), " ", std::get<1>(o),
                    ", this file does not");
  for (const auto& [table, cols] : want.tables) {
    const auto& got = have.tables.at(table);
    bool same = got.size() == cols.size();
    for (size_t i = 0; same && i < cols.size(); ++i) same = got[i].name == cols[i].name;
    KVB_INPUT_CHECK(same, path_, ": damaged kvbench results database: table ", table,
                    " does not have the columns of schema version ", version_);
  }
  {
    Query q(db_, path_, "PRAGMA foreign_key_check");
    if (q.step())
      throw InputError(path_ + ": damaged kvbench results database: row " + q.text(1) +
                       " of table " + one_line(q.text(0), 80) + " refers to a missing row of " +
                       one_line(q.text(2), 80));
  }
  // Every value of the type its column declares (INTEGER, REAL, TEXT; NULL where allowed):
  // readers convert them without checking again.
  for (const auto& [table, cols] : want.tables) {
    std::string select = "SELECT rowid", where;
    for (const Column& c : cols) {
      select += ", typeof(" + quote_sql_name(c.name) + ")";
      where += std::string(where.empty() ? "" : " OR ") + "typeof(" + quote_sql_name(c.name) +
               ") NOT IN (" + allowed_types(c) + ")";
    }
    Query q(db_, path_, select + " FROM " + quote_sql_name(table) + " WHERE " + where + " LIMIT 1");
    if (!q.step()) continue;
    for (size_t i = 0; i < cols.size(); ++i) {
      const std::string got = q.text(static_cast<int>(i) + 1);
      if (allowed_types(cols[i]).find("'" + got + "'") == std::string::npos)
        throw InputError(path_ + ": damaged kvbench results database: table " + table + " row " +
                         q.text(0) + ": " + cols[i].name + " holds " + got + ", not " +
                         (cols[i].type.empty() ? "a value" : cols[i].type));
    }
  }
  {
    Query q(db_, path_, "SELECT id, config FROM runs ORDER BY id");
    while (q.step()) parse_json(q.text(1), path_ + ": run " + q.text(0) + ": config");
  }
  {
    Query q(db_, path_, "SELECT id, record FROM cells ORDER BY id");
    while (q.step()) parse_cell_record(q.text(1), path_ + ": cell " + q.text(0));
  }
}

std::vector<std::vector<std::string>> ResultsDb::query(const std::string& sql,
                                                       const std::vector<std::string>& args) const {
  KVB_CHECK(db_ != nullptr, path_, ": query on a database that is not open");
  Query q(db_, path_, sql);
  for (size_t i = 0; i < args.size(); ++i) q.bind(static_cast<int>(i) + 1, args[i]);
  std::vector<std::vector<std::string>> rows;
  while (q.step()) {
    std::vector<std::string> row;
    for (int i = 0; i < q.columns(); ++i) row.push_back(q.text(i));
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string ResultsDb::resolve_run(const std::string& run) const {
  auto rows = query("SELECT id FROM runs WHERE CAST(id AS TEXT) = ?1 OR name = ?1", {run});
  KVB_INPUT_CHECK(!rows.empty(), path_, ": no run '", one_line(run, 200), "'");
  KVB_INPUT_CHECK(rows.size() == 1, path_, ": run name '", one_line(run, 200),
                  "' is ambiguous; give the run id");
  return rows[0][0];
}

}  // namespace kvb
