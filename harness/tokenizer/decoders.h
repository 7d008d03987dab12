// tokenizer.json "decoder": ByteLevel (GPT-2 / Llama-3 / Qwen) and the SentencePiece-style chain
// Replace, ByteFallback, Fuse, Strip; Sequence of them. Each works on the list of token strings
// (HF's decode_chain) and the decoded text is the concatenation of what is left.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "harness/tokenizer/json_fields.h"

namespace kvb::tok {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>* tokens) const = 0;
};

// The decoder described by `j`; nullptr when absent or null.
// kvb::InputError "<path>: decoder.type: \"X\" is not supported (...)" for other types.
std::unique_ptr<Decoder> make_decoder(const std::optional<JsonNode>& j);

}  // namespace kvb::tok
