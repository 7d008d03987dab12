// GPT-2's byte-level alphabet: every byte 0..255 is shown as one printable code point, so that a
// byte-level BPE vocabulary is made of ordinary UTF-8 strings ("Ġ" is the byte 0x20).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvb::tok::byte_level {

// `bytes` with every byte replaced by the UTF-8 encoding of its alphabet code point.
std::string encode(std::string_view bytes);

// The inverse of encode for one token string: appends its bytes to `out` and returns true when
// every code point of `token` belongs to the alphabet; otherwise appends nothing, returns false.
bool decode_token(std::string_view token, std::string* out);

// HF's ByteLevel decoder: each token decoded with decode_token (a token outside the alphabet,
// e.g. an added token, contributes its own bytes), all joined, then made valid UTF-8 the way
// Rust's String::from_utf8_lossy does.
std::string decode_tokens(const std::vector<std::string>& tokens);

}  // namespace kvb::tok::byte_level
