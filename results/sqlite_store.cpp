#include "results/sqlite_store.h"

#include <sqlite3.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "common/check.h"
#include "common/hash.h"
#include "common/json_io.h"
#include "common/time.h"
#include "suites/cell_record.h"
#include "results/results_db.h"

namespace kvb {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// One prepared statement; binds by 1-based position.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &s_, nullptr) != SQLITE_OK)
      throw Error(std::string("sqlite: ") + sqlite3_errmsg(db) + " in: " + sql);
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt& bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  Stmt& bind(int i, double v) {
    sqlite3_bind_double(s_, i, v);
    return *this;
  }
  Stmt& bind_null(int i) {
    sqlite3_bind_null(s_, i);
    return *this;
  }
  void reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  bool step() {  // true while a row is available
    int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw Error(std::string("sqlite: ") + sqlite3_errmsg(db_));
  }
  int64_t int_at(int i) const { return sqlite3_column_int64(s_, i); }
  std::string text_at(int i) const {
    const auto* p = sqlite3_column_text(s_, i);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           static_cast<size_t>(sqlite3_column_bytes(s_, i)))
             : std::string();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
};

void exec(sqlite3* db, const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    throw Error("sqlite: " + m);
  }
}

// Sets the journal mode, retrying while another connection keeps SQLite from changing it
// (leaving WAL needs the file to itself); false when it could not within `ms`.
bool set_journal_mode(sqlite3* db, const std::string& mode, int ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    sqlite3_stmt* s = nullptr;
    std::string got;
    if (sqlite3_prepare_v2(db, ("PRAGMA journal_mode = " + mode).c_str(), -1, &s, nullptr) ==
            SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
      got = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    for (char& c : got) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (got == mode) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void bind_optional(Stmt& s, int i, const std::optional<double>& v) {
  if (v)
    s.bind(i, *v);
  else
    s.bind_null(i);
}

}  // namespace

std::string schema_migration(int i) {
  const std::string all = kSchemaSql;
  // Where the line "-- migration n" begins (n not followed by another digit); npos if nowhere.
  const auto line = [&all](int n) {
    const std::string mark = "\n-- migration " + std::to_string(n);
    for (size_t at = all.find(mark); at != std::string::npos; at = all.find(mark, at + 1)) {
      const size_t after = at + mark.size();
      if (after == all.size() || !std::isdigit(static_cast<unsigned char>(all[after]))) return at + 1;
    }
    return std::string::npos;
  };
  KVB_CHECK(i >= 0 && i < kSchemaVersion && line(i + 1) != std::string::npos,
            "results/schema.sql has no migration ", i + 1);
  const size_t begin = i == 0 ? 0 : line(i + 1), end = line(i + 2);
  return all.substr(begin, end == std::string::npos ? end : end - begin);
}

const char* const kVolatileRecordPaths =
    "'$.finished_at', '$.metrics.seconds', '$.metrics.tokens_per_second', '$.metrics.timings', "
    "'$.protocol.reference_seconds'";

int check_results_db(const std::string& path, const DbLock* held) {
  return ResultsDb::check(path, held);
}

SqliteStore::SqliteStore(std::string path) : SqliteStore(DbLock::exclusive(path)) {}

SqliteStore::SqliteStore(DbLock lock) : path_(lock.path()), lock_(std::move(lock)) {
  std::error_code ec;
  try {
    // A -journal beside the file: a write in rollback-journal mode was interrupted (a killed
    // switch of the journal mode). SQLite rolls it back when the file is opened for writing;
    // the checks cannot read the file before that.
    if (fs::exists(path_ + "-journal", ec) && check_db_file(path_).present) {
      sqlite3* r = nullptr;
      if (sqlite3_open_v2(sqlite_uri(path_, "mode=rw").c_str(), &r,
                          SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI, nullptr) == SQLITE_OK) {
        sqlite3_busy_timeout(r, kBusyTimeoutMs);
        sqlite3_exec(r, "SELECT count(*) FROM sqlite_master", nullptr, nullptr, nullptr);
      }
      sqlite3_close(r);  // a failure is the checks' to report
    }
    version_ = check_results_db(path_, &lock_);
    // The file exists (the lock created it when absent); SQLITE_OPEN_URI for merge's ATTACH.
    if (sqlite3_open_v2(sqlite_uri(path_, "mode=rw").c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI, nullptr) != SQLITE_OK)
      throw InputError(
          path_ + ": cannot open for writing: " + (db_ ? sqlite3_errmsg(db_) : "out of memory"));
    sqlite3_busy_timeout(db_, kBusyTimeoutMs);
    exec(db_, "PRAGMA foreign_keys = ON");
  } catch (...) {
    sqlite3_close(db_);
    db_ = nullptr;
    if (lock_.created() && fs::file_size(path_, ec) == 0 && !ec) fs::remove(path_, ec);
    throw;
  }
}

SqliteStore::~SqliteStore() {
  // Back to rollback-journal mode, so that the file at rest is read without side files; when a
  // reader still has it open, it stays in WAL mode (its -wal and -shm go with the next writer).
  if (db_ && writing_) set_journal_mode(db_, "delete", 5000);
  sqlite3_close(db_);
  std::error_code ec;
  if (lock_.created() && fs::file_size(path_, ec) == 0 && !ec) fs::remove(path_, ec);
}

void SqliteStore::prepare_write() {
  if (writing_) return;
  KVB_CHECK(sqlite3_get_autocommit(db_) != 0, "prepare_write() inside a transaction");
  if (!set_journal_mode(db_, "wal", kBusyTimeoutMs))
    throw InputError(path_ + ": cannot switch to WAL mode: " + sqlite3_errmsg(db_) +
                     " (another process has it open)");
  exec(db_, "PRAGMA synchronous = FULL");
  for (int v = version_; v < kSchemaVersion; ++v) {
    exec(db_, "BEGIN IMMEDIATE");
    try {
      exec(db_, schema_migration(v));
      exec(db_, "PRAGMA user_version = " + std::to_string(v + 1));
      exec(db_, "COMMIT");
    } catch (...) {
      exec(db_, "ROLLBACK");
      throw;
    }
    version_ = v + 1;
  }
  writing_ = true;
}

bool SqliteStore::has_cell(const std::string& key) const {
  if (run_id_ == 0) return false;
  Stmt s(db_, "SELECT 1 FROM cells WHERE run_id = ? AND key = ?");
  return s.bind(1, run_id_).bind(2, key).step();
}

std::vector<json> SqliteStore::cells() const {
  std::vector<json> out;
  if (run_id_ == 0) return out;
  Stmt s(db_, "SELECT id, record FROM cells WHERE run_id = ? ORDER BY id");
  s.bind(1, run_id_);
  while (s.step())
    out.push_back(parse_cell_record(s.text_at(1), path_ + ": cell " + std::to_string(s.int_at(0))));
  return out;
}

void SqliteStore::begin_run(const json& run) {
  const std::string hash = run.at("config_hash").get<std::string>();
  const std::string name = run.value("name", std::string());
  run_id_ = 0;
  pending_run_ = run;
  if (version_ == 0) return;  // no tables yet
  Stmt find(db_, "SELECT id FROM runs WHERE name = ? AND config_hash = ?");
  if (find.bind(1, name).bind(2, hash).step()) {
    run_id_ = find.int_at(0);
    pending_run_ = nullptr;
  }
}

void SqliteStore::ensure_run() {
  if (run_id_ > 0) return;
  KVB_CHECK(!pending_run_.is_null(), "a write before begin_run()");
  KVB_CHECK(writing_ && sqlite3_get_autocommit(db_) == 0, "ensure_run() outside a transaction");
  const json& run = pending_run_;
  Stmt ins(db_,
           "INSERT INTO runs (name, config_hash, suite_name, git_commit, git_dirty, build_type, "
           "compiler, torch_version, cuda_version, device, threads, host, started_at, seed, "
           "config) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  ins.bind(1, run.value("name", std::string()))
      .bind(2, run.at("config_hash").get<std::string>())
      .bind(3, run.at("suite_name").get<std::string>())
      .bind(4, run.at("git_commit").get<std::string>())
      .bind(5, static_cast<int64_t>(run.at("git_dirty").get<bool>()))
      .bind(6, run.at("build_type").get<std::string>())
      .bind(7, run.at("compiler").get<std::string>())
      .bind(8, run.at("torch_version").get<std::string>())
      .bind(9, run.at("cuda_version").get<std::string>())
      .bind(10, run.at("device").get<std::string>())
      .bind(11, run.at("threads").get<int64_t>())
      .bind(12, run.at("host").get<std::string>())
      .bind(13, run.at("started_at").get<std::string>())
      .bind(14, run.at("seed").get<int64_t>())
      .bind(15, run.at("config").dump());
  ins.step();
  run_id_ = sqlite3_last_insert_rowid(db_);
}

void SqliteStore::end_run() {
  KVB_CHECK(run_id_ > 0 || !pending_run_.is_null(), "end_run() before begin_run()");
  if (run_id_ > 0) {
    Stmt s(db_, "SELECT ended_at IS NULL FROM runs WHERE id = ?");
    KVB_CHECK(s.bind(1, run_id_).step(), "run ", run_id_, " is gone");
    if (s.int_at(0) == 0) return;  // it ended before: its ended_at is kept
  }
  write([&] {
    ensure_run();
    Stmt s(db_, "UPDATE runs SET ended_at = ? WHERE id = ?");
    s.bind(1, now_utc()).bind(2, run_id_).step();
  });
}

void SqliteStore::write(const std::function<void()>& body) {
  if (sqlite3_get_autocommit(db_) == 0)
    body();  // inside transaction()
  else
    transaction(body);
}

void SqliteStore::add_kernel_timing(const KernelTiming& t) {
  write([&] { file_kernel_timing(t); });
}

void SqliteStore::file_kernel_timing(const KernelTiming& t) {
  ensure_run();
  Stmt s(db_,
         "INSERT OR REPLACE INTO kernel_timings (run_id, cell_key, name, shape, device, reps, "
         "median_ms, min_ms, max_ms, bytes_moved, gbps, gflops, roofline_fraction) "
         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  s.bind(1, run_id_)
      .bind(2, t.cell_key)
      .bind(3, t.name)
      .bind(4, t.shape)
      .bind(5, t.device)
      .bind(6, t.reps)
      .bind(7, t.median_ms)
      .bind(8, t.min_ms)
      .bind(9, t.max_ms);
  if (t.bytes_moved)
    s.bind(10, *t.bytes_moved);
  else
    s.bind_null(10);
  bind_optional(s, 11, t.gbps);
  bind_optional(s, 12, t.gflops);
  bind_optional(s, 13, t.roofline_fraction);
  s.step();
}

void SqliteStore::use_run(int64_t id) {
  KVB_INPUT_CHECK(version_ > 0, path_, ": no run ", id);
  Stmt s(db_, "SELECT 1 FROM runs WHERE id = ?");
  KVB_INPUT_CHECK(s.bind(1, id).step(), path_, ": no run ", id);
  run_id_ = id;
  pending_run_ = nullptr;
}

void SqliteStore::transaction(const std::function<void()>& body) {
  const int64_t run_before = run_id_;
  prepare_write();
  exec(db_, "BEGIN IMMEDIATE");
  try {
    body();
    exec(db_, "COMMIT");
  } catch (...) {
    exec(db_, "ROLLBACK");
    run_id_ = run_before;  // a run begun inside is gone with it
    throw;
  }
}

int64_t SqliteStore::intern(const char* select, const char* insert,
                            const std::vector<std::string>& vals) {
  Stmt ins(db_, insert);
  for (size_t i = 0; i < vals.size(); ++i) ins.bind(static_cast<int>(i) + 1, vals[i]);
  ins.step();
  Stmt sel(db_, select);
  for (size_t i = 0; i < 2 && i < vals.size(); ++i) sel.bind(static_cast<int>(i) + 1, vals[i]);
  KVB_CHECK(sel.step(), "interned row missing: ", select);
  return sel.int_at(0);
}

void SqliteStore::write_cell(const json& r) {
  KVB_CHECK(r.is_object() && r.contains("key") && r["key"].is_string(),
            "a cell record needs a string \"key\"");
  KVB_CHECK(run_id_ > 0 || !pending_run_.is_null(), "write_cell() before begin_run()");
  transaction([&] {
    ensure_run();
    const std::string model = r.at("model").get<std::string>();
    const fs::path model_cfg = fs::path(model) / "config.json";
    const int64_t model_id =
        intern("SELECT id FROM models WHERE path = ? AND weights_hash = ?",
               "INSERT OR IGNORE INTO models (path, weights_hash, config) VALUES (?, ?, ?)",
               {model, r.at("model_hash").get<std::string>(),
                fs::exists(model_cfg) ? read_file(model_cfg.string()) : std::string()});
    const int64_t method_id = intern("SELECT id FROM methods WHERE spec = ?",
                                     "INSERT OR IGNORE INTO methods (spec) VALUES (?)",
                                     {r.at("method").get<std::string>()});
    const int64_t dataset_id =
        intern("SELECT id FROM datasets WHERE name = ? AND content_hash = ?",
               "INSERT OR IGNORE INTO datasets (name, content_hash, spec) VALUES (?, ?, ?)",
               {r.at("dataset").get<std::string>(), r.at("dataset_hash").get<std::string>(),
                r.at("dataset_spec").dump()});
    Stmt cell(db_,
              "INSERT INTO cells (run_id, key, suite, model_id, method_id, dataset_id, params, "
              "finished_at, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
    cell.bind(1, run_id_)
        .bind(2, r["key"].get<std::string>())
        .bind(3, r.at("suite").get<std::string>())
        .bind(4, model_id)
        .bind(5, method_id)
        .bind(6, dataset_id)
        .bind(7, r.at("params").dump())
        .bind(8, r.value("finished_at", std::string()))
        .bind(9, r.dump())
        .step();
    const int64_t cell_id = sqlite3_last_insert_rowid(db_);
    const json& m = r.at("metrics");
    Stmt met(db_, "INSERT INTO metrics (cell_id, name, value, se) VALUES (?, ?, ?, ?)");
    for (const auto& [name, v] : m.items()) {
      if (!v.is_number() || name.ends_with("_se")) continue;
      met.reset();
      met.bind(1, cell_id).bind(2, name).bind(3, v.get<double>());
      if (m.contains(name + "_se") && m[name + "_se"].is_number())
        met.bind(4, m[name + "_se"].get<double>());
      else
        met.bind_null(4);
      met.step();
    }
    if (m.contains("memory") && m["memory"].is_object()) {
      const json& mu = m["memory"];
      const int64_t pay = mu.at("payload_bytes").get<int64_t>();
      const int64_t meta = mu.at("metadata_bytes").get<int64_t>();
      const int64_t tokens = mu.at("tokens_seen").get<int64_t>();
      Stmt mem(db_,
               "INSERT INTO memory (cell_id, payload_bytes, metadata_bytes, tokens, "
               "bits_per_token, promised_bytes, read_bytes_per_step) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)");
      mem.bind(1, cell_id)
          .bind(2, pay)
          .bind(3, meta)
          .bind(4, tokens)
          .bind(5, tokens > 0 ? 8.0 * static_cast<double>(pay + meta) / tokens : 0.0);
      if (mu.contains("promised_bytes"))
        mem.bind(6, mu["promised_bytes"].get<int64_t>());
      else
        mem.bind_null(6);
      if (mu.contains("read_bytes_per_step"))
        mem.bind(7, mu["read_bytes_per_step"].get<int64_t>());
      else
        mem.bind_null(7);
      mem.step();
    }
    if (m.contains("timings"))
      for (const json& t : m["timings"])
        file_kernel_timing(kernel_timing_from_json(t, r["key"].get<std::string>()));
    if (m.contains("samples") && m["samples"].is_array()) {
      const json& ss = m["samples"];
      for (size_t i = 0; i < ss.size(); ++i) {
        const json& s = ss[i];
        // niah: one row per grid point; scbench: one row per turn.
        std::vector<std::pair<json, json>> turns;  // (input identity, turn record)
        if (s.contains("turns")) {
          for (size_t t = 0; t < s["turns"].size(); ++t)
            turns.push_back({{{"id", s.value("id", json())},
                              {"turn", t},
                              {"answers", s["turns"][t].value("answers", json())}},
                             s["turns"][t]});
        } else {
          turns.push_back({{{"context_len", s.value("context_len", json())},
                            {"depth", s.value("depth", json())},
                            {"needles", s.value("needles", json())}},
                           s});
        }
        for (size_t t = 0; t < turns.size(); ++t) {
          const json& tr = turns[t].second;
          Stmt row(db_,
                   "INSERT INTO samples (cell_id, idx, turn, input_hash, prediction, score, "
                   "tokens) VALUES (?, ?, ?, ?, ?, ?, ?)");
          row.bind(1, cell_id)
              .bind(2, static_cast<int64_t>(i))
              .bind(3, static_cast<int64_t>(t))
              .bind(4, hex64(fnv1a64(turns[t].first.dump())))
              .bind(5, tr.value("output", std::string()))
              .bind(6, tr.value("score", 0.0));
          if (tr.contains("prompt_tokens"))
            row.bind(7, tr["prompt_tokens"].get<int64_t>());
          else
            row.bind_null(7);
          row.step();
        }
      }
    }
  });
}

namespace {

// Source rows joined to their run in this database by (name, config hash).
constexpr const char* kSrcCells =
    "src.cells sc JOIN src.runs sr ON sr.id = sc.run_id "
    "JOIN main.runs r ON r.name = sr.name AND r.config_hash = sr.config_hash ";
std::string same_record() {
  return std::string("json_remove(c.record, ") + kVolatileRecordPaths +
         ") = json_remove(sc.record, " + kVolatileRecordPaths + ")";
}

}  // namespace

int64_t SqliteStore::merge(const std::string& path, const DbLock* held) {
  std::optional<DbLock> own;
  if (!held) held = &own.emplace(DbLock::shared(path));
  const int src_version = check_results_db(path, held);
  KVB_INPUT_CHECK(src_version > 0, path, ": not a kvbench results database");
  prepare_write();
  // Read-only, and without side files (results/db_file.h): the shared lock keeps writers out.
  std::error_code ec;
  const bool immutable = check_db_file(path).wal && !fs::exists(path + "-wal", ec);
  // What a version-1 file lacks reads as its migration-2 default; a version-2 file's memory rows
  // have no read_bytes_per_step (NULL).
  const bool v1 = src_version < 2;
  const std::string src_cuda = v1 ? "''" : "sr.cuda_version";
  const std::string src_promised = v1 ? "NULL" : "x.promised_bytes";
  const std::string src_read = src_version < 3 ? "NULL" : "x.read_bytes_per_step";
  Stmt attach(db_, "ATTACH DATABASE ? AS src");
  attach.bind(1, sqlite_uri(path, immutable ? "mode=ro&immutable=1" : "mode=ro")).step();
  int64_t added = 0;
  try {
    exec(db_, "BEGIN IMMEDIATE");
    try {
      exec(db_,
           "INSERT OR IGNORE INTO models (path, weights_hash, config) "
           "SELECT path, weights_hash, config FROM src.models ORDER BY id;"
           "INSERT OR IGNORE INTO methods (spec) SELECT spec FROM src.methods ORDER BY id;"
           "INSERT OR IGNORE INTO datasets (name, content_hash, spec) "
           "SELECT name, content_hash, spec FROM src.datasets ORDER BY id;"
           "INSERT OR IGNORE INTO runs (name, config_hash, suite_name, git_commit, git_dirty, "
           "build_type, compiler, torch_version, cuda_version, device, threads, host, "
           "started_at, ended_at, seed, config) SELECT name, config_hash, suite_name, "
           "git_commit, git_dirty, build_type, compiler, torch_version, " +
               src_cuda +
               ", device, threads, host, started_at, ended_at, seed, config FROM src.runs sr "
               "ORDER BY id;");
      Stmt run_conflict(db_, ("SELECT sr.name FROM src.runs sr JOIN main.runs r ON r.name = "
                              "sr.name AND r.config_hash = sr.config_hash WHERE r.git_commit <> "
                              "sr.git_commit OR r.git_dirty <> sr.git_dirty OR r.build_type <> "
                              "sr.build_type OR r.compiler <> sr.compiler OR r.torch_version <> "
                              "sr.torch_version OR r.cuda_version <> " +
                              src_cuda + " OR r.seed <> sr.seed")
                                 .c_str());
      if (run_conflict.step())
        throw InputError(path + ": run '" + run_conflict.text_at(0) +
                         "' was built differently from the same run in " + path_);
      Stmt cell_conflict(db_, (std::string("SELECT sc.key FROM ") + kSrcCells +
                               "JOIN main.cells c ON c.run_id = r.id AND c.key = sc.key "
                               "WHERE NOT (" +
                               same_record() + ")")
                                  .c_str());
      if (cell_conflict.step())
        throw InputError(path + ": cell '" + cell_conflict.text_at(0) +
                         "' differs from the same cell in " + path_);
      exec(db_, std::string("INSERT INTO cells (run_id, key, suite, model_id, method_id, "
                            "dataset_id, params, finished_at, record) "
                            "SELECT r.id, sc.key, sc.suite, m.id, me.id, d.id, sc.params, "
                            "sc.finished_at, sc.record FROM ") +
                    kSrcCells +
                    "JOIN src.models sm ON sm.id = sc.model_id JOIN main.models m ON m.path = "
                    "sm.path AND m.weights_hash = sm.weights_hash "
                    "JOIN src.methods sme ON sme.id = sc.method_id JOIN main.methods me ON "
                    "me.spec = sme.spec "
                    "JOIN src.datasets sd ON sd.id = sc.dataset_id JOIN main.datasets d ON "
                    "d.name = sd.name AND d.content_hash = sd.content_hash "
                    "WHERE NOT EXISTS (SELECT 1 FROM main.cells c WHERE c.run_id = r.id AND "
                    "c.key = sc.key) ORDER BY sc.id");
      added = sqlite3_changes(db_);
      const std::string to_cell = std::string(" FROM ") + kSrcCells +
                                  "JOIN main.cells c ON c.run_id = r.id AND c.key = sc.key ";
      exec(db_,
           "INSERT OR IGNORE INTO samples (cell_id, idx, turn, input_hash, prediction, "
           "score, tokens) SELECT c.id, x.idx, x.turn, x.input_hash, x.prediction, "
           "x.score, x.tokens" +
               to_cell + "JOIN src.samples x ON x.cell_id = sc.id");
      exec(db_,
           "INSERT OR IGNORE INTO metrics (cell_id, name, value, se) "
           "SELECT c.id, x.name, x.value, x.se" +
               to_cell + "JOIN src.metrics x ON x.cell_id = sc.id");
      exec(db_,
           "INSERT OR IGNORE INTO memory (cell_id, payload_bytes, metadata_bytes, tokens, "
           "bits_per_token, promised_bytes, read_bytes_per_step) SELECT c.id, x.payload_bytes, "
           "x.metadata_bytes, x.tokens, x.bits_per_token, " +
               src_promised + ", " + src_read + to_cell +
               "JOIN src.memory x ON x.cell_id = sc.id");
      if (!v1)
        exec(db_,
             "INSERT OR IGNORE INTO kernel_timings (run_id, cell_key, name, shape, device, reps, "
             "median_ms, min_ms, max_ms, bytes_moved, gbps, gflops, roofline_fraction) "
             "SELECT r.id, x.cell_key, x.name, x.shape, x.device, x.reps, x.median_ms, "
             "x.min_ms, x.max_ms, x.bytes_moved, x.gbps, x.gflops, x.roofline_fraction "
             "FROM src.kernel_timings x JOIN src.runs sr ON sr.id = x.run_id "
             "JOIN main.runs r ON r.name = sr.name AND r.config_hash = sr.config_hash "
             "ORDER BY sr.id, x.rowid");
      exec(db_, "COMMIT");
    } catch (...) {
      exec(db_, "ROLLBACK");
      throw;
    }
  } catch (...) {
    exec(db_, "DETACH DATABASE src");
    throw;
  }
  exec(db_, "DETACH DATABASE src");
  return added;
}

std::unique_ptr<ResultStore> open_sqlite_store(const std::string& path) {
  return std::make_unique<SqliteStore>(path);
}

}  // namespace kvb
