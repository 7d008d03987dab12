#include "common/error_text.h"

#include <cstdio>

namespace kvb {
namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is not one.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  std::size_t n = 0;
  unsigned min = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2, min = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3, min = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4, min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  unsigned cp = b0 & (0xFF >> (n + 1));
  for (std::size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

}  // namespace

std::string one_line(std::string_view text, std::size_t max_chars) {
  std::string out;
  out.reserve(text.size() < max_chars ? text.size() : max_chars);
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::string piece;
    std::size_t step = 1;
    if (c == '\n') {
      piece = "\\n";
    } else if (c == '\r') {
      piece = "\\r";
    } else if (c == '\t') {
      piece = "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      piece = buf;
    } else if (c < 0x80) {
      piece.assign(1, static_cast<char>(c));
    } else if (std::size_t n = utf8_length(text, i); n > 0) {
      piece.assign(text.substr(i, n));
      step = n;
      // C1 controls (U+0080..U+009F) and the line/paragraph separators break lines too.
      if ((n == 2 && c == 0xC2 && static_cast<unsigned char>(text[i + 1]) < 0xA0) ||
          (n == 3 && c == 0xE2 && static_cast<unsigned char>(text[i + 1]) == 0x80 &&
           (static_cast<unsigned char>(text[i + 2]) == 0xA8 ||
            static_cast<unsigned char>(text[i + 2]) == 0xA9))) {
        piece.clear();
        for (std::size_t k = 0; k < n; ++k) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02X", static_cast<unsigned char>(text[i + k]));
          piece += buf;
        }
      }
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      piece = buf;
    }
    if (out.size() + piece.size() > max_chars) {
      out += "...";
      return out;
    }
    out += piece;
    i += step;
  }
  return out;
}

std::string quote_input(std::string_view value, std::size_t max_chars) {
  return "\"" + one_line(value, max_chars) + "\"";
}

}  // namespace kvb
