// Tokenizers built from Hugging Face tokenizer.json files (model type BPE). load_tokenizer() in
// tokenizer.h reads the files; this builds one from JSON already in memory.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "harness/tokenizer/tokenizer.h"

namespace kvb {

// `tokenizer_json`: a parsed tokenizer.json; `config`: a parsed tokenizer_config.json or JSON
// null. `source` / `config_source` name them in kvb::InputError messages.
std::unique_ptr<Tokenizer> make_hf_tokenizer(const nlohmann::json& tokenizer_json,
                                             const std::string& source,
                                             const nlohmann::json& config = nullptr,
                                             const std::string& config_source = "");

}  // namespace kvb
