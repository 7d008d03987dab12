// tokenizer.json "added_tokens": strings matched in the text before the model sees it
// (leftmost, then longest), each becoming its id directly.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "harness/tokenizer/json_fields.h"

namespace kvb::tok {

class Normalizer;
class PcreRegex;

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;      // dropped by decode(skip_special = true)
  bool single_word = false;  // only matches when not inside a word
  bool lstrip = false;       // swallows the whitespace on its left
  bool rstrip = false;       // swallows the whitespace on its right
  bool normalized = false;   // matched in the normalized text instead of the raw text
  std::string match;         // what is searched for: content, normalized when `normalized`
};

// A piece of text to tokenize (id < 0) or an added token found in the text (id >= 0).
struct TextSegment {
  std::string_view text;
  int32_t id;
};

class AddedVocabulary {
 public:
  AddedVocabulary();
  // Reads the "added_tokens" array (absent or null: none). Tokens with normalized = true are
  // searched for in their normalized form, as HF does (`normalizer` may be null). Ids must lie
  // in [0, kMaxTokenIds) and differ from each other.
  AddedVocabulary(const std::optional<JsonNode>& added_tokens, const Normalizer* normalizer);
  ~AddedVocabulary();
  AddedVocabulary(AddedVocabulary&&) noexcept;
  AddedVocabulary& operator=(AddedVocabulary&&) noexcept;

  // Splits `text` on the added tokens whose `normalized` flag equals `normalized`, appending the
  // segments (views into `text`, none empty) to `out`.
  void split(std::string_view text, bool normalized, std::vector<TextSegment>* out) const;
  bool has_normalized_tokens() const { return has_normalized_; }

  const AddedToken* find_by_id(int32_t id) const;
  std::optional<int32_t> find_by_content(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // Longest token (of the given normalized-ness) that matches at text[pos], or nullptr.
  const AddedToken* longest_match_at(std::string_view text, size_t pos, bool normalized) const;

  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> index_by_id_;  // id -> index into tokens_
  // [normalized ? 1 : 0][first byte] -> token indices, longest first
  std::vector<std::vector<std::vector<size_t>>> by_first_byte_;
  bool has_raw_ = false, has_normalized_ = false;  // any token with normalized false / true
  std::unique_ptr<PcreRegex> word_char_;           // \w, for single_word tokens
};

}  // namespace kvb::tok
