#include "cli/results_cmd.h"

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/check.h"
#include "common/error_text.h"
#include "common/hash.h"
#include "common/json_io.h"
#include "common/time.h"
#include "harness/provenance.h"
#include "methods/registry.h"
#include "results/bench_import.h"
#include "suites/cell_record.h"
#include "results/compare.h"
#include "results/db_file.h"
#include "results/leaderboard.h"
#include "results/results_db.h"
#include "results/sqlite_store.h"
#include "suites/runner.h"

namespace kvb::cli {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

}  // namespace

int run_compare(const CompareArgs& a) {
  KVB_INPUT_CHECK(a.baseline_method.empty() == a.candidate_method.empty(),
                  "--baseline-method and --candidate-method: give both or neither");
  KVB_INPUT_CHECK(a.threshold >= 0, "--threshold: must be >= 0");
  // A bad spec is refused before the database is read; cells match it in their own dtype
  // (load_compare_cells), so the spec goes on as written.
  for (const std::string* spec : {&a.baseline_method, &a.candidate_method})
    if (!spec->empty()) make_method(*spec);
  const ResultsDb db(a.db);
  const std::string base_id = db.resolve_run(a.baseline), cand_id = db.resolve_run(a.candidate);
  const Comparison cmp =
      compare_cells(load_compare_cells(db, base_id, a.baseline_method),
                    load_compare_cells(db, cand_id, a.candidate_method), a.threshold);
  const std::vector<CompareRow>& rows = cmp.rows;
  KVB_INPUT_CHECK(!rows.empty() || cmp.not_applicable > 0, a.db, ": runs '", a.baseline, "' and '",
                  a.candidate, "' have no cells in common");
  size_t regressed = 0;
  std::cout
      << "| suite | model | dataset | method | metric | baseline | candidate | Δ | 95% CI of Δ "
         "| verdict |\n|---|---|---|---|---|---|---|---|---|---|\n";
  json out = json::array();
  for (const CompareRow& r : rows) {
    regressed += r.regressed;
    std::cout << "| " << r.suite << " | " << r.model << " | " << r.dataset << " | " << r.method
              << " | " << r.metric << " | " << fmt(r.base) << " | " << fmt(r.cand) << " | "
              << fmt(r.cand - r.base) << " | [" << fmt(r.ci.lo) << ", " << fmt(r.ci.hi) << "] | "
              << (r.regressed ? "**REGRESSED**" : "ok") << " |\n";
    out.push_back({{"suite", r.suite},
                   {"model", r.model},
                   {"dataset", r.dataset},
                   {"method", r.method},
                   {"metric", r.metric},
                   {"baseline", r.base},
                   {"candidate", r.cand},
                   {"ci", {r.ci.lo, r.ci.hi}},
                   {"regressed", r.regressed}});
  }
  std::cout << "\n" << rows.size() << " comparisons, " << regressed << " regressed";
  if (cmp.unmatched) std::cout << ", " << cmp.unmatched << " candidate cells without a baseline";
  if (cmp.not_applicable)
    std::cout << ", " << cmp.not_applicable << " pairs not compared (a cell not applicable)";
  std::cout << "\n";
  if (!a.json_out.empty())
    write_file(a.json_out, json{{"baseline", base_id},
                                {"candidate", cand_id},
                                {"threshold", a.threshold},
                                {"rows", out},
                                {"regressed", regressed}}
                                   .dump(2) +
                               "\n");
  return regressed ? 1 : 0;
}

int run_plan(const RunArgs& a) {
  SuiteRunOptions o;
  o.config_path = a.suite;
  o.models = a.models;
  if (!a.shard.empty()) parse_shard(a.shard, o.shard_index, o.shard_count);
  for (const auto& k : plan_suite_file(o)) std::cout << k << "\n";
  return 0;
}

namespace {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string r = "\"";
  for (char c : s) r += c == '"' ? std::string("\"\"") : std::string(1, c);
  return r + "\"";
}

}  // namespace

int run_export(const ExportArgs& a) {
  KVB_INPUT_CHECK(a.table == "metrics" || a.format == "csv", "--table ", a.table,
                  ": only with --format csv (jsonl writes whole cell records)");
  const ResultsDb db(a.db);
  const std::string run = a.run.empty() ? "" : db.resolve_run(a.run);
  const std::string where = run.empty() ? "" : " WHERE c.run_id = ?";
  const std::vector<std::string> args =
      run.empty() ? std::vector<std::string>{} : std::vector<std::string>{run};
  if (a.format == "jsonl") {
    for (auto& r : db.query("SELECT c.id, c.run_id, r.name, c.record FROM cells c JOIN runs r ON "
                            "r.id = c.run_id" +
                                where + " ORDER BY c.run_id, c.id",
                            args)) {
      json rec = parse_cell_record(r[3], db.path() + ": cell " + r[0]);
      rec["run_id"] = std::stoll(r[1]);
      rec["run_name"] = r[2];
      std::cout << rec.dump() << "\n";
    }
    return 0;
  }
  std::string header, sql;
  const std::string cell_joins =
      " JOIN cells c ON c.id = x.cell_id JOIN runs r ON r.id = c.run_id "
      "JOIN models m ON m.id = c.model_id JOIN methods me ON me.id = c.method_id "
      "JOIN datasets d ON d.id = c.dataset_id";
  if (a.table == "metrics") {
    header = "run_id,run_name,suite,model,method,dataset,metric,value,se";
    sql = "SELECT c.run_id, r.name, c.suite, m.path, me.spec, d.name, x.name, x.value, x.se "
          "FROM metrics x" +
          cell_joins + where + " ORDER BY c.run_id, c.id, x.name";
  } else if (a.table == "memory") {
    header =
        "run_id,run_name,suite,model,method,dataset,payload_bytes,metadata_bytes,tokens,"
        "bits_per_token,promised_bytes,read_bytes_per_step";
    sql = std::string("SELECT c.run_id, r.name, c.suite, m.path, me.spec, d.name, "
                      "x.payload_bytes, x.metadata_bytes, x.tokens, x.bits_per_token, ") +
          (db.version() >= 2 ? "x.promised_bytes" : "NULL") + ", " +
          (db.version() >= 3 ? "x.read_bytes_per_step" : "NULL") + " FROM memory x" + cell_joins +
          where + " ORDER BY c.run_id, c.id";
  } else {
    KVB_INPUT_CHECK(a.table == "kernel_timings", "--table ", a.table,
                    ": not one of metrics, memory, kernel_timings");
    header =
        "run_id,run_name,cell_key,name,shape,device,reps,median_ms,min_ms,max_ms,bytes_moved,"
        "gbps,gflops,roofline_fraction";
    sql = "SELECT x.run_id, r.name, x.cell_key, x.name, x.shape, x.device, x.reps, x.median_ms, "
          "x.min_ms, x.max_ms, x.bytes_moved, x.gbps, x.gflops, x.roofline_fraction FROM "
          "kernel_timings x JOIN runs r ON r.id = x.run_id" +
          (run.empty() ? std::string() : " WHERE x.run_id = ?") +
          " ORDER BY x.run_id, x.rowid";
  }
  std::cout << header << "\n";
  if (a.table == "kernel_timings" && db.version() < 2) return 0;  // version 1 had no timings
  for (auto& r : db.query(sql, args)) {
    for (size_t i = 0; i < r.size(); ++i) std::cout << (i ? "," : "") << csv_field(r[i]);
    std::cout << "\n";
  }
  return 0;
}

int64_t file_bench_import(const std::string& db, const BenchImport& b, const std::string& attach,
                          const std::string& suite_name, const json& config) {
  // A run to attach to is only in a database that exists: none is created for it.
  KVB_INPUT_CHECK(attach.empty() || fs::exists(db), db, ": no such file");
  DbLock lock = DbLock::exclusive(db);  // then the checks, then the first write
  int64_t attach_to = 0;
  if (!attach.empty()) attach_to = std::stoll(ResultsDb(db, &lock).resolve_run(attach));
  SqliteStore store(std::move(lock));
  store.transaction([&] {
    if (attach_to > 0) {
      store.use_run(attach_to);
    } else {
      json run = run_provenance();
      if (b.context.contains("host_name") && b.context["host_name"].is_string())
        run["host"] = b.context["host_name"];
      for (const KernelTiming& t : b.timings)
        if (t.device != "cpu") run["device"] = t.device;
      run["name"] = "";
      char hash[17];
      std::snprintf(hash, sizeof hash, "%016llx",
                    static_cast<unsigned long long>(fnv1a64(config.dump())));
      run["config_hash"] = std::string(hash);
      run["suite_name"] = suite_name;
      run["seed"] = 0;
      run["config"] = config;
      run["started_at"] = b.context.contains("date") && b.context["date"].is_string()
                              ? b.context["date"].get<std::string>()
                              : now_utc();
      store.begin_run(run);
    }
    for (const KernelTiming& t : b.timings) store.add_kernel_timing(t);
    if (attach_to == 0) store.end_run();
  });
  return store.run_id();
}

int run_import_bench(const ImportBenchArgs& a) {
  // Everything is checked before the database is opened for writing.
  const BenchImport b = read_benchmark_json(a.json);
  const int64_t run_id = file_bench_import(a.db, b, a.run, "bench", b.context);
  std::cout << a.db << ": " << b.timings.size() << " kernel timings from " << a.json
            << " in run " << run_id;
  if (b.skipped) std::cout << " (" << b.skipped << " benchmarks with errors skipped)";
  std::cout << "\n";
  return 0;
}

int run_merge(const std::string& out, const std::vector<std::string>& in) {
  for (const auto& p : in) {
    KVB_INPUT_CHECK(fs::exists(p), p, ": no such file");
    KVB_INPUT_CHECK(!fs::exists(out) || !fs::equivalent(p, out), p,
                    ": is the database being merged into");
  }
  // The inputs must not change while they are read (a shard still being run is refused), and
  // OUT has one writer. Every check is made before anything is written; OUT, when absent, is
  // created only then.
  std::vector<DbLock> in_locks;
  for (const auto& p : in) in_locks.push_back(DbLock::shared(p));
  const bool out_existed = fs::exists(out);
  DbLock out_lock = DbLock::exclusive(out);
  try {
    // Each file checked (results/results_db.h), then the conflicts among the inputs and with
    // OUT: a cell whose record differs, a run built differently (as SqliteStore::merge()
    // refuses them, which would be after OUT was created or other inputs merged).
    std::map<std::string, std::pair<std::string, std::string>> seen;  // cell -> (record, file)
    std::map<std::string, std::pair<std::string, std::string>> runs;  // run -> (build, file)
    std::vector<std::pair<std::string, const DbLock*>> files;
    if (out_existed && check_results_db(out, &out_lock) > 0) files.push_back({out, &out_lock});
    for (size_t i = 0; i < in.size(); ++i) files.push_back({in[i], &in_locks[i]});
    for (const auto& [p, held] : files) {
      const ResultsDb db(p, held);
      const std::string cuda = db.version() >= 2 ? "cuda_version" : "''";
      for (auto& r : db.query("SELECT name, config_hash, json_array(git_commit, git_dirty, "
                              "build_type, compiler, torch_version, " +
                              cuda + ", seed) FROM runs")) {
        auto [it, fresh] = runs.try_emplace(r[0] + "|" + r[1], r[2], p);
        KVB_INPUT_CHECK(fresh || it->second.first == r[2], p, ": run '", one_line(r[0], 200),
                        "' was built differently from the same run in ", it->second.second);
      }
      const std::string sql = std::string("SELECT r.name, r.config_hash, c.key, json_remove(") +
                              "c.record, " + kVolatileRecordPaths +
                              ") FROM cells c JOIN runs r ON r.id = c.run_id";
      for (auto& r : db.query(sql)) {
        const std::string id = r[0] + "|" + r[1] + "|" + r[2];
        auto [it, fresh] = seen.try_emplace(id, r[3], p);
        KVB_INPUT_CHECK(fresh || it->second.first == r[3], p, ": cell '", one_line(r[2], 200),
                        "' differs from the same cell in ", it->second.second);
      }
    }
  } catch (...) {
    std::error_code ec;
    if (out_lock.created() && fs::file_size(out, ec) == 0 && !ec) fs::remove(out, ec);
    throw;
  }
  SqliteStore store(std::move(out_lock));
  int64_t added = 0;
  for (size_t i = 0; i < in.size(); ++i) added += store.merge(in[i], &in_locks[i]);
  std::cout << out << ": " << added << " cells added from " << in.size() << " databases\n";
  return 0;
}

int run_leaderboard(const ExportArgs& a, const std::string& out_dir) {
  const LeaderboardPages p = render_leaderboard({a.db, a.run, {}});
  KVB_INPUT_CHECK(!fs::exists(out_dir) || fs::is_directory(out_dir), out_dir,
                  ": exists and is not a directory");
  fs::create_directories(out_dir);
  const std::string html = (fs::path(out_dir) / "index.html").string();
  const std::string md = (fs::path(out_dir) / "leaderboard.md").string();
  write_file(html, p.html);
  write_file(md, p.markdown);
  std::cout << html << "\n" << md << "\n";
  return 0;
}

int run_report(const ExportArgs& a, const std::vector<std::string>& methods,
               const std::string& out) {
  write_file(out, render_leaderboard({a.db, a.run, methods}).html);
  std::cout << out << "\n";
  return 0;
}

}  // namespace kvb::cli
