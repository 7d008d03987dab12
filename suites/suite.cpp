#include "suites/suite.h"

#include <cstdio>
#include <limits>
#include <set>

#include "common/json_reader.h"

namespace kvb {

std::string describe_dataset_kind(DatasetKind kind) {
  return kind == DatasetKind::kText ? "a text dataset (text, wikitext2, text_dir, prose)"
                                    : "a shared-context dataset (scbench_*, mixture)";
}

std::string params_label(const nlohmann::json& mine,
                         const std::vector<const nlohmann::json*>& others) {
  std::set<std::string> keys;
  for (const nlohmann::json* o : others)
    for (const nlohmann::json* a : {&mine, o})
      for (const auto& [k, v] : a->items())
        if (!mine.contains(k) || !o->contains(k) || mine[k] != (*o)[k]) keys.insert(k);
  std::string out;
  for (const auto& k : keys)
    if (mine.contains(k))
      out += (out.empty() ? "" : ", ") + k + "=" +
             (mine[k].is_string() ? mine[k].get<std::string>() : mine[k].dump());
  return out;
}

std::string format_number(const char* format, double v) {
  char b[64];
  std::snprintf(b, sizeof b, format, v);
  return b;
}

namespace {

double number_or_nan(const JsonNode& v) {
  if (v.raw().is_number()) return v.raw().get<double>();  // a NaN too
  if (v.is_null()) return std::numeric_limits<double>::quiet_NaN();
  v.expected("a number");
}

}  // namespace

double summary_number(const nlohmann::json& metrics, const std::string& name) {
  const JsonNode m(metrics, "", "metrics");
  if (metrics.is_object() && metrics.contains(name) && metrics[name].is_null())
    return std::numeric_limits<double>::quiet_NaN();
  return number_or_nan(m.at(name));
}

std::vector<double> summary_numbers(const nlohmann::json& metrics, const std::string& name) {
  std::vector<double> out;
  for (const JsonNode& v : JsonNode(metrics, "", "metrics").at(name).items())
    out.push_back(number_or_nan(v));
  return out;
}

bool summary_flag(const nlohmann::json& metrics, const std::string& name) {
  return metrics.is_object() && metrics.contains(name) && metrics[name].is_boolean() &&
         metrics[name].get<bool>();
}

std::optional<std::string> not_applicable_reason(const nlohmann::json& metrics) {
  if (!metrics.is_object() || !metrics.contains("applicable") ||
      !metrics["applicable"].is_boolean() || metrics["applicable"].get<bool>())
    return std::nullopt;
  const auto why = metrics.find("not_applicable");
  return why != metrics.end() && why->is_string() ? why->get<std::string>() : "not applicable";
}

std::string cell_summary(const Suite& suite, const nlohmann::json& metrics) {
  if (const auto why = not_applicable_reason(metrics)) return "n/a (" + *why + ")";
  return suite.summary(metrics);
}

}  // namespace kvb
