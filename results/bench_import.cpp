#include "results/bench_import.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <optional>

#include "common/check.h"
#include "common/json_io.h"

namespace kvb {
namespace {

using json = nlohmann::json;

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

struct Group {
  std::string run_name, label;
  std::vector<double> iteration_ms;
  std::vector<const json*> iterations;
  std::map<std::string, const json*> aggregates;  // by aggregate_name
  std::map<std::string, double> aggregate_ms;
  int64_t repetitions = 0;
};

// The numeric counters of a group: those of its median (else mean) aggregate, else per counter
// the median over its iteration entries.
std::map<std::string, double> counters_of(const Group& g) {
  std::map<std::string, double> out;
  for (const char* agg : {"median", "mean"})
    if (auto it = g.aggregates.find(agg); it != g.aggregates.end()) {
      for (const auto& [k, v] : it->second->items())
        if (v.is_number()) out[k] = v.get<double>();
      return out;
    }
  std::map<std::string, std::vector<double>> all;
  for (const json* e : g.iterations)
    for (const auto& [k, v] : e->items())
      if (v.is_number()) all[k].push_back(v.get<double>());
  for (auto& [k, v] : all) out[k] = median_of(std::move(v));
  return out;
}

// The counter named `exact`, else the first (by name) whose name contains one of `parts`.
std::optional<double> pick(const std::map<std::string, double>& c, const std::string& exact,
                           const std::vector<std::string>& parts) {
  if (auto it = c.find(exact); it != c.end()) return it->second;
  for (const auto& [k, v] : c)
    for (const auto& p : parts)
      if (k.find(p) != std::string::npos) return v;
  return std::nullopt;
}

}  // namespace

BenchImport read_benchmark_json(const std::string& path) {
  KVB_INPUT_CHECK(std::filesystem::exists(path), path, ": no such file");
  const json doc = read_json_file(path);
  KVB_INPUT_CHECK(doc.is_object(), path, ": not a Google Benchmark JSON object");
  KVB_INPUT_CHECK(doc.contains("benchmarks") && doc["benchmarks"].is_array(), path,
                  ": no \"benchmarks\" array (not Google Benchmark JSON output)");
  const json& benches = doc["benchmarks"];
  KVB_INPUT_CHECK(!benches.empty(), path, ": \"benchmarks\" is empty");
  BenchImport out;
  if (doc.contains("context") && doc["context"].is_object()) out.context = doc["context"];

  std::vector<Group> groups;
  std::map<std::string, size_t> index;  // run name -> group
  for (size_t i = 0; i < benches.size(); ++i) {
    const json& e = benches[i];
    const std::string where = path + ": benchmarks[" + std::to_string(i) + "]";
    KVB_INPUT_CHECK(e.is_object(), where, ": not an object");
    KVB_INPUT_CHECK(e.contains("name") && e["name"].is_string() &&
                        !e["name"].get<std::string>().empty(),
                    where, ": no string \"name\"");
    const std::string name = e["name"].get<std::string>();
    if (e.value("error_occurred", false)) {
      ++out.skipped;
      continue;
    }
    KVB_INPUT_CHECK(e.contains("real_time") && e["real_time"].is_number(), where, " (", name,
                    "): no numeric \"real_time\"");
    const std::string unit =
        e.contains("time_unit") && e["time_unit"].is_string() ? e["time_unit"].get<std::string>()
                                                              : "ns";
    const double to_ms = unit == "ns"   ? 1e-6
                         : unit == "us" ? 1e-3
                         : unit == "ms" ? 1.0
                         : unit == "s"  ? 1e3
                                        : -1.0;
    KVB_INPUT_CHECK(to_ms > 0, where, " (", name, "): unknown time_unit '", unit, "'");
    const bool aggregate = e.value("run_type", std::string("iteration")) == "aggregate";
    const std::string agg_name =
        aggregate && e.contains("aggregate_name") && e["aggregate_name"].is_string()
            ? e["aggregate_name"].get<std::string>()
            : "";
    KVB_INPUT_CHECK(!aggregate || !agg_name.empty(), where, " (", name,
                    "): an aggregate without \"aggregate_name\"");
    std::string run_name;
    if (e.contains("run_name") && e["run_name"].is_string())
      run_name = e["run_name"].get<std::string>();
    if (run_name.empty()) {
      run_name = name;
      if (aggregate && run_name.ends_with("_" + agg_name))
        run_name.resize(run_name.size() - agg_name.size() - 1);
    }
    auto [it, fresh] = index.try_emplace(run_name, groups.size());
    if (fresh) groups.push_back(Group{run_name, "", {}, {}, {}, {}, 0});
    Group& g = groups[it->second];
    if (g.label.empty() && e.contains("label") && e["label"].is_string())
      g.label = e["label"].get<std::string>();
    if (e.contains("repetitions") && e["repetitions"].is_number_integer())
      g.repetitions = std::max(g.repetitions, e["repetitions"].get<int64_t>());
    const double ms = e["real_time"].get<double>() * to_ms;
    if (aggregate) {
      // cv is a fraction (aggregate_unit "percentage"), stddev a spread: neither is a time here.
      g.aggregates[agg_name] = &e;
      g.aggregate_ms[agg_name] = ms;
    } else {
      g.iterations.push_back(&e);
      g.iteration_ms.push_back(ms);
    }
  }
  KVB_INPUT_CHECK(!groups.empty(), path, ": every benchmark reported an error; nothing to import");

  for (const Group& g : groups) {
    const size_t slash = g.run_name.find('/');
    std::string shape =
        !g.label.empty() ? g.label
                         : (slash == std::string::npos ? "" : g.run_name.substr(slash + 1));
    const bool cuda = lower(g.run_name).find("cuda") != std::string::npos ||
                      lower(g.label).find("cuda") != std::string::npos;
    KernelTiming t;
    if (!g.iteration_ms.empty()) {
      t = summarize_timing(g.run_name, std::move(shape), cuda ? "cuda" : "cpu", g.iteration_ms);
    } else {
      const auto& a = g.aggregate_ms;
      const auto med = a.count("median") ? a.find("median") : a.find("mean");
      KVB_INPUT_CHECK(med != a.end(), path, ": ", g.run_name,
                      ": aggregates without a median or mean");
      t.name = g.run_name;
      t.shape = std::move(shape);
      t.device = cuda ? "cuda" : "cpu";
      t.reps = std::max<int64_t>(1, g.repetitions);
      t.median_ms = med->second;
      t.min_ms = a.count("min") ? a.at("min") : t.median_ms;
      t.max_ms = a.count("max") ? a.at("max") : t.median_ms;
    }
    const auto c = counters_of(g);
    t.gbps = pick(c, "GB/s", {"GB/s"});
    if (!t.gbps)
      if (auto it = c.find("bytes_per_second"); it != c.end()) t.gbps = it->second / 1e9;
    t.gflops = pick(c, "GFLOP/s", {"GFLOP/s"});
    t.roofline_fraction = pick(c, "roofline_fraction", {"frac_of", "roofline"});
    if (auto b = pick(c, "bytes_moved", {}); b)
      t.bytes_moved = static_cast<int64_t>(*b);
    else if (auto b2 = pick(c, "bytes", {}); b2)
      t.bytes_moved = static_cast<int64_t>(*b2);
    out.timings.push_back(std::move(t));
  }
  return out;
}

}  // namespace kvb
