// Google Benchmark JSON (`kvbench_bench --benchmark_format=json --benchmark_out=FILE`, or any
// Google Benchmark binary's) as kernel timings, for `kvbench import-bench`.
//
// Entries are grouped by run_name (for an aggregate without one: its name less the
// "_<aggregate_name>" suffix); each group is one KernelTiming with cell_key "":
//   name   = the run name, e.g. "BM_DequantRows/8/64";
//   shape  = the label when there is one, else the part of the run name after its first '/'
//            ("8/64"; "" when there is none);
//   device = "cuda" when the name or the label mentions cuda (any case), else "cpu";
//   times  = real_time in ms (time_unit ns, us, ms or s; ns when absent). With iteration entries
//            (one per repetition): reps = their count, median/min/max over them. With aggregates
//            only (--benchmark_report_aggregates_only): the "median" aggregate (else "mean"),
//            "min"/"max" aggregates where present, else the median; reps = "repetitions".
//   counters, from the "median" aggregate (else "mean", else per counter the median over the
//            iteration entries); a counter named exactly so wins, else the first by name that
//            contains it:
//            "GB/s"                    -> gbps (else "bytes_per_second" / 1e9, SetBytesProcessed)
//            "GFLOP/s"                 -> gflops
//            "frac_of" or "roofline"   -> roofline_fraction
//            "bytes_moved" or "bytes"  -> bytes_moved (exact names only)
//   Other counters (tok/s, cache_MiB, ...) have no column and are left out. Entries with
//   "error_occurred": true (SkipWithError) are skipped.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/timing.h"

namespace kvb {

struct BenchImport {
  nlohmann::json context = nlohmann::json::object();  // the file's "context" ({} when absent)
  std::vector<KernelTiming> timings;                  // in order of first appearance
  int64_t skipped = 0;                                // entries with error_occurred
};

// Reads the Google Benchmark JSON file at `path`. kvb::InputError "<path>: <problem>" when it is
// missing, not JSON, has no "benchmarks" array (or an empty one), or an entry lacks a string
// "name" or a numeric "real_time", or has an unknown time_unit.
BenchImport read_benchmark_json(const std::string& path);

}  // namespace kvb
