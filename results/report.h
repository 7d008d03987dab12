// An HTML leaderboard of a results database: per suite and dataset, one row per model and method
// with the headline metric (perplexity: ppl ± se and KL from the full cache; niah, scbench: mean
// score) and the memory held (bits per token, where recorded), best first. Self-contained (inline
// CSS, no scripts).
#pragma once

#include <string>

namespace kvb {

// run_id "" = every run. kvb::InputError "<db>: ..." when the file is not a results database.
std::string leaderboard_html(const std::string& db_path, const std::string& run_id);

// "&<>\"'" escaped.
std::string html_escape(const std::string& s);

}  // namespace kvb
