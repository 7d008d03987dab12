// The leaderboard of a results database, as one self-contained HTML page (inline CSS, a small
// inline script, charts as inline SVG from results/svg_chart.h; nothing is fetched) and as
// Markdown (the tables only).
//
// Per suite and dataset: a table with one row per cell — run, model, method, the headline
// metric (perplexity: ppl ± se, KL from the full cache, top-1 agreement; niah, scbench: mean
// score, scbench also per turn), bits per token held and promised — best first; the script sorts
// by any column on a click (or from the address: #sort=<table id>:<column>:asc|desc), and the
// table reads the same without it. Then, per model, charts from the latest cell of each method:
// quality against bits per token with the Pareto front (perplexity: KL from the full cache;
// niah, scbench: mean score), a NIAH heatmap per method (depth × context length), and the
// SCBench score per turn (one line per method). Timings recorded in the database follow.
// Errors of the page's script are written into <pre id="kvb-errors">.
#pragma once

#include <string>
#include <vector>

namespace kvb {

struct LeaderboardOptions {
  std::string db;
  std::string run;                   // a run id or name; "" = every run
  std::vector<std::string> methods;  // method specs (any spelling); empty = every method
};

struct LeaderboardPages {
  std::string html, markdown;
};

// kvb::InputError "<db>: ..." when the file is not a results database this build reads, the run
// does not exist, or a method has no cell (in the run); "spec '...': ..." for a malformed spec.
LeaderboardPages render_leaderboard(const LeaderboardOptions& opt);

}  // namespace kvb
