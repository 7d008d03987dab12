// Suite configs (suites/configs/*.json): parsed, validated against suites/configs/schema.json,
// then checked for what a schema cannot say (method specs, dataset references, suite/dataset
// kinds, model directories, templates). Every problem is a kvb::InputError
// "<config file>: <json path>: <problem>".
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kvb {

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
