#include "suites/config.h"

#include <filesystem>
#include <limits>

#include "common/check.h"
#include "common/dtype.h"
#include "common/error_text.h"
#include "common/json_reader.h"
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
  return one_line(s, 300);
}

}  // namespace

SuiteConfig load_suite_config(const std::string& path,
                              const std::vector<std::string>& models_override) {
  const nlohmann::json j = read_json_input(path);
  static const nlohmann::json schema = read_json_input(suite_schema_path());
  if (auto err = validate_json_schema(schema, j)) throw InputError(path + ": " + *err);
  auto fail = [&](const std::string& where, const std::string& what) {
    return InputError(path + ": " + where + ": " + what);
  };
  // The schema has checked types and ranges; the typed reads check them again (so that nothing
  // here depends on the schema file being complete) and name the same paths.
  const JsonNode root(j, path, "$");

  SuiteConfig c;
  c.path = path;
  c.name = root.at("name").str();
  c.description = root.str("description", "");
  c.seed = static_cast<uint64_t>(root.integer("seed", 0, 0, std::numeric_limits<int64_t>::max()));
  c.dtype = root.has("dtype") ? root.at("dtype").choice({"fp32", "bf16", "fp16"}) : "fp32";
  c.threads = root.int32("threads", 0, 0, static_cast<int>(kMaxSuiteThreads));
  c.models = root.at("models").strings();
  if (!models_override.empty()) c.models = models_override;
  std::vector<int64_t> max_position;  // of each model; 0 when its config does not say
  for (size_t i = 0; i < c.models.size(); ++i) {
    const std::string where = models_override.empty() ? json_path_index("$.models", i)
                                                      : "--model " + one_line(c.models[i], 200);
    const std::string& m = c.models[i];
    if (!fs::is_directory(m))
      throw fail(where, "not a model directory: '" + one_line(m, 200) + "'" +
                            " (relative paths resolve against the current directory)");
    try {
      max_position.push_back(load_model_config(m).max_position);
    } catch (const InputError& e) {
      throw fail(where, e.what());
    }
    if (!fs::is_regular_file(fs::path(m) / "tokenizer.json"))
      throw fail(where, "'" + one_line(m, 200) + "' has no tokenizer.json");
  }
  c.methods = root.at("methods").strings();
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
  const JsonNode datasets = root.at("datasets");
  if (datasets.size() > kMaxSuiteDatasets)
    throw fail("$.datasets", std::to_string(datasets.size()) + " datasets, more than the " +
                                 std::to_string(kMaxSuiteDatasets) + " a config may define");
  for (const auto& [name, spec] : datasets.members()) {
    if (name.empty() || name.size() > kMaxDatasetNameChars)
      throw fail(
          json_path_key("$.datasets", name),
          "a dataset name must have 1 to " + std::to_string(kMaxDatasetNameChars) + " characters");
    // Every size of the dataset within its limits before anything is generated or read.
    check_dataset_spec(JsonNode(spec.raw(), path, json_path_key("$.datasets", name)));
    c.datasets[name] = spec.raw();
  }
  const std::vector<JsonNode> runs = root.at("runs").items();
  for (size_t r = 0; r < runs.size(); ++r) {
    RunConfig rc;
    rc.where = json_path_index("$.runs", r);
    const JsonNode run(runs[r].raw(), path, rc.where);
    rc.suite = run.at("suite").str();
    const Suite* suite = find_suite(rc.suite);
    if (!suite)
      throw fail(rc.where + ".suite",
                 "unknown suite " + quote_input(rc.suite) + " (known: " + suite_names() + ")");
    rc.datasets = run.at("datasets").strings();
    const nlohmann::json params =
        run.has("params") ? run.at("params").object().raw() : nlohmann::json::object();
    for (size_t d = 0; d < rc.datasets.size(); ++d) {
      const std::string where = json_path_index(rc.where + ".datasets", d);
      auto it = c.datasets.find(rc.datasets[d]);
      if (it == c.datasets.end())
        throw fail(where, "unknown dataset " + quote_input(rc.datasets[d]) +
                              " (defined in $.datasets: " + join_keys(c.datasets) + ")");
      const std::string type =
          JsonNode(it->second, path, json_path_key("$.datasets", it->first)).at("type").str();
      const DatasetKind kind =
          is_text_dataset_type(type) ? DatasetKind::kText : DatasetKind::kSharedContext;
      if (kind != suite->dataset_kind())
        throw fail(where, "dataset " + quote_input(rc.datasets[d]) + " is " + type + "; the " +
                              rc.suite + " suite needs " +
                              describe_dataset_kind(suite->dataset_kind()));
    }
    try {
      rc.params = suite->canonical_params(params, rc.where + ".params");
    } catch (const InputError& e) {
      throw InputError(path + ": " + e.what());
    }
    // Positions past what the model was trained for, only when the run asks for them.
    if (!JsonNode(rc.params, path, rc.where + ".params").boolean("allow_extrapolation", false))
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
