// kvbench: benchmark and evaluation harness for KV-cache compression.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <unistd.h>
#endif

#include <c10/util/Exception.h>

#include "cli/bench_kernels_cmd.h"
#include "cli/calibrate_cmd.h"
#include "cli/commands.h"
#include "cli/kv_stats_cmd.h"
#include "cli/methods_cmd.h"
#include "cli/results_cmd.h"
#include "cli/run_cmd.h"
#include "common/check.h"
#include "common/error_text.h"
#include "trainer/trainer.h"

int main(int argc, char** argv) {
#if defined(__linux__)
  // Training alternates OpenMP regions (libtorch's element-wise kernels) with OpenBLAS GEMMs,
  // each with its own worker thread. libgomp's default lets an idle worker spin for a while after
  // each region, so on 2 cores three threads compete: a quarter of the trainer's CPU time was
  // system time, spent by the main thread and the OpenBLAS worker yielding to each other. With
  // OMP_WAIT_POLICY=PASSIVE the workers sleep instead: 20 kvb-ref-s steps at 256 bytes took 19.5 s
  // instead of 32.7 s, 5 at 2048 bytes 16.0 s instead of 20.1 s, with the same losses bitwise. libgomp reads the variable when it is loaded, before main, so
  // `kvbench train` re-executes itself with it set (unless the caller set it). Inference is not
  // changed: there the spinning pays (the quick suite takes 57 s as is, 60 s passive).
  //
  // OpenBLAS also picks its GEMM kernels for the CPU it loads on, and its AVX-512 kernels
  // (SkylakeX) sum in another order than its AVX2 ones (Haswell): the same train.json gave other
  // bits from step 0 on an AVX-512 machine (tests/data/train_tiny's curve differed at steps 0,
  // 11, 16, ...; with OPENBLAS_CORETYPE=Haswell it was reproduced bitwise). So training pins the
  // AVX2 kernels, and ATen's AVX2 paths, on any x86-64 CPU with AVX2 and FMA: a loss curve then
  // reproduces across machines. On an AVX-512 machine this costs speed (a kvb-ref-s step at 256
  // bytes: 0.59 s instead of 0.48 s). A value the caller set is kept.
  if (argc > 1 && std::string(argv[1]) == "train") {
    std::vector<std::pair<const char*, const char*>> env = {{"OMP_WAIT_POLICY", "PASSIVE"}};
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      env.insert(env.end(), {{"OPENBLAS_CORETYPE", "Haswell"}, {"ATEN_CPU_CAPABILITY", "avx2"}});
#endif
    bool set = false;
    for (const auto& [name, value] : env)
      if (std::getenv(name) == nullptr) set |= setenv(name, value, 1) == 0;
    if (set) execv("/proc/self/exe", argv);  // returns only on failure: then train as we are
  }
#endif
  using namespace kvb::cli;
  CLI::App app{"kvbench: benchmark and evaluation harness for KV-cache compression"};
  app.require_subcommand(1);

  GenerateArgs ga;
  auto* gen = app.add_subcommand("generate", "Generate text from a prompt through a KV-cache method");
  gen->add_option("--model", ga.model_dir, "HF model directory")->required();
  gen->add_option("--prompt", ga.prompt, "Prompt text");
  gen->add_option("--prompt-file", ga.prompt_file, "Read the prompt from a file");
  gen->add_option("--max-new-tokens", ga.max_new_tokens, "Tokens to generate")->check(CLI::NonNegativeNumber);
  gen->add_option("--temperature", ga.temperature, "0 = greedy")->check(CLI::NonNegativeNumber);
  gen->add_option("--top-p", ga.top_p, "Nucleus sampling mass")->check(CLI::Range(0.0, 1.0));
  gen->add_option("--seed", ga.seed, "Sampling seed");
  gen->add_option("--method", ga.method, "KV-cache method spec, e.g. 'kivi(bits=2)'");
  gen->add_option("--dtype", ga.dtype, "Compute dtype: fp32, bf16, fp16");
  gen->add_option("--device", ga.device, "cpu or cuda");
  gen->add_option("--prefill-chunk", ga.prefill_chunk, "Prefill in chunks of N tokens (0 = whole prompt)");
  gen->add_option("--dump-logits", ga.dump_logits,
                  "Write float32 [n_positions, vocab] logits, row t after feeding input token t");
  gen->add_flag("--report-memory", ga.report_memory, "Print bytes held per layer (payload, metadata)");
  gen->add_flag("--json", ga.json, "Print one JSON object instead of text");
  gen->add_flag("--completion-only", ga.completion_only, "Print the generated text without the prompt");
  gen->add_option("--threads", ga.threads, "Intra-op threads (0 = libtorch default)");

  TokenizeArgs ta;
  auto* tok = app.add_subcommand("tokenize", "Print the token ids of a text as a JSON array");
  tok->add_option("--tokenizer", ta.tokenizer, "tokenizer.json")->required();
  auto* text_opt = tok->add_option("--text", ta.text, "Text to encode");
  auto* file_opt = tok->add_option("--text-file", ta.text_file, "File to encode");
  text_opt->excludes(file_opt);
  tok->add_flag("--no-special", ta.no_special, "Do not add BOS/EOS");

  std::string info_dir;
  bool info_json = false;
  auto* info = app.add_subcommand("info", "Describe a model directory");
  info->add_option("--model", info_dir, "HF model directory")->required();
  info->add_flag("--json", info_json, "JSON output");

  std::string ck, tk, out;
  auto* imp = app.add_subcommand("import-llama2c", "Convert a llama2.c checkpoint to an HF directory");
  imp->add_option("--checkpoint", ck, "llama2.c .bin")->required();
  imp->add_option("--tokenizer", tk, "llama2.c tokenizer .bin")->required();
  imp->add_option("--out", out, "Output directory")->required();

  MethodsArgs ma;
  std::string describe;
  auto* meth = app.add_subcommand("methods", "List KV-cache methods, or describe one spec's memory");
  meth->add_option("--describe", describe, "Spec to canonicalize and cost, e.g. 'kivi(bits=2)'");
  meth->add_option("--layers", ma.layers, "Model layers (default: SmolLM2-135M's 30)")
      ->check(CLI::Range(1, 1024));
  meth->add_option("--heads", ma.heads, "Query heads (default 9)")->check(CLI::Range(1, 1024));
  meth->add_option("--kv-heads", ma.kv_heads, "KV heads (default 3)")->check(CLI::Range(1, 1024));
  meth->add_option("--head-dim", ma.head_dim, "Head dim (default 64)")->check(CLI::Range(1, 1024));
  // The same limits as config.json's (harness/model/config.h) and a spec's token counts.
  meth->add_option("--tokens", ma.tokens, "Tokens in the cache (default 4096)")
      ->check(CLI::Range(1, 1 << 24));
  meth->add_option("--dtype", ma.dtype, "Compute dtype of the keys/values: fp32, fp16, bf16");
  meth->add_flag("--json", ma.json, "JSON output");

  RunArgs ra;
  auto* run = app.add_subcommand("run", "Run a suite config: models x methods x datasets, resumable");
  run->add_option("--suite", ra.suite, "Suite config JSON (suites/configs/*.json)")->required();
  auto* run_out = run->add_option("--out", ra.out, "Results file (JSON Lines; default out/<suite name>.jsonl)");
  auto* run_db = run->add_option("--db", ra.db, "Results database (SQLite) instead of JSON Lines");
  run_db->excludes(run_out);
  run->add_option("--run-name", ra.run_name, "With --db: a name that makes this a run of its own")
      ->needs(run_db);
  run->add_option("--shard", ra.shard, "Run only shard i/N of the cell list (every N-th cell)");
  run->add_option("--model", ra.models, "Model directory replacing the config's models (repeatable)");
  run->add_option("--max-cells", ra.max_cells, "Stop after computing N cells (0 = all)")->check(CLI::NonNegativeNumber);
  run->add_option("--progress", ra.progress, "auto (a live bar on a terminal), bar or lines");
  run->add_option("--calibration-dir", ra.calibration_dir,
                  "Where calibrating methods (duoattention, razorattention, kvquant) cache their "
                  "artifacts "
                  "(default: calibration/ beside the results file)");

  CalibrateArgs cba;
  auto* cal = app.add_subcommand(
      "calibrate", "Calibrate a method (kvquant's scales and codebooks) on a text; cached, reused");
  cal->add_option("--model", cba.model_dir, "HF model directory")->required();
  cal->add_option("--method", cba.method, "Method spec, e.g. 'kvquant(bits=2)'")->required();
  cal->add_option("--data", cba.data, "Calibration text file (tokenized by the model's tokenizer)")
      ->required();
  cal->add_option("--out", cba.out,
                  "Calibration directory (default out/calibration: kvbench run's default for "
                  "results under out/)");
  cal->add_option("--dtype", cba.dtype, "Compute dtype: fp32, bf16, fp16");

  KVStatsArgs ksa;
  auto* kvs = app.add_subcommand(
      "kv-stats",
      "Per layer and KV head: channel magnitudes of keys (pre/post-RoPE) and values, outlier "
      "channels, attention-sink mass");
  kvs->add_option("--model", ksa.model_dir, "HF model directory")->required();
  kvs->add_option("--text", ksa.text, "Text file (tokenized by the model's tokenizer)")->required();
  kvs->add_option("--max-tokens", ksa.max_tokens, "Feed at most N tokens (default: the context)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  kvs->add_option("--json", ksa.json, "Write every statistic, per channel, as JSON");
  kvs->add_option("--html", ksa.html, "Write a self-contained HTML page (table, SVG per layer)");
  kvs->add_option("--sink-skip", ksa.sink_skip,
                  "Leave queries at positions < N out of the sink mass (default 16)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  kvs->add_option("--outlier-factor", ksa.outlier_factor,
                  "Outlier: channel absmax > F x the head's median channel absmax (default 4)")
      ->check(CLI::Range(1e-6, 1e6));

  RunArgs pa;
  auto* plan = app.add_subcommand("plan", "List a suite config's cells, one key a line");
  plan->add_option("--suite", pa.suite, "Suite config JSON")->required();
  plan->add_option("--model", pa.models, "Model directory replacing the config's models (repeatable)");
  plan->add_option("--shard", pa.shard, "Only shard i/N of the cell list");

  ExportArgs xa;
  auto* exp = app.add_subcommand("export", "Write a results database's cells as CSV or JSON Lines");
  exp->add_option("--db", xa.db, "Results database (SQLite)")->required();
  exp->add_option("--format", xa.format, "csv (one metric a row) or jsonl (one cell a line)")
      ->required()->check(CLI::IsMember({"csv", "jsonl"}));
  exp->add_option("--run", xa.run, "Only this run (id or name)");
  exp->add_option("--table", xa.table, "With csv: metrics (default), memory or kernel_timings")
      ->check(CLI::IsMember({"metrics", "memory", "kernel_timings"}));

  ImportBenchArgs iba;
  auto* ib = app.add_subcommand("import-bench", "File a Google Benchmark JSON file's results as kernel timings");
  ib->add_option("--db", iba.db, "Results database (SQLite; created when absent)")->required();
  ib->add_option("--json", iba.json, "kvbench_bench --benchmark_format=json output")->required();
  ib->add_option("--run", iba.run, "Attach to this existing run (id or name) instead of a new one");

  BenchKernelsArgs bka;
  auto* bk = app.add_subcommand(
      "bench-kernels", "Run the kernel benchmarks for a suite's shapes; file every timing in the results database");
  bk->add_option("--db", bka.db, "Results database (SQLite; created when absent)")->required();
  bk->add_option("--suite", bka.suite, "Kernel suite JSON (shapes, filter, repetitions, threads)");
  bk->add_option("--bench", bka.bench, "The kvbench_bench binary (default: next to kvbench)");

  std::string merge_out;
  std::vector<std::string> merge_in;
  auto* mrg = app.add_subcommand("merge", "Merge results databases into OUT (idempotent)");
  mrg->add_option("out", merge_out, "Database to merge into (created when absent)")->required();
  mrg->add_option("in", merge_in, "Databases to merge")->required();

  ExportArgs lba;
  std::string board_out;
  auto* board = app.add_subcommand(
      "leaderboard", "Write DIR/index.html (tables, charts) and DIR/leaderboard.md of a results database");
  board->add_option("--db", lba.db, "Results database (SQLite)")->required();
  board->add_option("--run", lba.run, "Only this run (id or name)");
  board->add_option("--out", board_out, "Directory to write (created when absent)")->required();

  ExportArgs rpa;
  std::string report_out;
  std::vector<std::string> report_methods;
  auto* rep = app.add_subcommand("report", "Write the leaderboard of chosen methods as one HTML page");
  rep->add_option("--db", rpa.db, "Results database (SQLite)")->required();
  rep->add_option("--run", rpa.run, "Only this run (id or name)");
  rep->add_option("--methods", report_methods, "Only these method specs (default: every method)");
  rep->add_option("--out", report_out, "HTML file to write")->required();

  CompareArgs ca;
  auto* cmp = app.add_subcommand("compare", "Compare two runs of a results database; exit 1 on a regression");
  cmp->add_option("--db", ca.db, "Results database (SQLite)")->required();
  cmp->add_option("--baseline", ca.baseline, "Baseline run: id or name")->required();
  cmp->add_option("--candidate", ca.candidate, "Candidate run: id or name")->required();
  cmp->add_option("--baseline-method", ca.baseline_method, "Compare this spec of the baseline ...");
  cmp->add_option("--candidate-method", ca.candidate_method, "... with this spec of the candidate");
  cmp->add_option("--threshold", ca.threshold, "Changes smaller than this are never regressions")
      ->check(CLI::NonNegativeNumber);
  cmp->add_option("--json", ca.json_out, "Also write the comparison as JSON");

  std::string train_config, train_out;
  kvb::TrainOptions tro;
  auto* trn = app.add_subcommand("train", "Train a reference model on the generated mixture (resumes from its checkpoint)");
  trn->add_option("--config", train_config, "train.json (models/<name>/train.json)")->required();
  trn->add_option("--out", train_out, "Output model directory")->required();
  trn->add_option("--max-steps", tro.max_steps, "Stop after this many steps in all (a checkpoint is kept)");
  trn->add_option("--threads", tro.threads, "Intra-op threads (default: the config's)");
  bool no_eval = false;
  trn->add_flag("--no-eval", no_eval, "Skip the final evaluation");

  int64_t mix_bytes = 2000, mix_seed = 1;
  double mix_depth = -1;
  std::string mix_task, mix_out;
  bool mix_whole = false, mix_kv_by_key = false;
  auto* mix = app.add_subcommand(
      "mixture", "Write one document of the reference models' training mixture (datasets/mixture.h)");
  mix->add_option("--task", mix_task, "needle | passkey | kv | vars | prefix | copy (default: a random mix)");
  mix->add_option("--bytes", mix_bytes, "Document length in bytes")->check(CLI::PositiveNumber);
  mix->add_option("--depth", mix_depth, "Where the task's information sits, 0..1 (default: random)")
      ->check(CLI::Range(0.0, 1.0));
  mix->add_option("--seed", mix_seed, "Document seed");
  mix->add_flag("--whole", mix_whole, "The whole document; default: a prompt that stops before the first answer");
  mix->add_flag("--kv-ask-by-key", mix_kv_by_key,
                "Key-value questions end in \"{key}:\" (train.json mixture \"kv_question\": \"key\")");
  mix->add_option("--out", mix_out, "File to write (default: stdout)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // CLI11's own printer adds a second line ("Run with --help ..."); errors are one line.
    std::fprintf(stderr, "kvbench: error: %s (see --help)\n", kvb::one_line(e.what()).c_str());
    return 2;
  }
  try {
    if (gen->parsed()) return run_generate(ga);
    if (tok->parsed()) {
      ta.text_given = text_opt->count() > 0;
      return run_tokenize(ta);
    }
    if (info->parsed()) return run_info(info_dir, info_json);
    if (imp->parsed()) return run_import_llama2c(ck, tk, out);
    if (meth->parsed()) return run_methods(describe, ma);
    if (run->parsed()) return run_suite(ra);
    if (cal->parsed()) return run_calibrate(cba);
    if (kvs->parsed()) return run_kv_stats(ksa);
    if (cmp->parsed()) return run_compare(ca);
    if (plan->parsed()) return run_plan(pa);
    if (exp->parsed()) return run_export(xa);
    if (ib->parsed()) return run_import_bench(iba);
    if (bk->parsed()) return run_bench_kernels(bka);
    if (mrg->parsed()) return run_merge(merge_out, merge_in);
    if (board->parsed()) return run_leaderboard(lba, board_out);
    if (rep->parsed()) return run_report(rpa, report_methods, report_out);
    if (mix->parsed())
      return run_mixture_doc(mix_task, mix_bytes, mix_depth, static_cast<uint64_t>(mix_seed), mix_whole, mix_kv_by_key, mix_out);
    if (trn->parsed()) {
      tro.eval = !no_eval;
      return kvb::train_model_process_per_phase(train_config, train_out, tro);
    }
  } catch (const kvb::InputError& e) {
    std::fprintf(stderr, "kvbench: error: %s\n", kvb::one_line(e.what()).c_str());
    return 2;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "kvbench: internal error: %s\n",
                 kvb::one_line(e.what_without_backtrace()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvbench: internal error: %s\n", kvb::one_line(e.what()).c_str());
    return 1;
  }
  return 0;
}
