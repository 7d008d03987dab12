#include "suites/cell_record.h"

#include "common/json_reader.h"

namespace kvb {

void check_cell_record(const nlohmann::json& record, const std::string& source) {
  const JsonNode r(record, source);
  r.object();
  for (const char* k : {"key", "suite", "model", "method", "dataset"}) r.at(k).str();
  r.at("params").object();
  // Readers take these with a fallback when absent, but a null is not absent to them.
  for (const auto& [name, v] : r.members())
    if (name == "dtype") v.choice({"fp32", "fp16", "bf16", "float32", "float16", "bfloat16"});
  if (auto cal = r.find("calibration"))  // the calibration artifacts a method used
    for (const JsonNode& a : cal->array().items())
      for (const char* k : {"stage", "path", "hash"}) a.object().at(k).str();
  const JsonNode m = r.at("metrics");
  for (const auto& [name, v] : m.members()) {
    if (name == "applicable") v.boolean();
    if (name == "not_applicable") v.str();
  }
}

nlohmann::json parse_cell_record(std::string_view text, const std::string& source) {
  nlohmann::json r = parse_json(text, source);
  check_cell_record(r, source);
  return r;
}

}  // namespace kvb
