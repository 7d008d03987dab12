#include "common/timing.h"

#include <algorithm>

#include "common/check.h"

namespace kvb {

KernelTiming summarize_timing(std::string name, std::string shape, std::string device,
                              std::vector<double> ms) {
  KVB_CHECK(!ms.empty(), "summarize_timing: no measurements of ", name);
  std::sort(ms.begin(), ms.end());
  const size_t n = ms.size();
  KernelTiming t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.device = std::move(device);
  t.reps = static_cast<int64_t>(n);
  t.median_ms = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  t.min_ms = ms.front();
  t.max_ms = ms.back();
  return t;
}

nlohmann::json kernel_timing_json(const KernelTiming& t) {
  nlohmann::json j = {{"name", t.name},    {"shape", t.shape},         {"device", t.device},
                      {"reps", t.reps},    {"median_ms", t.median_ms}, {"min_ms", t.min_ms},
                      {"max_ms", t.max_ms}};
  if (t.bytes_moved) j["bytes_moved"] = *t.bytes_moved;
  if (t.gbps) j["gbps"] = *t.gbps;
  if (t.gflops) j["gflops"] = *t.gflops;
  if (t.roofline_fraction) j["roofline_fraction"] = *t.roofline_fraction;
  return j;
}

KernelTiming kernel_timing_from_json(const nlohmann::json& j, const std::string& cell_key) {
  KVB_INPUT_CHECK(j.is_object(), "timing: not an object: ", j.dump());
  auto text = [&](const char* k) {
    KVB_INPUT_CHECK(j.contains(k) && j[k].is_string(), "timing: \"", k, "\" must be a string");
    return j[k].get<std::string>();
  };
  auto number = [&](const char* k) {
    KVB_INPUT_CHECK(j.contains(k) && j[k].is_number(), "timing: \"", k, "\" must be a number");
    return j[k].get<double>();
  };
  KernelTiming t;
  t.cell_key = cell_key;
  t.name = text("name");
  t.shape = text("shape");
  t.device = text("device");
  KVB_INPUT_CHECK(j.contains("reps") && j["reps"].is_number_integer(),
                  "timing: \"reps\" must be an integer");
  t.reps = j["reps"].get<int64_t>();
  t.median_ms = number("median_ms");
  t.min_ms = number("min_ms");
  t.max_ms = number("max_ms");
  if (j.contains("bytes_moved")) t.bytes_moved = static_cast<int64_t>(number("bytes_moved"));
  if (j.contains("gbps")) t.gbps = number("gbps");
  if (j.contains("gflops")) t.gflops = number("gflops");
  if (j.contains("roofline_fraction")) t.roofline_fraction = number("roofline_fraction");
  return t;
}

}  // namespace kvb
