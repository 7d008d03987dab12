#include "cli/run_cmd.h"

#include <cstdio>
#include <iostream>

#include "common/check.h"
#include "results/store.h"
#include "suites/runner.h"

namespace kvb::cli {

int run_suite(const RunArgs& a) {
  SuiteRunOptions o;
  o.config_path = a.suite;
  o.out_path = a.out;
  o.db_path = a.db;
  o.run_name = a.run_name;
  o.calibration_dir = a.calibration_dir;
  if (!a.shard.empty()) parse_shard(a.shard, o.shard_index, o.shard_count);
  o.models = a.models;
  o.max_cells = a.max_cells;
  if (a.progress == "bar")
    o.tty = 1;
  else if (a.progress == "lines")
    o.tty = 0;
  else
    KVB_INPUT_CHECK(a.progress == "auto", "--progress '", a.progress,
                    "': expected auto, bar or lines");
  SuiteRunSummary s = run_suite_file(o, store_opener(o), stderr);
  std::cout << "results: " << s.out_path << " (" << s.ran << " cells computed, " << s.skipped
            << " finished earlier, " << s.cells - s.ran - s.skipped << " left)\n";
  if (!s.records.empty()) std::cout << "\n" << summary_table(s.records);
  return 0;
}

}  // namespace kvb::cli
