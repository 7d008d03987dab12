// Subcommands over results databases and suite plans:
//
// `kvbench plan --suite FILE [--model DIR]... [--shard i/N]`: the cell keys, one a line.
// `kvbench export --db DB --format csv|jsonl [--run RUN] [--table metrics|memory|kernel_timings]`:
// jsonl is one cell record a line (with "run_id" and "run_name" added); csv is, by --table, one
// metric a row (the default): run_id, run_name, suite, model, method, dataset, metric, value, se;
// one cell's memory a row: run_id, run_name, suite, model, method, dataset, payload_bytes,
// metadata_bytes, tokens, bits_per_token, promised_bytes; or one kernel timing a row: run_id,
// run_name, cell_key, name, shape, device, reps, median_ms, min_ms, max_ms, bytes_moved, gbps,
// gflops, roofline_fraction (empty where NULL).
// `kvbench import-bench --db DB --json FILE [--run RUN]`: files each benchmark of a Google
// Benchmark JSON file (results/bench_import.h) as a kernel timing of run RUN (an id or a name of
// DB), or else of a run of its own: provenance of this build, host from the file's context,
// suite_name "bench", config the file's "context" (so the same file again is the same run and
// its timings are replaced, not added). One transaction; bad input: exit 2, nothing written.
// `kvbench merge OUT IN...`: copies every run and cell of IN into OUT (see SqliteStore::merge).
// `kvbench leaderboard --db DB --out DIR [--run RUN]`: DIR/index.html and DIR/leaderboard.md
// (results/leaderboard.h).
// `kvbench report --db DB [--run RUN] [--methods SPEC...] --out FILE.html`: the same page for the
// chosen methods (every method when none is given).
//
// `kvbench compare --db DB --baseline RUN --candidate RUN [--baseline-method SPEC
// --candidate-method SPEC] [--threshold X] [--json FILE]`
//
// Matches the two runs' cells by (suite, model weights hash, method spec, dataset content hash,
// suite parameters); with --baseline-method/--candidate-method, those two specs' cells are matched
// to each other instead (spec left out of the match). RUN is a run id or a run name.
//
// Per cell: niah and scbench compare per-sample scores (paired by sample, turn and input hash)
// with a seeded paired bootstrap (1000 resamples) of the mean difference; a regression is a 95%
// interval entirely below -threshold. Perplexity compares the mean NLL (interval from the
// recorded standard errors; regression when entirely above +threshold) and the KL divergence from
// the full-cache reference (deterministic; regression when it grew by more than threshold).
// Markdown on stdout; exit 1 when anything regressed, 0 otherwise. The statistics are
// results/compare.h's; which metrics and which test, each suite's compare_rules().
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/run_cmd.h"
#include "results/bench_import.h"

namespace kvb::cli {

struct CompareArgs {
  std::string db, baseline, candidate, baseline_method, candidate_method, json_out;
  double threshold = 0.0;
};

int run_compare(const CompareArgs& a);

struct ExportArgs {
  std::string db, format, run, table = "metrics";
};

struct ImportBenchArgs {
  std::string db, json, run;
};

int run_plan(const RunArgs& a);
int run_export(const ExportArgs& a);
int run_import_bench(const ImportBenchArgs& a);
// Files b's timings into db in one transaction: into run `attach` (an id or a name of db) when
// given, else into a new run with this build's provenance, suite_name `suite_name`, config
// `config` (its hash the run's config_hash) and the file context's host and date. Returns the
// run's id. kvb::InputError before anything is written when `attach` names no run.
int64_t file_bench_import(const std::string& db, const BenchImport& b, const std::string& attach,
                          const std::string& suite_name, const nlohmann::json& config);
int run_merge(const std::string& out, const std::vector<std::string>& in);
int run_leaderboard(const ExportArgs& a, const std::string& out_dir);
int run_report(const ExportArgs& a, const std::vector<std::string>& methods,
               const std::string& out);

}  // namespace kvb::cli
