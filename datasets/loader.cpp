#include "datasets/loader.h"

#include "datasets/prose.h"
#include "datasets/rng.h"
#include "datasets/text.h"
#include "common/check.h"

namespace kvb {

bool is_text_dataset_type(const std::string& t) {
  return t == "text" || t == "wikitext2" || t == "text_dir" || t == "prose";
}

Dataset load_dataset(const nlohmann::json& spec, uint64_t seed) {
  Dataset d;
  d.type = spec.at("type").get<std::string>();
  d.is_text = is_text_dataset_type(d.type);
  const uint64_t s = derive_seed(seed, spec.dump());
  auto num = [&](const char* k, int64_t def) { return spec.value(k, def); };
  if (d.type == "text")
    d.text = load_text_file(spec.at("path").get<std::string>());
  else if (d.type == "wikitext2")
    d.text = load_wikitext2(spec.at("path").get<std::string>());
  else if (d.type == "text_dir")
    d.text = load_text_dir(spec.at("path").get<std::string>());
  else if (d.type == "prose")
    d.text = generate_prose(num("words", 20000), s);
  else if (d.type == "scbench_kv")
    d.task = generate_kv_retrieval(num("samples", 1), num("pairs", 100), num("turns", 2), s);
  else if (d.type == "scbench_prefix_suffix")
    d.task = generate_prefix_suffix(num("samples", 1), num("strings", 200), num("turns", 2), s);
  else if (d.type == "scbench_vt")
    d.task = generate_variable_tracing(num("samples", 1), num("chains", 4), num("hops", 4),
                                       num("noise_sentences", 100), num("turns", 2), s);
  else if (d.type == "scbench_math_find")
    d.task = generate_math_find(num("samples", 1), num("numbers", 200), num("turns", 2), s);
  else if (d.type == "scbench_icl")
    d.task = generate_icl_classification(num("samples", 1), num("shots", 64), num("classes", 4),
                                         num("turns", 2), s);
  else if (d.type == "mixture")
    d.task = generate_mixture_task(num("samples", 1), num("bytes", 2000), num("turns", 2),
                                   spec.value("tasks", std::vector<std::string>{"passkey", "kv"}), s);
  else if (d.type == "scbench_jsonl")
    d.task = load_scbench_jsonl(spec.at("path").get<std::string>(),
                                parse_sc_metric(spec.at("metric").get<std::string>()),
                                num("max_samples", 0));
  else
    throw InputError("unknown dataset type '" + d.type + "'");
  if (d.is_text && spec.contains("max_chars")) {
    const size_t m = spec["max_chars"].get<size_t>();
    if (d.text.size() >
        m) {  // cut at the last whitespace within the limit (never inside a character)
      size_t cut = d.text.find_last_of(" \n", m);
      d.text.resize(cut == std::string::npos || cut == 0 ? m : cut);
    }
  }
  return d;
}

}  // namespace kvb
