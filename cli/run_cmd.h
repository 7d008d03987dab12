// `kvbench run --suite FILE [--out PATH | --db PATH [--run-name NAME]] [--shard i/N] [--model DIR]... [--max-cells N] [--progress
// auto|bar|lines]`
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvb::cli {

struct RunArgs {
  std::string suite, out, db, run_name, shard, progress = "auto";
  std::string calibration_dir;  // "" = "calibration" beside the results file
  std::vector<std::string> models;
  int64_t max_cells = 0;
};

// Runs the suite (progress on stderr) and prints a summary table on stdout. Returns the exit code.
int run_suite(const RunArgs& a);

}  // namespace kvb::cli
