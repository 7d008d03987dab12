#include "suites/runner.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include "common/check.h"
#include "common/dtype.h"
#include "common/error_text.h"
#include "common/hash.h"
#include "common/json_io.h"
#include "common/json_reader.h"
#include "common/time.h"
#include "datasets/loader.h"
#include "datasets/prose.h"
#include "harness/engine/calibration.h"
#include "harness/model/model.h"
#include "harness/provenance.h"
#include "harness/tokenizer/tokenizer.h"
#include "methods/registry.h"
#include "suites/cell_record.h"
#include "suites/config.h"
#include "suites/progress.h"
#include "suites/registry.h"

namespace kvb {
namespace fs = std::filesystem;

namespace {

struct Cell {
  size_t model, run, dataset, method;
  std::string key;
};

// The suite of a run or a record; load_suite_config() has checked the name.
const Suite& suite_of(const std::string& name) {
  const Suite* s = find_suite(name);
  KVB_CHECK(s != nullptr, "no suite '", name, "'");
  return *s;
}

std::string headline(const nlohmann::json& r) {
  const Suite* s = find_suite(r["suite"].get<std::string>());
  return s ? cell_summary(*s, r["metrics"]) : "(a suite this build does not know)";
}

// Every cell of the config in run order; with shard_count > 1 only those at positions
// p with p % shard_count == shard_index - 1.
std::vector<Cell> plan(const SuiteConfig& cfg, int shard_index, int shard_count) {
  std::vector<Cell> cells;
  int64_t n = 0;
  for (size_t mi = 0; mi < cfg.models.size(); ++mi)
    for (size_t ri = 0; ri < cfg.runs.size(); ++ri)
      for (size_t di = 0; di < cfg.runs[ri].datasets.size(); ++di)
        for (size_t k = 0; k < cfg.canonical.size(); ++k) {
          const RunConfig& run = cfg.runs[ri];
          const std::string& ds = run.datasets[di];
          const nlohmann::json h{{"dataset", cfg.datasets.at(ds)},
                                 {"params", run.params},
                                 {"seed", cfg.seed},
                                 {"dtype", cfg.dtype}};
          if (shard_count > 1 && n++ % shard_count != shard_index - 1) continue;
          cells.push_back({mi, ri, di, k,
                           run.suite + "|" + cfg.models[mi] + "|" + cfg.canonical[k] + "|" + ds +
                               "|" + hex64(fnv1a64(h.dump()))});
        }
  return cells;
}

}  // namespace

std::string summary_table(const std::vector<nlohmann::json>& records) {
  // Runs of one suite on one dataset with other params (perplexity in decode and in prefill
  // mode) are told apart by those params, as the leaderboard's sections are.
  std::map<std::string, std::vector<const nlohmann::json*>> params_of;  // by "suite|dataset"
  for (const auto& r : records) {
    auto& v = params_of[r["suite"].get<std::string>() + "|" + r["dataset"].get<std::string>()];
    if (std::none_of(v.begin(), v.end(), [&](const auto* p) { return *p == r["params"]; }))
      v.push_back(&r["params"]);
  }
  std::vector<std::vector<std::string>> rows{{"suite", "model", "dataset", "method", "result"}};
  for (const auto& r : records) {
    std::string dataset = r["dataset"].get<std::string>();
    const auto& runs = params_of[r["suite"].get<std::string>() + "|" + dataset];
    std::vector<const nlohmann::json*> others;
    for (const auto* p : runs)
      if (*p != r["params"]) others.push_back(p);
    if (!others.empty()) dataset += " (" + params_label(r["params"], others) + ")";
    rows.push_back({r["suite"].get<std::string>(),
                    fs::path(r["model"].get<std::string>()).filename().string(), dataset,
                    r["method"].get<std::string>(), headline(r)});
  }
  std::vector<size_t> w(5, 0);
  for (const auto& row : rows)
    for (size_t i = 0; i < 4; ++i) w[i] = std::max(w[i], row[i].size());
  std::string out;
  for (size_t k = 0; k < rows.size(); ++k) {
    for (size_t i = 0; i < 5; ++i) {
      out += rows[k][i];
      if (i < 4) out += std::string(w[i] - rows[k][i].size() + 2, ' ');
    }
    out += "\n";
    if (k == 0) out += std::string(w[0] + w[1] + w[2] + w[3] + 8 + 6, '-') + "\n";
  }
  return out;
}

void parse_shard(const std::string& text, int& index, int& count) {
  const auto slash = text.find('/');
  bool ok = slash != std::string::npos && slash > 0 && slash + 1 < text.size() &&
            text.find('/', slash + 1) == std::string::npos &&
            text.find_first_not_of("0123456789/") == std::string::npos && slash < 6 &&
            text.size() - slash < 7;
  if (ok) {
    index = std::stoi(text.substr(0, slash));
    count = std::stoi(text.substr(slash + 1));
    ok = count >= 1 && index >= 1 && index <= count;
  }
  KVB_INPUT_CHECK(ok, "--shard '", text, "': expected i/N with 1 <= i <= N");
}

std::vector<std::string> plan_suite_file(const SuiteRunOptions& opt) {
  const SuiteConfig cfg = load_suite_config(opt.config_path, opt.models);
  std::vector<std::string> keys;
  for (const Cell& c : plan(cfg, opt.shard_index, opt.shard_count)) keys.push_back(c.key);
  return keys;
}

SuiteRunSummary run_suite_file(const SuiteRunOptions& opt, const StoreOpener& open_store,
                               std::FILE* progress_out) {
  const SuiteConfig cfg = load_suite_config(opt.config_path, opt.models);
  // Datasets first: a broken one fails the run before anything is written.
  std::map<std::string, Dataset> data;
  for (const auto& run : cfg.runs)
    for (const auto& name : run.datasets) {
      if (data.count(name)) continue;
      try {
        data[name] = load_dataset(cfg.datasets.at(name), cfg.seed);
      } catch (const InputError& e) {
        throw InputError(cfg.path + ": $.datasets." + name + ": " + e.what());
      }
    }
  // Every model's tokenizer too (load_suite_config read their config.json): a broken one fails
  // the run now, not after the cells of the models before it.
  std::vector<std::unique_ptr<Tokenizer>> tokenizers;
  for (const std::string& m : cfg.models)
    tokenizers.push_back(load_tokenizer((fs::path(m) / "tokenizer.json").string()));
  SuiteRunSummary sum;
  if (!opt.db_path.empty())
    sum.out_path = opt.db_path;
  else
    sum.out_path = opt.out_path.empty() ? "out/" + cfg.name + ".jsonl" : opt.out_path;
  // Opening checks the store (a database: its writer lock, then every check of
  // results/results_db.h) and writes nothing; nothing is written before the first finished
  // cell, and a run whose cells were all finished before writes nothing at all.
  std::unique_ptr<ResultStore> store = open_store(sum.out_path);
  const std::string calibration_dir =
      !opt.calibration_dir.empty()
          ? opt.calibration_dir
          : (fs::path(sum.out_path).parent_path() / "calibration").string();
  if (cfg.threads > 0) at::set_num_threads(cfg.threads);
  {
    nlohmann::json config = read_json_input(cfg.path);  // the JSON layer, as load_suite_config
    config["models"] = cfg.models;
    nlohmann::json run = run_provenance();
    run["name"] = opt.run_name;
    run["config_hash"] = hex64(fnv1a64(config.dump()));
    run["suite_name"] = cfg.name;
    run["seed"] = cfg.seed;
    run["config"] = config;
    run["started_at"] = now_utc();
    store->begin_run(run);
  }
  std::map<std::string, std::string> model_hash;  // by model path, computed when first needed
  std::map<std::string, std::vector<int64_t>> calibration_ids;  // by model path, likewise

  const std::vector<Cell> cells = plan(cfg, opt.shard_index, opt.shard_count);
  sum.cells = static_cast<int64_t>(cells.size());
  {
    // The records stored before for this run's cells (it resumes) are read at the end for the
    // summary table: checked now, before anything is computed or written.
    std::set<std::string> planned;
    for (const Cell& c : cells) planned.insert(c.key);
    for (const auto& r : store->cells()) {
      const std::string key = r["key"].get<std::string>();  // every store checks it is a string
      if (!planned.count(key)) continue;
      const std::string source = store->path() + ": cell " + quote_input(key);
      check_cell_record(r, source);
      try {
        headline(r);
      } catch (const InputError& e) {
        throw InputError(source + ": " + e.what());
      }
    }
  }
  Progress prog(sum.cells, progress_out, opt.tty);

  std::unique_ptr<Model> model;
  const Tokenizer* tok = nullptr;
  size_t model_idx = static_cast<size_t>(-1);
  // By run/dataset, prepared when first needed and shared by every method (one model at a time).
  std::map<std::string, std::unique_ptr<PreparedRun>> prepared;
  for (const Cell& c : cells) {
    const RunConfig& run = cfg.runs[c.run];
    const Suite& suite = suite_of(run.suite);
    const std::string& ds = run.datasets[c.dataset];
    const std::string label = run.suite + " | " +
                              fs::path(cfg.models[c.model]).filename().string() + " | " +
                              cfg.canonical[c.method] + " | " + ds;
    if (store->has_cell(c.key)) {
      prog.skip_cell(label);
      ++sum.skipped;
      continue;
    }
    if (opt.max_cells > 0 && sum.ran >= opt.max_cells) break;
    prog.start_cell(label);
    if (model_idx != c.model) {
      prepared.clear();  // it refers to the model and tokenizer replaced here
      model = std::make_unique<Model>(Model::load(cfg.models[c.model], parse_dtype(cfg.dtype)));
      tok = tokenizers[c.model].get();
      model_idx = c.model;
      if (!model_hash.count(cfg.models[c.model]))
        model_hash[cfg.models[c.model]] = model_weights_hash(cfg.models[c.model]);
    }
    const auto method = make_method(cfg.methods[c.method], parse_dtype(cfg.dtype));
    const std::string prep_key = std::to_string(c.run) + "/" + ds;
    auto on_progress = [&](double f) { prog.update(f); };
    CellResult result;
    try {
      auto& prep = prepared[prep_key];
      if (!prep)
        prep =
            suite.prepare({*model, *tok, data.at(ds), run.params, run.where + ".params", cfg.seed});
      auto& cal_ids = calibration_ids[cfg.models[c.model]];
      if (cal_ids.empty()) cal_ids = default_calibration_ids(*tok, model->shape().max_position);
      method->calibrate(make_calibration_context(*model, model_hash.at(cfg.models[c.model]),
                                                 calibration_dir, cal_ids,
                                                 kDefaultCalibrationSource));
      result = prep->run_cell(*method, on_progress);
    } catch (const InputError& e) {
      throw InputError(cfg.path + ": " + run.where + " (" + ds + ", " + cfg.methods[c.method] +
                       "): " + e.what());
    }
    nlohmann::json& metrics = result.metrics;
    // What the method promised for the tokens its state had seen, next to what it held.
    if (metrics.contains("memory"))
      if (const auto promise = method->promised_memory(
              model->shape(), metrics["memory"]["tokens_seen"].get<int64_t>(),
              parse_dtype(cfg.dtype), metrics["memory"].value("prompt_tokens", int64_t{-1})))
        metrics["memory"]["promised_bytes"] = promise->payload_bytes + promise->metadata_bytes;
    nlohmann::json rec{
        {"key", c.key},
        {"suite", run.suite},
        {"config", cfg.path},
        {"suite_name", cfg.name},
        {"model", cfg.models[c.model]},
        {"model_hash", model_hash.at(cfg.models[c.model])},
        {"method", cfg.canonical[c.method]},
        {"method_spec", cfg.methods[c.method]},
        // The parameters really used on this model's shape (int's group capped at head_dim).
        {"method_effective", method->effective_spec(model->shape())},
        {"dataset", ds},
        {"dataset_spec", cfg.datasets.at(ds)},
        {"dataset_hash", dataset_content_hash(cfg.datasets.at(ds), static_cast<int64_t>(cfg.seed))},
        {"params", run.params},
        {"seed", cfg.seed},
        {"dtype", cfg.dtype},
        {"finished_at", now_utc()}};
    if (!result.protocol.is_null()) rec["protocol"] = result.protocol;
    // The calibration artifacts the method used (head roles): file and content hash.
    for (const CalibrationArtifact& a : method->calibration_artifacts())
      rec["calibration"].push_back(
          nlohmann::json{{"stage", a.stage}, {"path", a.path}, {"hash", a.hash}});
    rec["metrics"] = metrics;
    store->write_cell(rec);
    ++sum.ran;
    prog.finish_cell(label + "  " + headline(rec));
  }
  prog.done();
  if (sum.ran + sum.skipped == sum.cells) store->end_run();
  std::map<std::string, nlohmann::json> by_key;
  for (auto& r : store->cells()) {
    const std::string k = r["key"].get<std::string>();
    by_key[k] = std::move(r);
  }
  for (const Cell& c : cells)
    if (auto it = by_key.find(c.key); it != by_key.end()) sum.records.push_back(it->second);
  return sum;
}

std::vector<int64_t> default_calibration_ids(const Tokenizer& tok, int64_t max_position) {
  const int64_t cap = max_position > 0 ? std::min<int64_t>(2048, max_position) : 2048;
  std::vector<int64_t> ids;
  for (int32_t id : tok.encode(generate_prose(2000, kDefaultCalibrationSeed))) {
    if (static_cast<int64_t>(ids.size()) == cap) break;
    ids.push_back(id);
  }
  return ids;
}

}  // namespace kvb
