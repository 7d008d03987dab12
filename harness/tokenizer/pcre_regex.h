// A PCRE2 regular expression compiled for UTF-8 with Unicode properties (PCRE2_UTF | PCRE2_UCP),
// JIT-compiled when the library supports it. Used for tokenizer.json Split / Replace patterns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvb::tok {

class PcreRegex {
 public:
  // `literal`: match `pattern` as plain text (tokenizer.json {"String": ...} patterns).
  // Throws kvb::InputError "<context>: cannot compile regex ...: <reason>" on a bad pattern.
  PcreRegex(const std::string& pattern, bool literal, const std::string& context);
  ~PcreRegex();
  PcreRegex(const PcreRegex&) = delete;
  PcreRegex& operator=(const PcreRegex&) = delete;

  // Byte ranges [begin, end) of the successive non-overlapping matches in `text` (valid UTF-8),
  // left to right. After an empty match the search resumes one character later, so the search
  // always advances. A match that needs more than kMatchLimit backtracking steps (a pattern
  // like (a*)*b on a long run) is kvb::InputError "<context>: ...", not a hang.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

  // Whether the regex matches at the very start of `text`.
  bool matches_at_start(std::string_view text) const;

  static constexpr uint32_t kMatchLimit = 1'000'000;

 private:
  // One pcre2_match call; returns its code after turning resource-limit errors into InputError.
  int match(std::string_view text, size_t start, uint32_t options, void* match_data) const;

  void* code_ = nullptr;     // pcre2_code_8*
  void* context_ = nullptr;  // pcre2_match_context_8*: the match limit
  std::string where_;        // for messages
};

}  // namespace kvb::tok
