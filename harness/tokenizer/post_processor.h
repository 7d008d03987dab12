// tokenizer.json "post_processor": which special token ids encode(add_special = true) puts
// around a single sequence. TemplateProcessing (Llama-2/3: BOS first), ByteLevel (Qwen: none),
// RobertaProcessing / BertProcessing (cls .. sep) and Sequence of them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "harness/tokenizer/json_fields.h"

namespace kvb::tok {

struct SpecialIds {
  std::vector<int32_t> prefix;  // ids before the text's tokens
  std::vector<int32_t> suffix;  // ids after them
};

// Reads the post-processor `j` (absent or null adds nothing). Special token ids must lie in
// [0, kMaxTokenIds). kvb::InputError "<path>: post_processor.type: \"X\" is not supported (...)"
// for other types.
SpecialIds read_post_processor(const std::optional<JsonNode>& j);

}  // namespace kvb::tok
