// Datasets named in suite configs: {"type": ..., fields} objects (see suites/configs/schema.json)
// loaded or generated into text (perplexity, needle haystacks) or shared-context tasks.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "datasets/scbench.h"

namespace kvb {

struct Dataset {
  std::string type;  // the config's "type"
  bool is_text = false;
  std::string text;  // is_text
  ScTask task;       // otherwise
};

bool is_text_dataset_type(const std::string& type);

// Loads or generates `spec` (schema-validated). Generators are seeded from `seed` and the spec,
// so the same spec and seed give the same data. Relative paths resolve against the current
// directory; max_chars cuts text at the last whitespace within the limit. kvb::InputError from
// the loaders ("<file>: <problem>").
Dataset load_dataset(const nlohmann::json& spec, uint64_t seed);

}  // namespace kvb
