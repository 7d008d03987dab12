// Results databases under bad input and concurrency, through the real binary (results/db_file.h,
// results/results_db.h): every command that takes a database refuses a damaged one with one line
// "<db>: <problem>", exit 2, the file byte-identical (sha256 before and after) and no -wal, -shm
// or -journal left beside it; read-only commands leave a healthy database identical; a run
// refused for its config, its model or the database writes nothing (runs.ended_at included); of
// two writers on one database the second is refused with one line naming the first one's pid.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>
#include <thread>

#include "common/json_io.h"
#include "tests/results_test_util.h"
#include "tests/suite_test_util.h"

namespace kvb {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::q;

std::string sha256(const std::string& path) {
  std::string out;
  if (FILE* p = ::popen(("sha256sum " + q(path) + " 2>/dev/null").c_str(), "r")) {
    char buf[128];
    while (std::fgets(buf, sizeof buf, p)) out += buf;
    ::pclose(p);
  }
  EXPECT_GE(out.size(), 64u) << "sha256sum " << path;
  return out.substr(0, 64);
}

// The -wal, -shm and -journal files in `dir`.
std::set<std::string> side_files(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    for (const char* suffix : {"-wal", "-shm", "-journal"})
      if (n.ends_with(suffix)) out.insert(n);
  }
  return out;
}

// A process started with fork/exec; stdout and stderr go to files.
struct Child {
  pid_t pid = -1;
  std::string out, err;
};

Child spawn(const std::vector<std::string>& args, const std::string& out, const std::string& err) {
  Child c{-1, out, err};
  c.pid = ::fork();
  if (c.pid == 0) {
    if (!std::freopen(out.c_str(), "w", stdout) || !std::freopen(err.c_str(), "w", stderr))
      ::_exit(126);
    std::vector<char*> argv{const_cast<char*>(KVB_BINARY)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(KVB_BINARY, argv.data());
    ::_exit(127);
  }
  return c;
}

int wait_code(const Child& c) {
  int st = 0;
  ::waitpid(c.pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// A minimal `kvbench_bench --benchmark_format=json` output.
json bench_json() {
  return {{"context", {{"date", "2024-06-01T10:00:00+00:00"}, {"host_name", "h"}}},
          {"benchmarks",
           {{{"name", "BM_X/8"},
             {"run_name", "BM_X/8"},
             {"run_type", "iteration"},
             {"repetitions", 1},
             {"iterations", 10},
             {"real_time", 2.0},
             {"cpu_time", 2.0},
             {"time_unit", "ms"}}}}};
}

class ResultsDbSafety : public ::testing::Test {
 protected:
  // One healthy database for the whole suite: a finished run of the small suite (perplexity,
  // NIAH) with two methods.
  static void SetUpTestSuite() {
    shared_ = new test::TempDir();
    write_file(
        shared_->path("suite.json"),
        test::small_suite_config(*shared_, {.methods = {"full", "streaming(sink=2,window=24)"}})
            .dump(2));
    write_file(shared_->path("bench.json"), bench_json().dump());
    const auto r = test::run_kvbench("run --progress lines --suite " + q(cfg()) + " --db " +
                                     q(shared_->path("healthy.db")));
    ASSERT_EQ(r.code, 0) << r.err;
    ASSERT_TRUE(side_files(shared_->path()).empty());
  }
  static void TearDownTestSuite() {
    delete shared_;
    shared_ = nullptr;
  }
  static std::string cfg() { return shared_->path("suite.json"); }
  static std::string healthy() { return shared_->path("healthy.db"); }
  static std::string bench() { return shared_->path("bench.json"); }

  // A copy of the healthy database under this test's directory.
  std::string copy(const std::string& name) {
    const std::string p = dir_.path(name);
    fs::copy_file(healthy(), p, fs::copy_options::overwrite_existing);
    return p;
  }

  // Every command that takes a database, on `db` (merge twice: into it, and from it).
  std::vector<std::string> commands(const std::string& db) const {
    const std::string d = q(db);
    return {"export --db " + d + " --format csv",
            "export --db " + d + " --format jsonl",
            "export --db " + d + " --format csv --table memory",
            "export --db " + d + " --format csv --table kernel_timings",
            "compare --db " + d + " --baseline 1 --candidate 1",
            "leaderboard --db " + d + " --out " + q(dir_.path("board")),
            "report --db " + d + " --out " + q(dir_.path("report.html")),
            "run --progress lines --suite " + q(cfg()) + " --db " + d,
            "import-bench --db " + d + " --json " + q(bench()),
            "merge " + d + " " + q(healthy()),
            "merge " + q(dir_.path("merged.db")) + " " + d};
  }

  // `args` is refused with exit 2 and one line naming `db` and `problem`; the file is
  // byte-identical, no side file appeared beside it, and merge created no OUT.
  void expect_refused(const std::string& args, const std::string& db, const std::string& problem) {
    SCOPED_TRACE(args);
    const std::string before = sha256(db);
    const auto sides = side_files(fs::path(db).parent_path().string());
    const auto r = test::run_kvbench(args);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
    EXPECT_EQ(r.err.rfind("kvbench: error: " + db + ": ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(problem), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
    EXPECT_EQ(sha256(db), before);
    EXPECT_EQ(side_files(fs::path(db).parent_path().string()), sides);
    EXPECT_FALSE(fs::exists(dir_.path("merged.db")));
  }
  void expect_every_command_refused(const std::string& db, const std::string& problem) {
    for (const auto& c : commands(db)) expect_refused(c, db, problem);
  }
  // Three of the commands, starting at the `k`-th (each command starts a process that loads
  // libtorch, about half a second): kinds of damage checked with k = 0, 3, 6, ... go through
  // every command between them.
  void expect_refused_by_three(int k, const std::string& db, const std::string& problem) {
    const auto all = commands(db);
    for (size_t i = 0; i < 3; ++i) expect_refused(all[(k + i) % all.size()], db, problem);
  }

  static test::TempDir* shared_;
  test::TempDir dir_;
};

test::TempDir* ResultsDbSafety::shared_ = nullptr;

TEST_F(ResultsDbSafety, ReadOnlyCommandsLeaveAHealthyDatabaseIdenticalWithNoSideFiles) {
  const std::string db = copy("h.db");
  const std::string before = sha256(db);
  for (const auto& c : commands(db)) {
    if (c.rfind("run ", 0) == 0 || c.rfind("import-bench", 0) == 0 || c.rfind("merge", 0) == 0)
      continue;
    SCOPED_TRACE(c);
    const auto r = test::run_kvbench(c);
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(sha256(db), before);
    EXPECT_TRUE(side_files(dir_.path()).empty());
  }
  // A finished run again computes nothing and writes nothing: its ended_at is kept.
  const std::string ended = test::scalar_text(db, "SELECT ended_at FROM runs WHERE id = 1");
  ASSERT_FALSE(ended.empty());
  const auto again =
      test::run_kvbench("run --progress lines --suite " + q(cfg()) + " --db " + q(db));
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.out.find("0 cells computed"), std::string::npos) << again.out;
  EXPECT_EQ(sha256(db), before);
  EXPECT_TRUE(side_files(dir_.path()).empty());
  // Merging into it what it holds already adds nothing; it is read from without side files.
  const auto m = test::run_kvbench("merge " + q(dir_.path("m.db")) + " " + q(db));
  ASSERT_EQ(m.code, 0) << m.err;
  EXPECT_EQ(sha256(db), before);
  EXPECT_TRUE(side_files(dir_.path()).empty());
}

// A database an earlier kvbench left in WAL mode (no -wal at rest): read immutable under a shared
// lock, nothing created beside it; the next writer puts it back in rollback mode.
TEST_F(ResultsDbSafety, AWalModeDatabaseIsReadWithoutLeavingSideFiles) {
  const std::string db = copy("wal.db");
  test::exec_rw(db, "PRAGMA journal_mode = WAL");
  ASSERT_TRUE(side_files(dir_.path()).empty());
  const std::string before = sha256(db);
  for (const auto& c : commands(db)) {
    if (c.rfind("run ", 0) == 0 || c.rfind("import-bench", 0) == 0 ||
        c.rfind("merge " + q(db), 0) == 0)
      continue;
    SCOPED_TRACE(c);
    const auto r = test::run_kvbench(c);
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(sha256(db), before);
    EXPECT_EQ(side_files(dir_.path()), (std::set<std::string>{}));
  }
  const auto r = test::run_kvbench("import-bench --db " + q(db) + " --json " + q(bench()));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(test::scalar_text(db, "PRAGMA journal_mode"), "delete");
  EXPECT_TRUE(side_files(dir_.path()).empty());
}

TEST_F(ResultsDbSafety, ADatabaseCutShortIsRefusedByEveryCommand) {
  const std::string db = copy("cut.db");
  fs::resize_file(db, fs::file_size(db) - 1);
  expect_every_command_refused(db, "not a whole number of");
  fs::resize_file(db, fs::file_size(db) + 1 - 4096);  // a whole page less
  expect_refused_by_three(7, db, "its header records");
}

TEST_F(ResultsDbSafety, ADamagedPageIsOneLineNotSqlitesReport) {
  const std::string db = copy("page.db");
  std::string bytes = test::slurp(db);
  ASSERT_GE(bytes.size(), 4u * 4096);
  for (size_t i = 2 * 4096; i < 3 * 4096; ++i) bytes[i] = static_cast<char>(i * 7 + 1);
  write_file(db, bytes);
  expect_refused_by_three(0, db, "damaged SQLite database");
}

TEST_F(ResultsDbSafety, OtherFilesAndNewerSchemasAreRefused) {
  int k = 0;
  for (const auto& b : test::bad_databases(dir_, healthy())) {
    expect_refused_by_three(k, b.path, b.problem);
    k += 3;
  }
  // An empty file is a new database to the writers, not one to read.
  const std::string empty = dir_.path("empty.db");
  write_file(empty, "");
  expect_refused_by_three(4, empty, "not a kvbench results database");
}

TEST_F(ResultsDbSafety, ATableOrValueOutOfItsSchemaIsRefused) {
  const std::string no_table = copy("notable.db");
  test::exec_rw(no_table, "DROP TABLE memory");
  expect_refused_by_three(0, no_table, "has table memory, this file does not");
  const std::string text_score = copy("textscore.db");
  test::exec_rw(text_score, "UPDATE samples SET score = 'high' WHERE rowid = 1");
  expect_refused_by_three(3, text_score, "score holds text, not REAL");
  const std::string dangling = copy("dangling.db");
  test::exec_rw(dangling, "UPDATE cells SET method_id = 99 WHERE id = 1");
  expect_refused_by_three(6, dangling, "refers to a missing row of methods");
}

TEST_F(ResultsDbSafety, ADamagedRecordIsOneLineNamingTheDatabaseAndTheCell) {
  struct Damage {
    std::string record, problem;
  };
  const std::string deep = std::string(100, '[') + std::string(100, ']');
  const std::vector<Damage> damages = {
      {R"({"a":)", "cell 1: invalid JSON"},
      {deep, "cell 1: nesting deeper than 64 levels"},
      {R"({"key": "a", "key": "b"})", "cell 1: (top level): duplicate key \"key\""},
      {R"({"key": "k", "suite": "niah"})", "cell 1: model: missing"},
      {"1e999", "cell 1: number overflow parsing '1e999'"},
  };
  int k = 0;
  for (const auto& d : damages) {
    SCOPED_TRACE(d.record.substr(0, 40));
    const std::string db = copy("record.db");
    std::string quoted = "'";
    for (char c : d.record) quoted += c == '\'' ? std::string("''") : std::string(1, c);
    test::exec_rw(db, "UPDATE cells SET record = " + quoted + "' WHERE id = 1");
    const auto all = commands(db);
    for (int i = 0; i < 2; ++i, ++k) expect_refused(all[k % all.size()], db, db + ": " + d.problem);
  }
  // A field of the record carrying control characters: escaped, still one line.
  const std::string db = copy("newline.db");
  test::exec_rw(db,
                "UPDATE cells SET record = json_set(record, '$.dtype', 'fp32' || char(10) || "
                "'kvbench: error: forged line') WHERE id = 1");
  expect_refused_by_three(5, db, "cell 1: dtype: expected one of");
  const auto r = test::run_kvbench("export --db " + q(db) + " --format jsonl");
  EXPECT_NE(r.err.find("fp32\\nkvbench: error: forged line"), std::string::npos) << r.err;
}

// A run refused for its config, its model or the database writes nothing: the file keeps its
// bytes and its runs their ended_at.
TEST_F(ResultsDbSafety, ARefusedRunLeavesTheDatabaseIdentical) {
  const std::string db = copy("run.db");
  const std::string ended = test::scalar_text(db, "SELECT ended_at FROM runs WHERE id = 1");
  ASSERT_FALSE(ended.empty());
  const std::string before = sha256(db);
  json bad = json::parse(test::slurp(cfg()));
  bad["methods"] = {"full", "kivi(bits=3)"};
  write_file(dir_.path("bad_method.json"), bad.dump());
  auto r = test::run_kvbench("run --progress lines --suite " + q(dir_.path("bad_method.json")) +
                             " --db " + q(db));
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(dir_.path("bad_method.json") + ": $.methods[1]"), std::string::npos)
      << r.err;
  EXPECT_EQ(sha256(db), before);
  // A model whose weights are cut short: found when its first cell loads it, before anything
  // was written for the new run.
  const std::string model = dir_.path("m2");
  fs::copy(shared_->path("m"), model);
  const std::string st = model + "/model.safetensors";
  fs::resize_file(st, fs::file_size(st) / 2);
  json cut = json::parse(test::slurp(cfg()));
  cut["models"] = {model};
  write_file(dir_.path("cut_model.json"), cut.dump());
  r = test::run_kvbench("run --progress lines --suite " + q(dir_.path("cut_model.json")) +
                        " --db " + q(db) + " --run-name other");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(st), std::string::npos) << r.err;
  EXPECT_EQ(sha256(db), before);
  EXPECT_TRUE(side_files(dir_.path()).empty());
  // A model without its tokenizer: refused before the database is opened.
  fs::remove(model + "/tokenizer.json");
  r = test::run_kvbench("run --progress lines --suite " + q(dir_.path("cut_model.json")) +
                        " --db " + q(dir_.path("new.db")));
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_FALSE(fs::exists(dir_.path("new.db")));
  // A stored record without what its summary line reads: the run reads it at the end, so it is
  // refused now, before computing anything.
  const std::string no_ppl = copy("noppl.db");
  test::exec_rw(no_ppl,
                "UPDATE cells SET record = json_remove(record, '$.metrics.ppl') WHERE id = "
                "(SELECT min(id) FROM cells WHERE suite = 'perplexity')");
  expect_refused("run --progress lines --suite " + q(cfg()) + " --db " + q(no_ppl), no_ppl,
                 "|prose|");
  r = test::run_kvbench("run --progress lines --suite " + q(cfg()) + " --db " + q(no_ppl));
  EXPECT_NE(r.err.find("\": metrics.ppl: missing"), std::string::npos) << r.err;
  // The database damaged: refused before the run's row or its ended_at is touched.
  test::exec_rw(db, "UPDATE cells SET record = '{' WHERE id = 2");
  expect_refused("run --progress lines --suite " + q(cfg()) + " --db " + q(db), db, "cell 2");
  EXPECT_EQ(test::scalar_text(db, "SELECT ended_at FROM runs WHERE id = 1"), ended);
  EXPECT_EQ(test::scalar(db, "SELECT count(*) FROM runs"), 1);
}

// A process killed in the middle of a rollback-journal write leaves a hot -journal: readers cannot
// read the file until it is rolled back and say so in one line, leaving both files as they are;
// the next writer rolls it back (SQLite's recovery), checks the file and goes on.
TEST_F(ResultsDbSafety, AnInterruptedWriteIsNamedByReadersAndRolledBackByTheNextWriter) {
  const std::string db = copy("hot.db");
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // writes in a transaction, then dies without committing it
    sqlite3* h = nullptr;
    if (sqlite3_open(db.c_str(), &h) != SQLITE_OK ||
        sqlite3_exec(h, "PRAGMA cache_size = 1; BEGIN; UPDATE cells SET record = '{}';", nullptr,
                     nullptr, nullptr) != SQLITE_OK)
      ::_exit(1);
    ::_exit(0);
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  ASSERT_EQ(side_files(dir_.path()), (std::set<std::string>{"hot.db-journal"}));
  expect_refused("export --db " + q(db) + " --format jsonl", db, "a write to it was interrupted");
  const auto r = test::run_kvbench("run --progress lines --suite " + q(cfg()) + " --db " + q(db));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("0 cells computed"), std::string::npos) << r.out;
  EXPECT_TRUE(side_files(dir_.path()).empty());
  EXPECT_EQ(test::scalar(db, "SELECT count(*) FROM cells WHERE record = '{}'"), 0);
}

// Two writers on one database: the one that takes the lock first runs, the other is refused at
// once with one line naming it (or, when the first had finished already, finds its cells done).
// Repeated, as a race must be. Readers during a run read it; other writers are refused too.
TEST_F(ResultsDbSafety, ASecondWriterIsRefusedWithOneLineAndReadersKeepReading) {
  const int64_t cells = test::scalar(healthy(), "SELECT count(*) FROM cells");
  int refused = 0;
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE(round);
    const std::string db = dir_.path("race" + std::to_string(round) + ".db");
    const std::vector<std::string> args = {"run", "--progress", "lines", "--suite",
                                           cfg(), "--db",       db};
    Child a = spawn(args, dir_.path("a.out"), dir_.path("a.err"));
    Child b = spawn(args, dir_.path("b.out"), dir_.path("b.err"));
    const int ca = wait_code(a), cb = wait_code(b);
    const std::string ea = test::slurp(a.err), eb = test::slurp(b.err);
    EXPECT_TRUE((ca == 0 && (cb == 0 || cb == 2)) || (cb == 0 && ca == 2))
        << ca << " " << cb << "\n"
        << ea << "\n"
        << eb;
    for (const auto& [code, err, other] : {std::tuple{ca, ea, b.pid}, std::tuple{cb, eb, a.pid}}) {
      EXPECT_EQ(err.find("internal error"), std::string::npos) << err;
      if (code != 2) continue;
      ++refused;
      EXPECT_EQ(test::count_lines(err), 1) << err;
      EXPECT_EQ(err, "kvbench: error: " + db +
                         ": database is in use by another kvbench process (pid " +
                         std::to_string(other) + "); try again when it has finished\n");
    }
    EXPECT_EQ(test::scalar(db, "SELECT count(*) FROM cells"), cells);
    EXPECT_EQ(test::scalar(db, "SELECT count(*) FROM runs"), 1);
    EXPECT_EQ(test::scalar_text(db, "PRAGMA integrity_check"), "ok");
    EXPECT_TRUE(side_files(dir_.path()).empty());
  }
  EXPECT_GE(refused, 1) << "the two runs never overlapped";

  // While a run writes: readers read (never an internal error), other writers are refused.
  // The run decodes its perplexity windows token by token, which takes a few seconds.
  json slow = json::parse(test::slurp(cfg()));
  slow["methods"] = {"full", "streaming(sink=2,window=24)", "kivi(bits=4)"};
  slow["runs"][0]["params"] = {{"ctx", 256}, {"chunk", 1}, {"max_windows", 8}};
  write_file(dir_.path("slow.json"), slow.dump());
  const std::string db = dir_.path("busy.db");
  Child w = spawn({"run", "--progress", "lines", "--suite", dir_.path("slow.json"), "--db", db},
                  dir_.path("w.out"), dir_.path("w.err"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (test::scalar(db, "SELECT count(*) FROM cells") < 1 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  // Concurrently: a reader, and the two other writers (into it; merging from it).
  Child reader =
      spawn({"export", "--db", db, "--format", "jsonl"}, dir_.path("r.out"), dir_.path("r.err"));
  Child importer = spawn({"import-bench", "--db", db, "--json", bench()}, dir_.path("i.out"),
                         dir_.path("i.err"));
  Child merger =
      spawn({"merge", dir_.path("merged.db"), db}, dir_.path("m.out"), dir_.path("m.err"));
  EXPECT_EQ(wait_code(reader), 0) << test::slurp(reader.err);
  EXPECT_GE(test::count_lines(test::slurp(reader.out)), 1);
  for (const Child& x : {importer, merger}) {
    EXPECT_EQ(wait_code(x), 2) << "the run finished before the other writers started";
    EXPECT_EQ(test::slurp(x.err).find("kvbench: error: " + db +
                                      ": database is in use by another kvbench process (pid " +
                                      std::to_string(w.pid) + ")"),
              0u)
        << test::slurp(x.err);
    EXPECT_EQ(test::count_lines(test::slurp(x.err)), 1);
  }
  EXPECT_FALSE(fs::exists(dir_.path("merged.db")));
  EXPECT_EQ(wait_code(w), 0) << test::slurp(w.err);
  EXPECT_TRUE(side_files(dir_.path()).empty());
}

// A run killed mid-way leaves its -wal and -shm: read-only commands read the cells it finished
// through them, create nothing more and change neither file's neighbour, the database.
TEST_F(ResultsDbSafety, AKilledRunsDatabaseIsReadAsItIs) {
  const std::string db = dir_.path("killed.db");
  Child w = spawn({"run", "--progress", "lines", "--suite", cfg(), "--db", db}, dir_.path("w.out"),
                  dir_.path("w.err"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (test::scalar(db, "SELECT count(*) FROM cells") < 1 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ::kill(w.pid, SIGKILL);
  ASSERT_EQ(wait_code(w), 128 + SIGKILL) << "the run finished before it could be killed";
  const auto sides = side_files(dir_.path());
  const std::string before = sha256(db);
  const auto r = test::run_kvbench("export --db " + q(db) + " --format jsonl");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_GE(test::count_lines(r.out), 1);
  EXPECT_EQ(sha256(db), before);
  EXPECT_EQ(side_files(dir_.path()), sides);
  // The next run resumes it and leaves the file at rest.
  const auto resumed =
      test::run_kvbench("run --progress lines --suite " + q(cfg()) + " --db " + q(db));
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_EQ(test::scalar(db, "SELECT count(*) FROM cells"),
            test::scalar(healthy(), "SELECT count(*) FROM cells"));
  EXPECT_TRUE(side_files(dir_.path()).empty());
}

}  // namespace
}  // namespace kvb
