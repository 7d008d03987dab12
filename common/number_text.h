// Reading a double from text a program wrote (a database column read as text, a record field).
#pragma once

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <string>

#include "common/check.h"
#include "common/error_text.h"

namespace kvb {

// The double `s` holds, all of it. Unlike std::stod, a value that underflows to a subnormal or
// zero ("4.9e-324": SQLite prints REALs so) is that value, not std::out_of_range (a fuzzed
// results database crashed the leaderboard so); overflow, trailing junk and non-numbers are an
// InputError naming `what`.
inline double parse_double_text(const std::string& s, const std::string& what) {
  const char* begin = s.c_str();
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(begin, &end);
  const bool whole = end != begin && *end == '\0';
  const bool overflow = errno == ERANGE && std::isinf(v);
  KVB_INPUT_CHECK(whole && !overflow, what, ": expected a number, got ", quote_input(s));
  return v;
}

}  // namespace kvb
