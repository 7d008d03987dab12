#include "suites/json_schema.h"

#include <cctype>
#include <cmath>
#include <regex>
#include <set>

#include "common/check.h"
#include "common/error_text.h"

namespace kvb {
namespace {

using json = nlohmann::json;

const std::set<std::string> kKnown = {"type",
                                      "properties",
                                      "required",
                                      "additionalProperties",
                                      "items",
                                      "minItems",
                                      "maxItems",
                                      "uniqueItems",
                                      "enum",
                                      "const",
                                      "minimum",
                                      "maximum",
                                      "exclusiveMinimum",
                                      "minLength",
                                      "maxLength",
                                      "pattern",
                                      "$ref",
                                      "allOf",
                                      "anyOf",
                                      "if",
                                      "then",
                                      "else",
                                      "title",
                                      "description",
                                      "default",
                                      "$schema",
                                      "$id",
                                      "examples",
                                      "$comment",
                                      "$defs"};

std::string type_of(const json& v) {
  if (v.is_object()) return "object";
  if (v.is_array()) return "array";
  if (v.is_string()) return "string";
  if (v.is_boolean()) return "boolean";
  if (v.is_null()) return "null";
  if (v.is_number_integer() || v.is_number_unsigned()) return "integer";
  if (v.is_number_float()) {
    double d = v.get<double>();
    return std::floor(d) == d && std::isfinite(d) ? "integer" : "number";
  }
  return "unknown";
}

bool has_type(const json& v, const std::string& t) {
  const std::string a = type_of(v);
  return a == t || (t == "number" && a == "integer");
}

std::string article(const std::string& t) {
  if (t == "integer" || t == "object" || t == "array") return "an " + t;
  if (t == "null") return "null";
  return "a " + t;
}

// A value for a message: JSON text (control characters escaped by dump; bytes that are not UTF-8
// replaced), cut at 40 characters.
std::string short_value(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

// How deep check() may recurse (value nesting plus $ref / allOf / anyOf / if levels). The JSON
// layer caps a document's nesting at 64 (common/json_reader.h); the validator stays safe for
// any value it is handed, however it was built.
constexpr int kMaxCheckDepth = 256;
// The longest string matched against a "pattern".
constexpr size_t kMaxPatternChars = 1000;

class Validator {
 public:
  explicit Validator(const json& root) : root_(root) {}

  std::optional<std::string> check(const json& s, const json& v, const std::string& path) const {
    struct Depth {
      int& d;
      explicit Depth(int& x) : d(++x) {}
      ~Depth() { --d; }
    } guard(depth_);
    if (depth_ > kMaxCheckDepth)
      return one_line(path, 200) + ": nested too deeply (more than " +
             std::to_string(kMaxCheckDepth) + " levels of value and schema)";
    if (s.is_boolean())
      return s.get<bool>() ? std::nullopt : std::optional<std::string>(path + ": not allowed");
    KVB_CHECK(s.is_object(), "schema: a subschema must be an object or a boolean");
    for (const auto& [k, _] : s.items())
      KVB_CHECK(kKnown.count(k), "schema: unsupported keyword '", k, "'");
    if (s.contains("$ref")) {
      if (auto e = check(resolve(s["$ref"].get<std::string>()), v, path)) return e;
    }
    if (s.contains("type")) {
      std::vector<std::string> types;
      if (s["type"].is_string())
        types.push_back(s["type"].get<std::string>());
      else
        for (const auto& t : s["type"]) types.push_back(t.get<std::string>());
      bool ok = false;
      for (const auto& t : types) ok = ok || has_type(v, t);
      if (!ok) {
        std::string want;
        for (size_t i = 0; i < types.size(); ++i) want += (i ? " or " : "") + article(types[i]);
        return path + ": expected " + want + ", got " + article(type_of(v));
      }
    }
    if (s.contains("enum")) {
      bool ok = false;
      std::string list;
      for (const auto& e : s["enum"]) {
        ok = ok || e == v;
        list += (list.empty() ? "" : ", ") + e.dump();
      }
      if (!ok) return path + ": expected one of " + list + "; got " + short_value(v);
    }
    if (s.contains("const") && s["const"] != v)
      return path + ": expected " + s["const"].dump() + "; got " + short_value(v);
    if (v.is_number()) {
      const double x = v.get<double>();
      if (s.contains("minimum") && x < s["minimum"].get<double>())
        return path + ": must be >= " + s["minimum"].dump() + "; got " + v.dump();
      if (s.contains("exclusiveMinimum") && x <= s["exclusiveMinimum"].get<double>())
        return path + ": must be > " + s["exclusiveMinimum"].dump() + "; got " + v.dump();
      if (s.contains("maximum") && x > s["maximum"].get<double>())
        return path + ": must be <= " + s["maximum"].dump() + "; got " + v.dump();
    }
    if (v.is_string()) {
      const std::string& str = v.get_ref<const std::string&>();
      if (s.contains("minLength") &&
          static_cast<int64_t>(str.size()) < s["minLength"].get<int64_t>())
        return path + ": expected at least " + s["minLength"].dump() + " characters";
      if (s.contains("maxLength") &&
          static_cast<int64_t>(str.size()) > s["maxLength"].get<int64_t>())
        return path + ": expected at most " + s["maxLength"].dump() + " characters, got " +
               std::to_string(str.size());
      // std::regex recurses per character: longer strings are refused before it sees them.
      if (s.contains("pattern") && str.size() > kMaxPatternChars)
        return path + ": expected at most " + std::to_string(kMaxPatternChars) +
               " characters, got " + std::to_string(str.size());
      if (s.contains("pattern") &&
          !std::regex_search(str, std::regex(s["pattern"].get<std::string>())))
        return path + ": " + short_value(v) + " does not match the pattern " + s["pattern"].dump();
    }
    if (v.is_array()) {
      if (s.contains("minItems") && v.size() < s["minItems"].get<size_t>())
        return path + ": expected at least " + s["minItems"].dump() + " item" +
               (s["minItems"] == 1 ? "" : "s");
      if (s.contains("maxItems") && v.size() > s["maxItems"].get<size_t>())
        return path + ": expected at most " + s["maxItems"].dump() + " items";
      if (s.value("uniqueItems", false))
        for (size_t i = 0; i < v.size(); ++i)
          for (size_t j = 0; j < i; ++j)
            if (v[i] == v[j])
              return json_path_index(path, i) + ": duplicate of item " + std::to_string(j);
      if (s.contains("items"))
        for (size_t i = 0; i < v.size(); ++i)
          if (auto e = check(s["items"], v[i], json_path_index(path, i))) return e;
    }
    if (v.is_object()) {
      if (s.contains("required"))
        for (const auto& r : s["required"])
          if (!v.contains(r.get<std::string>()))
            return path + ": missing required field \"" + r.get<std::string>() + "\"";
      const json props = s.value("properties", json::object());
      for (const auto& [k, x] : v.items()) {
        const std::string p = json_path_key(path, k);
        if (props.contains(k)) {
          if (auto e = check(props[k], x, p)) return e;
        } else if (s.contains("additionalProperties")) {
          const json& ap = s["additionalProperties"];
          if (ap.is_boolean() && !ap.get<bool>()) {
            std::string list;
            for (const auto& [pk, _] : props.items()) list += (list.empty() ? "" : ", ") + pk;
            return p + ": unknown field (expected one of: " + list + ")";
          }
          if (auto e = check(ap, x, p)) return e;
        }
      }
    }
    if (s.contains("allOf"))
      for (const auto& sub : s["allOf"])
        if (auto e = check(sub, v, path)) return e;
    if (s.contains("anyOf"))
      if (auto e = check_any_of(s["anyOf"], v, path)) return e;
    if (s.contains("if")) {
      if (!check(s["if"], v, path)) {
        if (s.contains("then"))
          if (auto e = check(s["then"], v, path)) return e;
      } else if (s.contains("else")) {
        if (auto e = check(s["else"], v, path)) return e;
      }
    }
    return std::nullopt;
  }

  std::optional<std::string> check_any_of(const json& branches, const json& v,
                                          const std::string& path) const {
    std::optional<std::string> typed_err, first_err;
    for (const auto& sub : branches) {
      auto e = check(sub, v, path);
      if (!e) return std::nullopt;
      if (!first_err) first_err = e;
      if (!typed_err && sub.contains("type") && sub["type"].is_string() &&
          has_type(v, sub["type"].get<std::string>()))
        typed_err = e;
    }
    if (typed_err) return typed_err;
    std::string want;
    for (const auto& sub : branches)
      if (sub.contains("type") && sub["type"].is_string())
        want += (want.empty() ? "" : " or ") + article(sub["type"].get<std::string>());
    if (!want.empty()) return path + ": expected " + want + ", got " + article(type_of(v));
    return first_err;
  }

 private:
  const json& resolve(const std::string& ref) const {
    KVB_CHECK(ref.rfind("#/", 0) == 0, "schema: only local $ref is supported: ", ref);
    const json* cur = &root_;
    size_t p = 2;
    while (p <= ref.size()) {
      size_t q = ref.find('/', p);
      std::string part = ref.substr(p, q == std::string::npos ? std::string::npos : q - p);
      KVB_CHECK(cur->is_object() && cur->contains(part), "schema: unresolved $ref ", ref);
      cur = &(*cur)[part];
      if (q == std::string::npos) break;
      p = q + 1;
    }
    return *cur;
  }
  const json& root_;
  mutable int depth_ = 0;
};

bool is_identifier(const std::string& k) {
  if (k.empty() || std::isdigit(static_cast<unsigned char>(k[0]))) return false;
  for (char c : k)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  return true;
}

}  // namespace

std::string json_path_key(const std::string& path, const std::string& key) {
  if (is_identifier(key) && key.size() <= 80) return path + "." + key;
  std::string k = json(key).dump(-1, ' ', false, json::error_handler_t::replace);
  if (k.size() > 80) k = k.substr(0, 76) + "...\"";
  return path + "[" + k + "]";
}
std::string json_path_index(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

std::optional<std::string> validate_json_schema(const json& schema, const json& value) {
  return Validator(schema).check(schema, value, "$");
}

}  // namespace kvb
