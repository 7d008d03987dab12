#include "datasets/loader.h"

#include <optional>
#include <vector>

#include "common/check.h"
#include "common/error_text.h"
#include "datasets/prose.h"
#include "datasets/rng.h"
#include "datasets/text.h"

namespace kvb {
namespace {

// A dataset spec read with every range checked (the limits table in datasets/loader.h).
struct DatasetSpec {
  std::string type, path, metric;
  std::optional<int64_t> max_chars;
  int64_t words = 20000;
  int64_t samples = 1, turns = 2;
  int64_t size = 0;  // pairs, strings, numbers or shots
  int64_t chains = 4, hops = 4, noise = 100, classes = 4;
  int64_t bytes = 2000;
  std::vector<std::string> tasks{"passkey", "kv"};
  int64_t max_samples = 0;
};

std::string read_path(const JsonNode& n) {
  const JsonNode p = n.at("path");
  const std::string s = p.str();
  if (s.empty() || static_cast<int64_t>(s.size()) > kMaxDatasetPathChars)
    p.expected("a path of 1 to " + std::to_string(kMaxDatasetPathChars) + " characters");
  return s;
}

DatasetSpec read_spec(const JsonNode& n) {
  n.object();
  DatasetSpec d;
  d.type = n.at("type").choice({"text", "wikitext2", "text_dir", "prose", "scbench_kv",
                                "scbench_prefix_suffix", "scbench_vt", "scbench_math_find",
                                "scbench_icl", "scbench_jsonl", "mixture"});
  auto samples_turns = [&](int64_t max_turns) {
    d.samples = n.integer("samples", 1, 1, kMaxDatasetSamples);
    d.turns = n.integer("turns", 2, 1, max_turns);
  };
  // samples x size within kMaxTaskItems.
  auto sized = [&](const char* key, int64_t fallback) {
    d.size = n.integer(key, fallback, 1, kMaxTaskSize);
    if (d.samples * d.size > kMaxTaskItems)
      n.fail("samples x " + std::string(key) + " = " + std::to_string(d.samples * d.size) +
             " is more than the " + std::to_string(kMaxTaskItems) + " a dataset may generate");
  };
  if (is_text_dataset_type(d.type) && d.type != "prose") {
    n.only_keys({"type", "path", "max_chars"});
    d.path = read_path(n);
    if (auto m = n.find("max_chars")) d.max_chars = m->integer(1, kMaxMaxChars);
  } else if (d.type == "prose") {
    n.only_keys({"type", "words"});
    d.words = n.integer("words", 20000, 1, kMaxProseWords);
  } else if (d.type == "scbench_kv") {
    n.only_keys({"type", "samples", "turns", "pairs"});
    samples_turns(kMaxDatasetTurns);
    sized("pairs", 100);
  } else if (d.type == "scbench_prefix_suffix") {
    n.only_keys({"type", "samples", "turns", "strings"});
    samples_turns(kMaxDatasetTurns);
    sized("strings", 200);
  } else if (d.type == "scbench_math_find") {
    n.only_keys({"type", "samples", "turns", "numbers"});
    samples_turns(kMaxDatasetTurns);
    sized("numbers", 200);
  } else if (d.type == "scbench_icl") {
    n.only_keys({"type", "samples", "turns", "shots", "classes"});
    samples_turns(kMaxDatasetTurns);
    sized("shots", 64);
    d.classes = n.integer("classes", 4, 2, 20);
  } else if (d.type == "scbench_vt") {
    n.only_keys({"type", "samples", "turns", "chains", "hops", "noise_sentences"});
    samples_turns(kMaxDatasetTurns);
    d.chains = n.integer("chains", 4, 1, kMaxVtChains);
    d.hops = n.integer("hops", 4, 1, kMaxVtHops);
    d.noise = n.integer("noise_sentences", 100, 0, kMaxVtNoise);
    const int64_t vars = d.chains * (d.hops + 1);
    if (vars > kMaxVtVariables)
      n.fail("chains x (hops + 1) = " + std::to_string(vars) + " variables, more than the " +
             std::to_string(kMaxVtVariables) + " a sample may have");
    if (d.samples * (d.noise + vars) > kMaxTaskItems)
      n.fail("samples x (noise_sentences + chains x (hops + 1)) = " +
             std::to_string(d.samples * (d.noise + vars)) + " lines, more than the " +
             std::to_string(kMaxTaskItems) + " a dataset may generate");
  } else if (d.type == "mixture") {
    n.only_keys({"type", "samples", "turns", "bytes", "tasks"});
    samples_turns(kMaxMixtureTurns);
    d.bytes = n.integer("bytes", 2000, 64, kMaxMixtureBytes);
    if (d.samples * d.bytes > kMaxMixtureTotalBytes)
      n.fail("samples x bytes = " + std::to_string(d.samples * d.bytes) + " bytes, more than the " +
             std::to_string(kMaxMixtureTotalBytes) + " a dataset may generate");
    if (auto t = n.find("tasks")) {
      d.tasks.clear();
      for (const JsonNode& item : t->items()) {
        const std::string name = item.choice({"needle", "passkey", "kv", "vars", "prefix"});
        for (const auto& seen : d.tasks)
          if (seen == name) item.fail("task " + quote_input(name) + " listed twice");
        d.tasks.push_back(name);
      }
      if (d.tasks.empty()) t->expected("a non-empty array of task names");
    }
  } else {  // scbench_jsonl
    n.only_keys({"type", "path", "metric", "max_samples"});
    d.path = read_path(n);
    d.metric = n.at("metric").choice({"substring", "string_match_all", "first_int"});
    d.max_samples = n.integer("max_samples", 0, 1, kMaxJsonlSamples);
  }
  return d;
}

}  // namespace

bool is_text_dataset_type(const std::string& t) {
  return t == "text" || t == "wikitext2" || t == "text_dir" || t == "prose";
}

void check_dataset_spec(const JsonNode& spec) { read_spec(spec); }

Dataset load_dataset(const nlohmann::json& spec, uint64_t seed) {
  const DatasetSpec p = read_spec(JsonNode(spec, "dataset"));
  Dataset d;
  d.type = p.type;
  d.is_text = is_text_dataset_type(d.type);
  const uint64_t s = derive_seed(seed, spec.dump());
  if (d.type == "text")
    d.text = load_text_file(p.path);
  else if (d.type == "wikitext2")
    d.text = load_wikitext2(p.path);
  else if (d.type == "text_dir")
    d.text = load_text_dir(p.path);
  else if (d.type == "prose")
    d.text = generate_prose(p.words, s);
  else if (d.type == "scbench_kv")
    d.task = generate_kv_retrieval(p.samples, p.size, p.turns, s);
  else if (d.type == "scbench_prefix_suffix")
    d.task = generate_prefix_suffix(p.samples, p.size, p.turns, s);
  else if (d.type == "scbench_vt")
    d.task = generate_variable_tracing(p.samples, p.chains, p.hops, p.noise, p.turns, s);
  else if (d.type == "scbench_math_find")
    d.task = generate_math_find(p.samples, p.size, p.turns, s);
  else if (d.type == "scbench_icl")
    d.task = generate_icl_classification(p.samples, p.size, p.classes, p.turns, s);
  else if (d.type == "mixture")
    d.task = generate_mixture_task(p.samples, p.bytes, p.turns, p.tasks, s);
  else  // scbench_jsonl
    d.task = load_scbench_jsonl(p.path, parse_sc_metric(p.metric), p.max_samples);
  if (d.is_text && p.max_chars) {
    const size_t m = static_cast<size_t>(*p.max_chars);
    if (d.text.size() >
        m) {  // cut at the last whitespace within the limit (never inside a character)
      size_t cut = d.text.find_last_of(" \n", m);
      d.text.resize(cut == std::string::npos || cut == 0 ? m : cut);
    }
  }
  return d;
}

}  // namespace kvb
