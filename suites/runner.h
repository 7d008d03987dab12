// Runs a suite config: the cross product models x runs x datasets x methods, one cell each,
// every finished cell written to the result store at once. Cells already in the store (same
// key) are skipped, so an interrupted run resumes where it stopped. A shard (i/N) takes every
// N-th cell of the list, starting at the i-th.
//
// Cell key: "<suite>|<model path as given>|<canonical method spec>|<dataset name>|<hash>" where
// the hash (FNV-1a 64, hex) covers the dataset's spec, the run's parameters with defaults
// filled, the seed and the dtype.
//
// Before a cell runs, its method calibrates on the cell's model (KVMethod::calibrate with
// harness/engine/calibration.h's context; artifacts cached under SuiteRunOptions::
// calibration_dir, so only the first cell of a (model, method) computes one). A cell whose
// method used artifacts names them in its record: "calibration": [{"stage", "path", "hash"}]
// (the stage's canonical spec, the artifact file, FNV-1a 64 of its bytes). Methods that
// calibrate on text (kvquant) get the built-in calibration text (default_calibration_ids), not
// the suite's own data: calibrating on the evaluated text would leak it into the method.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "suites/cell_store.h"

namespace kvb {

struct SuiteRunOptions {
  std::string config_path;
  std::string out_path;             // "" = out/<suite name>.jsonl
  std::string db_path;              // SQLite results database; replaces out_path when set
  std::string run_name;             // with db_path: runs of one config with distinct names coexist
  std::vector<std::string> models;  // replaces the config's models when non-empty
  int64_t max_cells = 0;            // stop after computing this many cells (0 = all)
  int tty = -1;                     // progress style: -1 detect, 0 plain lines, 1 live bar
  int shard_index = 1, shard_count = 1;  // run only cells p with p % count == index - 1
  // Where calibrating methods (duoattention, razorattention: KVMethod::calibrate) cache their
  // artifacts, keyed by model hash and spec; "" = "calibration" beside the results file.
  std::string calibration_dir;
};

class Tokenizer;

// The calibration text `kvbench run` gives methods that calibrate on text: 2000 words of the
// built-in generated prose (datasets/prose.h, seed kDefaultCalibrationSeed) tokenized by the
// model's tokenizer, its first min(2048, max_position) tokens. `kvbench calibrate --data FILE`
// calibrates on a text of one's own instead (another calibration hash, another artifact).
inline constexpr uint64_t kDefaultCalibrationSeed = 0x6b7671756e74ULL;
inline constexpr const char* kDefaultCalibrationSource = "builtin prose (2000 words, seed 0x6b7671756e74)";
std::vector<int64_t> default_calibration_ids(const Tokenizer& tok, int64_t max_position);

// "i/N" -> index i, count N; kvb::InputError unless 1 <= i <= N.
void parse_shard(const std::string& text, int& index, int& count);

// The keys of the cells a run with `opt` would compute or skip, in run order (shard applied).
std::vector<std::string> plan_suite_file(const SuiteRunOptions& opt);

struct SuiteRunSummary {
  std::string out_path;
  int64_t cells = 0, skipped = 0, ran = 0;
  std::vector<nlohmann::json>
      records;  // of every cell of the config (earlier runs included), in order
};

// Opens the store a run writes to (`path`: opt.db_path, or the JSON Lines file); called once the
// config and every dataset have passed their checks.
using StoreOpener = std::function<std::unique_ptr<ResultStore>(const std::string& path)>;

// Config and datasets are validated before the store is opened; kvb::InputError on bad input.
SuiteRunSummary run_suite_file(const SuiteRunOptions& opt, const StoreOpener& open_store,
                               std::FILE* progress_out);

// A fixed-width table: suite, dataset, method, the headline metric and its companions.
std::string summary_table(const std::vector<nlohmann::json>& records);

}  // namespace kvb
