// One timed operation — a kernel, or an engine phase such as a prefill — summarised over its
// repetitions, with the throughput figures a kernel benchmark can add. Suites put the timings
// they take inside a cell in the record's metrics.timings (kernel_timing_json); the SQLite store
// files them in its kernel_timings table under the cell's key.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace kvb {

struct KernelTiming {
  std::string cell_key;  // the suite cell it was measured in; "" for a standalone measurement
  std::string name;      // e.g. "niah.prefill"
  std::string shape;     // what was timed, e.g. "context_len=4096,chunk=0"
  std::string device;    // "cpu", "cuda:0"
  int64_t reps = 0;
  double median_ms = 0, min_ms = 0, max_ms = 0;
  std::optional<int64_t> bytes_moved;
  std::optional<double> gbps, gflops, roofline_fraction;
};

// The median, min and max of `ms` (at least one measurement, in milliseconds).
KernelTiming summarize_timing(std::string name, std::string shape, std::string device,
                              std::vector<double> ms);

// Every field but cell_key; absent optionals are left out.
nlohmann::json kernel_timing_json(const KernelTiming& t);
// The inverse, with `cell_key` set. kvb::InputError naming the missing or mistyped field.
KernelTiming kernel_timing_from_json(const nlohmann::json& j, const std::string& cell_key);

}  // namespace kvb
