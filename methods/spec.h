// Method spec strings:  chain := method ('+' method)* ;  method := name ['(' key=value, ... ')']
//
// Limits (refused with one line "spec '<text>': <problem>", the text escaped and cut at 200
// characters):
//   kMaxSpecChars   1024  characters in a whole spec
//   kMaxSpecStages    16  stages in a chain
// Each parameter's value range is in its method's schema (methods/registry.h, ParamSchema).
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <vector>

namespace kvb {

inline constexpr std::size_t kMaxSpecChars = 1024;
inline constexpr std::size_t kMaxSpecStages = 16;

struct StageSpec {
  std::string name;
  std::map<std::string, std::string> params;  // sorted by key
  std::string str() const;                    // name(k=v,...) with keys sorted; name if none
};

// "'<text>'" for messages: control characters escaped, cut at 200 characters (one_line).
std::string quote_spec(const std::string& text);

// Syntax only (names and keys are checked by the registry). Throws kvb::InputError
// "spec '<text>': <problem>" on unbalanced parentheses, empty names, bad key=value pairs,
// duplicate keys, and specs beyond the limits above.
std::vector<StageSpec> parse_spec(const std::string& text);
std::string join_spec(const std::vector<StageSpec>& chain);

}  // namespace kvb
