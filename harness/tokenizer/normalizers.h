// tokenizer.json "normalizer": NFC, Prepend, Replace and Sequence of them (what byte-level
// Qwen and SentencePiece-style Llama/Mistral files use).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "harness/tokenizer/json_fields.h"

namespace kvb::tok {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites `text` (valid UTF-8) in place.
  virtual void normalize(std::string* text) const = 0;
};

// The normalizer described by `j`; nullptr when absent or null.
// kvb::InputError "<path>: normalizer.type: \"X\" is not supported (...)" for other types.
std::unique_ptr<Normalizer> make_normalizer(const std::optional<JsonNode>& j);

}  // namespace kvb::tok
