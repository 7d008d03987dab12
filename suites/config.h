// Suite configs (suites/configs/*.json): parsed, validated against suites/configs/schema.json,
// then checked for what a schema cannot say (method specs, dataset references, suite/dataset
// kinds, model directories, templates). Every problem is a kvb::InputError
// "<config file>: <json path>: <problem>", one line, raised before anything is allocated,
// loaded or written.
//
// Input limits (schema.json says the same; the code checks them again where it reads them):
//   the file                 at most 512 MiB, nesting at most 64 deep, no duplicate keys, no
//                            number beyond a double (common/json_reader.h)
//   name                     1 .. 100 characters of [A-Za-z0-9_.-]
//   description              at most 65,536 characters
//   seed                     0 .. 2^63-1
//   threads                  0 .. 256 (kMaxSuiteThreads; 0 = libtorch's default)
//   models                   1 .. 64 paths of at most 4096 characters
//   methods                  1 .. 256 specs of at most 1024 characters (methods/spec.h; each
//                            parameter's range: `kvbench methods`)
//   datasets                 at most 64, names of 1 .. 200 characters (datasets/loader.h: the
//                            limits of each dataset type)
//   runs                     1 .. 256; a run's datasets: 1 .. 64
//   perplexity params        ctx 2 .. 2^20 (kMaxContextTokens); stride, chunk, prefix 1 .. 2^20
//                            (stride <= ctx, prefix <= ctx - 2); max_windows 0 .. 2^20
//   niah params              context_lengths: 1 .. 64 of 16 .. 2^20; depths: 1 .. 1024 in [0, 1]
//                            or {"n": 1 .. 1024}; needles 1 .. 60; digits 1 .. 18;
//                            max_new_tokens 1 .. 4096; chunk 0 .. 2^20; samples_per_cell
//                            1 .. 1024; templates at most 4096 characters; the grid (lengths x
//                            depths x samples_per_cell) at most 65,536 prompts and 2^28 tokens
//   scbench params           max_new_tokens 1 .. 4096; chunk 0 .. 2^20; max_samples 0 .. 2^20
//   every context length     at most the model's max_position_embeddings unless the run sets
//                            "allow_extrapolation"
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kvb {

inline constexpr int64_t kMaxSuiteThreads = 256;
inline constexpr int64_t kMaxContextTokens = int64_t{1} << 20;
inline constexpr size_t kMaxSuiteDatasets = 64;
inline constexpr size_t kMaxDatasetNameChars = 200;

struct RunConfig {
  std::string suite;                  // a name in suite_registry() (suites/registry.h)
  std::vector<std::string> datasets;  // names in SuiteConfig::datasets
  nlohmann::json params;              // canonical: every default filled
  std::string where;                  // "$.runs[i]"
};

struct SuiteConfig {
  std::string path, name, description, dtype = "fp32";
  uint64_t seed = 0;
  int threads = 0;
  std::vector<std::string> models;
  std::vector<std::string> methods;    // as written
  std::vector<std::string> canonical;  // canonical spec of each method
  std::map<std::string, nlohmann::json> datasets;
  std::vector<RunConfig> runs;
};

// Where the schema lives (the source tree's suites/configs/schema.json).
std::string suite_schema_path();

// Reads and checks `path`. Model directories are checked for config.json and tokenizer.json.
// A non-empty `models_override` replaces the config's models (the CLI's --model).
SuiteConfig load_suite_config(const std::string& path,
                              const std::vector<std::string>& models_override = {});

}  // namespace kvb
