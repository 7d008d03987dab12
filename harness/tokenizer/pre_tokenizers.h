// tokenizer.json "pre_tokenizer": Split (PCRE2 regex or literal), ByteLevel and Sequence of
// them (GPT-2 / Llama-3 / Qwen2/3 byte-level files).
#pragma once

#include <memory>
#include <optional>
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

// The pre-tokenizer described by `j`; nullptr when absent or null.
// kvb::InputError "<path>: pre_tokenizer.type: \"X\" is not supported (...)" for other types.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const std::optional<JsonNode>& j);

}  // namespace kvb::tok
