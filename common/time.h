// Time stamps as kvbench records them.
#pragma once

#include <string>

namespace kvb {

// The current time in UTC as ISO 8601 to the second: "2026-11-29T16:33:05Z".
std::string now_utc();

}  // namespace kvb
