#include "suites/suite.h"

#include <cstdio>
#include <set>

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

std::optional<std::string> not_applicable_reason(const nlohmann::json& metrics) {
  if (!metrics.is_object() || !metrics.contains("applicable") ||
      !metrics["applicable"].is_boolean() || metrics["applicable"].get<bool>())
    return std::nullopt;
  return metrics.value("not_applicable", std::string("not applicable"));
}

std::string cell_summary(const Suite& suite, const nlohmann::json& metrics) {
  if (const auto why = not_applicable_reason(metrics)) return "n/a (" + *why + ")";
  return suite.summary(metrics);
}

}  // namespace kvb
