// Hashing for identities (cell keys, parameter and config hashes, derived seeds): FNV-1a 64.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace kvb {

// FNV-1a 64 of a byte string.
inline uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

// 16 lower-case hex digits.
inline std::string hex64(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

}  // namespace kvb
