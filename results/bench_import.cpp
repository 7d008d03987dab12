#include "results/bench_import.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>

#include "common/check.h"
#include "common/error_text.h"
#include "common/json_reader.h"

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

// A name-like string field: 1 .. kMaxBenchNameChars characters, none of them a control character.
std::string name_field(const JsonNode& n) {
  const std::string s = n.str();
  bool control = false;
  for (unsigned char c : s) control |= c < 0x20 || c == 0x7f;
  if (s.empty() || s.size() > kMaxBenchNameChars || control)
    n.expected("a name of 1 to " + std::to_string(kMaxBenchNameChars) +
               " characters without control characters");
  return s;
}

// Whether a counter's name maps to a column (counters_of / pick below).
bool mapped_counter(const std::string& k) {
  for (const char* part : {"GB/s", "GFLOP/s", "frac_of", "roofline"})
    if (k.find(part) != std::string::npos) return true;
  return k == "bytes_per_second" || k == "bytes_moved" || k == "bytes";
}

}  // namespace

BenchImport read_benchmark_json(const std::string& path) {
  KVB_INPUT_CHECK(std::filesystem::exists(path), path, ": no such file");
  // The one JSON layer: depth, duplicate keys, numbers beyond a double and the size refused.
  const json doc = read_json_input(path);
  const JsonNode root(doc, path);
  if (!root.is_object()) root.expected("a Google Benchmark JSON object");
  if (!root.has("benchmarks"))
    root.fail("no \"benchmarks\" array (not Google Benchmark JSON output)");
  const JsonNode benches = root.at("benchmarks");
  benches.array();
  KVB_INPUT_CHECK(benches.size() > 0, path, ": \"benchmarks\" is empty");
  if (benches.size() > kMaxBenchEntries)
    benches.fail(std::to_string(benches.size()) + " entries, more than the " +
                 std::to_string(kMaxBenchEntries) + " an import may have");
  BenchImport out;
  if (auto ctx = root.find("context")) {
    // Free-form but for what the import files: the host and the date of the run.
    out.context = ctx->object().raw();
    if (auto host = ctx->find("host_name")) name_field(*host);
    if (auto date = ctx->find("date")) {
      const std::string d = date->str();
      const bool iso = d.size() >= 10 && d.size() <= 64 &&
                       std::isdigit(static_cast<unsigned char>(d[0])) && d[4] == '-' && d[7] == '-';
      bool control = false;
      for (unsigned char c : d) control |= c < 0x20 || c == 0x7f;
      if (!iso || control) date->expected("an ISO 8601 date (2024-06-01T10:00:00+00:00)");
    }
  }

  std::vector<Group> groups;
  std::map<std::string, size_t> index;  // run name -> group
  for (const JsonNode& e : benches.items()) {
    e.object();
    const std::string name = name_field(e.at("name"));
    if (e.boolean("error_occurred", false)) {
      ++out.skipped;
      continue;
    }
    const double real_time = e.at("real_time").number(0.0, kMaxBenchTime);
    // The other fields Google Benchmark writes, where present: of their types and ranges.
    if (auto v = e.find("cpu_time")) v->number(0.0, kMaxBenchTime);
    if (auto v = e.find("iterations")) v->integer(0, std::numeric_limits<int64_t>::max());
    if (auto v = e.find("threads")) v->integer(1, 1 << 20);
    if (auto v = e.find("repetition_index")) v->integer(0, kMaxBenchRepetitions);
    const JsonNode* unit_node = nullptr;
    const auto unit_opt = e.find("time_unit");
    if (unit_opt) unit_node = &*unit_opt;
    const std::string unit = unit_node ? unit_node->choice({"ns", "us", "ms", "s"}) : "ns";
    const double to_ms = unit == "ns" ? 1e-6 : unit == "us" ? 1e-3 : unit == "ms" ? 1.0 : 1e3;
    const bool aggregate =
        e.has("run_type") && e.at("run_type").choice({"iteration", "aggregate"}) == "aggregate";
    std::string agg_name;
    if (aggregate) {
      if (!e.has("aggregate_name"))
        e.fail("an aggregate of " + quote_input(name) + " without \"aggregate_name\"");
      agg_name = name_field(e.at("aggregate_name"));
    }
    std::string run_name;
    if (e.has("run_name")) run_name = name_field(e.at("run_name"));
    if (run_name.empty()) {
      run_name = name;
      if (aggregate && run_name.ends_with("_" + agg_name))
        run_name.resize(run_name.size() - agg_name.size() - 1);
    }
    // Counters that map to a column: non-negative figures (bytes_moved becomes an integer).
    for (const auto& [k, v] : e.members())
      if (mapped_counter(k)) v.number(0.0, kMaxBenchCounter);
    auto [it, fresh] = index.try_emplace(run_name, groups.size());
    if (fresh) groups.push_back(Group{run_name, "", {}, {}, {}, {}, 0});
    Group& g = groups[it->second];
    if (e.has("label")) {
      const std::string label = name_field(e.at("label"));
      if (g.label.empty()) g.label = label;
    }
    g.repetitions = std::max(g.repetitions, e.integer("repetitions", 0, 0, kMaxBenchRepetitions));
    const double ms = real_time * to_ms;
    if (aggregate) {
      // cv is a fraction (aggregate_unit "percentage"), stddev a spread: neither is a time here.
      if (g.aggregates.count(agg_name))
        e.fail("a second " + quote_input(agg_name) + " aggregate of " + quote_input(run_name));
      g.aggregates[agg_name] = &e.raw();
      g.aggregate_ms[agg_name] = ms;
    } else {
      g.iterations.push_back(&e.raw());
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
      KVB_INPUT_CHECK(med != a.end(), path, ": ", quote_input(g.run_name),
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
    // Checked above: 0 .. kMaxBenchCounter, so the conversion is defined.
    if (auto b = pick(c, "bytes_moved", {}); b)
      t.bytes_moved = std::llround(*b);
    else if (auto b2 = pick(c, "bytes", {}); b2)
      t.bytes_moved = std::llround(*b2);
    out.timings.push_back(std::move(t));
  }
  return out;
}

}  // namespace kvb
