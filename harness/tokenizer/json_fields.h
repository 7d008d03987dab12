// Typed access to the fields of a tokenizer.json, with errors that name the file and the field:
// kvb::InputError "<path>: field 'model.vocab' is missing".
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace kvb::tok {

enum class JsonKind { kObject, kArray, kString, kBool, kInteger, kNumber };

class JsonFields {
 public:
  explicit JsonFields(std::string path) : path_(std::move(path)) {}
  const std::string& path() const { return path_; }

  // Throws kvb::InputError "<path>: <message>".
  [[noreturn]] void fail(const std::string& message) const;

  // obj[key], which must be present, not null and of `kind`. `where` is the dotted name of
  // `obj` ("model", "pre_tokenizer.pretokenizers[1]"; "" at the top level) for messages.
  const nlohmann::json& require(const nlohmann::json& obj, const std::string& where,
                                const std::string& key, JsonKind kind) const;
  // obj[key] when present and not null (then it must be of `kind`), else nullptr.
  const nlohmann::json* optional(const nlohmann::json& obj, const std::string& where,
                                 const std::string& key, JsonKind kind) const;

  std::string require_string(const nlohmann::json& obj, const std::string& where,
                             const std::string& key) const;
  bool bool_or(const nlohmann::json& obj, const std::string& where, const std::string& key,
               bool fallback) const;
  std::optional<std::string> optional_string(const nlohmann::json& obj, const std::string& where,
                                             const std::string& key) const;

  // Checks that `value` (named `name`) is of `kind`.
  void expect(const nlohmann::json& value, const std::string& name, JsonKind kind) const;

  static std::string join(const std::string& where, const std::string& key) {
    return where.empty() ? key : where + "." + key;
  }

 private:
  std::string path_;
};

// Reads obj.pattern, a {"String": s} or {"Regex": r} object; *literal tells which it was.
std::string read_pattern(const nlohmann::json& obj, const std::string& where, const JsonFields& f,
                         bool* literal);

}  // namespace kvb::tok
