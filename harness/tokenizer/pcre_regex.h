// A PCRE2 regular expression compiled for UTF-8 with Unicode properties (PCRE2_UTF | PCRE2_UCP),
// JIT-compiled when the library supports it. Used for tokenizer.json Split / Replace patterns.
#pragma once

#include <cstddef>
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
  // left to right. After an empty match the search resumes one character later.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

  // Whether the regex matches at the very start of `text`.
  bool matches_at_start(std::string_view text) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*
};

}  // namespace kvb::tok
