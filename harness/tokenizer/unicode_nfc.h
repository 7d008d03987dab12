// Unicode Normalization Form C (canonical decomposition, canonical ordering, canonical
// composition), as HF's NFC normalizer applies it (Qwen2/3 tokenizers).
#pragma once

#include <string>
#include <string_view>

namespace kvb::tok {

// NFC of `text` (valid UTF-8). ASCII-only text is returned unchanged without table lookups.
std::string to_nfc(std::string_view text);

}  // namespace kvb::tok
