// tokenizer.json "normalizer": NFC, Prepend, Replace and Sequence of them (what byte-level
// Qwen and SentencePiece-style Llama/Mistral files use).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "harness/tokenizer/json_fields.h"

namespace kvb::tok {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites `text` (valid UTF-8) in place.
  virtual void normalize(std::string* text) const = 0;
};

// The normalizer described by `j` (named `where` in messages); nullptr for JSON null.
// kvb::InputError "<path>: normalizer.type 'X' is not supported" for other types.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& where,
                                            const JsonFields& f);

}  // namespace kvb::tok
