#include "suites/config.h"

#include <filesystem>

#include "common/check.h"
#include "common/dtype.h"
#include "common/json_io.h"
#include "datasets/loader.h"
#include "harness/model/config.h"
#include "methods/registry.h"
#include "suites/json_schema.h"
#include "suites/registry.h"

namespace kvb {
namespace fs = std::filesystem;

std::string suite_schema_path() {
  return std::string(KVB_SOURCE_DIR) + "/suites/configs/schema.json";
}

namespace {

std::string join_keys(const std::map<std::string, nlohmann::json>& m) {
  std::string s;
  for (const auto& [k, _] : m) s += (s.empty() ? "" : ", ") + k;
  return s;
}

}  // namespace

SuiteConfig load_suite_config(const std::string& path,
                              const std::vector<std::string>& models_override) {
  const nlohmann::json j = read_json_file(path);
  static const nlohmann::json schema = read_json_file(suite_schema_path());
  if (auto err = validate_json_schema(schema, j)) throw InputError(path + ": " + *err);
  auto fail = [&](const std::string& where, const std::string& what) {
    return InputError(path + ": " + where + ": " + what);
  };

  SuiteConfig c;
  c.path = path;
  c.name = j["name"].get<std::string>();
  c.description = j.value("description", std::string());
  c.seed = j.value("seed", uint64_t{0});
  c.dtype = j.value("dtype", std::string("fp32"));
  c.threads = j.value("threads", 0);
  c.models = j["models"].get<std::vector<std::string>>();
  if (!models_override.empty()) c.models = models_override;
  std::vector<int64_t> max_position;  // of each model; 0 when its config does not say
  for (size_t i = 0; i < c.models.size(); ++i) {
    const std::string where =
        models_override.empty() ? json_path_index("$.models", i) : "--model " + c.models[i];
    const std::string& m = c.models[i];
    if (!fs::is_directory(m))
      throw fail(where, "not a model directory: '" + m +
                            "' (relative paths resolve against the current directory)");
    try {
      max_position.push_back(load_model_config(m).max_position);
    } catch (const InputError& e) {
      throw fail(where, e.what());
    }
    if (!fs::is_regular_file(fs::path(m) / "tokenizer.json"))
      throw fail(where, "'" + m + "' has no tokenizer.json");
  }
  c.methods = j["methods"].get<std::vector<std::string>>();
  for (size_t i = 0; i < c.methods.size(); ++i) {
    try {
      c.canonical.push_back(make_method(c.methods[i], parse_dtype(c.dtype))->spec());
    } catch (const InputError& e) {
      throw fail(json_path_index("$.methods", i), e.what());
    }
    for (size_t k = 0; k < i; ++k)
      if (c.canonical[k] == c.canonical[i])
        throw fail(json_path_index("$.methods", i),
                   "same method as $.methods[" + std::to_string(k) + "] (" + c.canonical[i] + ")");
  }
  for (const auto& [name, spec] : j["datasets"].items()) c.datasets[name] = spec;
  const auto& runs = j["runs"];
  for (size_t r = 0; r < runs.size(); ++r) {
    RunConfig rc;
    rc.where = json_path_index("$.runs", r);
    rc.suite = runs[r]["suite"].get<std::string>();
    const Suite* suite = find_suite(rc.suite);
    if (!suite)
      throw fail(rc.where + ".suite",
                 "unknown suite \"" + rc.suite + "\" (known: " + suite_names() + ")");
    rc.datasets = runs[r]["datasets"].get<std::vector<std::string>>();
    const nlohmann::json params = runs[r].value("params", nlohmann::json::object());
    for (size_t d = 0; d < rc.datasets.size(); ++d) {
      const std::string where = json_path_index(rc.where + ".datasets", d);
      auto it = c.datasets.find(rc.datasets[d]);
      if (it == c.datasets.end())
        throw fail(where, "unknown dataset \"" + rc.datasets[d] +
                              "\" (defined in $.datasets: " + join_keys(c.datasets) + ")");
      const std::string type = it->second["type"].get<std::string>();
      const DatasetKind kind =
          is_text_dataset_type(type) ? DatasetKind::kText : DatasetKind::kSharedContext;
      if (kind != suite->dataset_kind())
        throw fail(where, "dataset \"" + rc.datasets[d] + "\" is " + type + "; the " + rc.suite +
                              " suite needs " + describe_dataset_kind(suite->dataset_kind()));
    }
    try {
      rc.params = suite->canonical_params(params, rc.where + ".params");
    } catch (const InputError& e) {
      throw InputError(path + ": " + e.what());
    }
    // Positions past what the model was trained for, only when the run asks for them.
    if (!rc.params.value("allow_extrapolation", false))
      for (const ContextDemand& d : suite->context_demands(rc.params))
        for (size_t i = 0; i < c.models.size(); ++i)
          if (max_position[i] > 0 && d.positions > max_position[i])
            throw fail(rc.where + ".params." + d.field,
                       std::to_string(d.positions) +
                           " exceeds the model's max_position_embeddings " +
                           std::to_string(max_position[i]) + " (" +
                           (fs::path(c.models[i]) / "config.json").string() +
                           "; set \"allow_extrapolation\": true to run anyway)");
    c.runs.push_back(std::move(rc));
  }
  return c;
}

}  // namespace kvb
