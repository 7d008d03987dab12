// The suites kvbench knows: a plain list in registry.cpp, one line per suite; each suite's
// accessor (perplexity_suite() and the like) is defined in its own file.
#pragma once

#include <string>
#include <vector>

#include "suites/suite.h"

namespace kvb {

// In the order the leaderboard shows them.
const std::vector<const Suite*>& suite_registry();
// nullptr when no suite has that name.
const Suite* find_suite(const std::string& name);
// "perplexity, niah, scbench".
std::string suite_names();

}  // namespace kvb
