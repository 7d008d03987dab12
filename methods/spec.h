// Method spec strings:  chain := method ('+' method)* ;  method := name ['(' key=value, ... ')']
#pragma once

#include <map>
#include <string>
#include <vector>

namespace kvb {

struct StageSpec {
  std::string name;
  std::map<std::string, std::string> params;  // sorted by key
  std::string str() const;                    // name(k=v,...) with keys sorted; name if none
};

// Syntax only (names and keys are checked by the registry). Throws kvb::InputError
// "spec '<text>': <problem>" on unbalanced parentheses, empty names, bad key=value pairs,
// duplicate keys.
std::vector<StageSpec> parse_spec(const std::string& text);
std::string join_spec(const std::vector<StageSpec>& chain);

}  // namespace kvb
