// UTF-8 helpers shared by the tokenizers. Strings are UTF-8 byte strings throughout.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kvb::tok::utf8 {

// Decodes the code point that starts at byte `pos` of `s` (which must be valid UTF-8 there) and
// returns it; *len receives its length in bytes (1..4).
char32_t decode_at(std::string_view s, size_t pos, size_t* len);

// Appends the UTF-8 encoding of `cp` to `out`.
void append(std::string* out, char32_t cp);

// Length in bytes of the maximal valid UTF-8 prefix of `s`.
size_t valid_prefix_length(std::string_view s);

inline bool is_valid(std::string_view s) { return valid_prefix_length(s) == s.size(); }

// `bytes` with every invalid sequence replaced by U+FFFD, exactly as Rust's
// String::from_utf8_lossy does (one U+FFFD per maximal invalid subpart, as Unicode recommends).
std::string to_valid_lossy(std::string_view bytes);

// The Unicode White_Space property (what Rust's char::is_whitespace tests).
bool is_white_space(char32_t cp);

}  // namespace kvb::tok::utf8
