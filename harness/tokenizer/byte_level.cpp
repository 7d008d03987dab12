#include "harness/tokenizer/byte_level.h"

#include <array>
#include <cstdint>

#include "harness/tokenizer/utf8.h"

namespace kvb::tok::byte_level {
namespace {

struct Alphabet {
  std::array<std::string, 256> byte_to_utf8;  // [256] UTF-8 of each byte's code point
  std::array<int16_t, 512> cp_to_byte;        // [512] code point -> byte, -1 when none

  Alphabet() {
    cp_to_byte.fill(-1);
    // Printable Latin-1 bytes stand for themselves; the rest get 256, 257, ... in byte order.
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(next++);
      utf8::append(&byte_to_utf8[b], cp);
      cp_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet a;
  return a;
}

}  // namespace

std::string encode(std::string_view bytes) {
  const Alphabet& a = alphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += a.byte_to_utf8[static_cast<uint8_t>(c)];
  return out;
}

bool decode_token(std::string_view token, std::string* out) {
  const Alphabet& a = alphabet();
  const size_t start = out->size();
  size_t pos = 0, len = 0;
  while (pos < token.size()) {
    const char32_t cp = utf8::decode_at(token, pos, &len);
    if (cp >= a.cp_to_byte.size() || a.cp_to_byte[cp] < 0) {
      out->resize(start);
      return false;
    }
    out->push_back(static_cast<char>(a.cp_to_byte[cp]));
    pos += len;
  }
  return true;
}

std::string decode_tokens(const std::vector<std::string>& tokens) {
  std::string bytes;
  for (const std::string& t : tokens) {
    if (!decode_token(t, &bytes)) bytes += t;
  }
  return utf8::to_valid_lossy(bytes);
}

}  // namespace kvb::tok::byte_level
