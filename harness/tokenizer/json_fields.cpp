#include "harness/tokenizer/json_fields.h"

#include "common/check.h"

namespace kvb::tok {
namespace {

const char* kind_name(JsonKind kind) {
  switch (kind) {
    case JsonKind::kObject:
      return "an object";
    case JsonKind::kArray:
      return "an array";
    case JsonKind::kString:
      return "a string";
    case JsonKind::kBool:
      return "a boolean";
    case JsonKind::kInteger:
      return "an integer";
    case JsonKind::kNumber:
      return "a number";
  }
  return "?";
}

bool is_kind(const nlohmann::json& v, JsonKind kind) {
  switch (kind) {
    case JsonKind::kObject:
      return v.is_object();
    case JsonKind::kArray:
      return v.is_array();
    case JsonKind::kString:
      return v.is_string();
    case JsonKind::kBool:
      return v.is_boolean();
    case JsonKind::kInteger:
      return v.is_number_integer();
    case JsonKind::kNumber:
      return v.is_number();
  }
  return false;
}

}  // namespace

void JsonFields::fail(const std::string& message) const {
  throw InputError(path_ + ": " + message);
}

void JsonFields::expect(const nlohmann::json& value, const std::string& name, JsonKind kind) const {
  if (!is_kind(value, kind)) {
    fail("field '" + name + "' must be " + kind_name(kind) + " (found " + value.type_name() + ")");
  }
}

const nlohmann::json& JsonFields::require(const nlohmann::json& obj, const std::string& where,
                                          const std::string& key, JsonKind kind) const {
  const nlohmann::json* v = optional(obj, where, key, kind);
  if (v == nullptr) fail("field '" + join(where, key) + "' is missing");
  return *v;
}

const nlohmann::json* JsonFields::optional(const nlohmann::json& obj, const std::string& where,
                                           const std::string& key, JsonKind kind) const {
  if (!obj.is_object()) fail("'" + (where.empty() ? "(top level)" : where) + "' must be an object");
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  expect(*it, join(where, key), kind);
  return &*it;
}

std::string JsonFields::require_string(const nlohmann::json& obj, const std::string& where,
                                       const std::string& key) const {
  return require(obj, where, key, JsonKind::kString).get<std::string>();
}

bool JsonFields::bool_or(const nlohmann::json& obj, const std::string& where,
                         const std::string& key, bool fallback) const {
  const nlohmann::json* v = optional(obj, where, key, JsonKind::kBool);
  return v == nullptr ? fallback : v->get<bool>();
}

std::optional<std::string> JsonFields::optional_string(const nlohmann::json& obj,
                                                       const std::string& where,
                                                       const std::string& key) const {
  const nlohmann::json* v = optional(obj, where, key, JsonKind::kString);
  if (v == nullptr) return std::nullopt;
  return v->get<std::string>();
}

std::string read_pattern(const nlohmann::json& obj, const std::string& where, const JsonFields& f,
                         bool* literal) {
  const nlohmann::json& p = f.require(obj, where, "pattern", JsonKind::kObject);
  const std::string name = JsonFields::join(where, "pattern");
  if (auto s = f.optional_string(p, name, "String")) {
    *literal = true;
    return *s;
  }
  if (auto r = f.optional_string(p, name, "Regex")) {
    *literal = false;
    return *r;
  }
  f.fail("field '" + name + "' must hold \"String\" or \"Regex\"");
}

}  // namespace kvb::tok
