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

// Limits, each refused with one line before the database is opened:
//   the file                      through the JSON layer (common/json_reader.h): 512 MiB, nesting
//                                 64 deep, no duplicate keys, no number beyond a double
//   benchmarks                    1 .. 100,000 entries (kMaxBenchEntries)
//   name, run_name, label,        strings of 1 .. 1000 characters without control characters
//     aggregate_name
//   real_time                     a number in [0, 1e15] (in its time_unit: ns, us, ms or s)
//   repetitions, repetition_index integers in [0, 1e9]; iterations an integer >= 0; threads an
//                                 integer in [1, 2^20]; cpu_time a number in [0, 1e15]
//   context.host_name             a name as above; context.date an ISO 8601 date of at most 64
//                                 characters (the run's started_at)
//   run_type                      "iteration" | "aggregate"; error_occurred a boolean; context an
//                                 object
//   counters mapped to a column   numbers in [0, 1e18] (GB/s, GFLOP/s, bytes_per_second,
//                                 bytes_moved, bytes, frac_of*, *roofline*)
//   one aggregate of each aggregate_name per run name
inline constexpr size_t kMaxBenchEntries = 100000;
inline constexpr size_t kMaxBenchNameChars = 1000;
inline constexpr double kMaxBenchTime = 1e15;
inline constexpr double kMaxBenchCounter = 1e18;
inline constexpr int64_t kMaxBenchRepetitions = 1000000000;

// Reads the Google Benchmark JSON file at `path`. kvb::InputError "<path>: <json path>: <problem>"
// when it is missing, not JSON, has no "benchmarks" array (or an empty one), an entry lacks a
// string "name" or a numeric "real_time", has an unknown time_unit, or breaks a limit above.
BenchImport read_benchmark_json(const std::string& path);

}  // namespace kvb
