// tokenizer.json "pre_tokenizer": Split (PCRE2 regex or literal), ByteLevel and Sequence of
// them (GPT-2 / Llama-3 / Qwen2/3 byte-level files).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "harness/tokenizer/json_fields.h"

namespace kvb::tok {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits each of `pieces` (valid UTF-8) further and/or rewrites it; empty pieces are dropped.
  virtual void pre_tokenize(std::vector<std::string>* pieces) const = 0;
};

// The pre-tokenizer described by `j` (named `where` in messages); nullptr for JSON null.
// kvb::InputError "<path>: pre_tokenizer.type 'X' is not supported" for other types.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const std::string& where,
                                                 const JsonFields& f);

}  // namespace kvb::tok
