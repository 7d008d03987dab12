// The one JSON reading layer for every input kvbench takes (model configs, tokenizer.json,
// safetensors headers, suite configs, datasets, benchmark JSON, train.json, stored records).
//
// Parsing (`parse_json`, `read_json_input`) refuses, with kvb::InputError "<source>: ...":
//   - nesting deeper than `JsonLimits::max_depth` (a 10^5-deep array must not reach any
//     recursive code), before the document is built;
//   - a key that appears twice in one object (nlohmann keeps the last one silently);
//   - numbers that do not fit a double (1e999) — nlohmann reports them as overflow;
//   - texts larger than `JsonLimits::max_bytes`, and any NUL byte (nlohmann would stop there).
//
// Reading goes through `JsonNode`, a view that knows its source and its path in the document
// (`model.vocab`, `runs[2].methods[0]`). Every getter checks the type and range and throws
// kvb::InputError "<source>: <path>: expected <what>, got <what it found>". Nothing outside this
// layer needs `json::at()`, `json::value()` or `get<T>()`, which throw nlohmann's own
// exceptions without the file's name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvb {

struct JsonLimits {
  int max_depth = 64;                       // objects and arrays nested at most this deep
  std::size_t max_bytes = 512u << 20;       // the whole text
};

// Parses `text`; `source` names it in errors (a file path, "suite config", a record's id).
nlohmann::json parse_json(std::string_view text, const std::string& source,
                          const JsonLimits& limits = {});
// Reads `path` (refusing files larger than limits.max_bytes before reading them) and parses it.
nlohmann::json read_json_input(const std::string& path, const JsonLimits& limits = {});

// "a string \"abc\"", "an integer 12", "an object", "null": what a value is, for messages.
// String contents are cut at 200 characters and control characters escaped.
std::string describe_json(const nlohmann::json& value);

class JsonNode {
 public:
  // An empty `source` leaves it out of messages ("<path>: <message>"), for a value whose caller
  // names the file itself (a suite's params: "$.runs[0].params.ctx: ...").
  JsonNode(const nlohmann::json& value, std::string source, std::string path = {})
      : value_(&value), source_(std::move(source)), path_(std::move(path)) {}

  const nlohmann::json& raw() const { return *value_; }
  const std::string& source() const { return source_; }
  // The dotted path of this node; "(top level)" for the root.
  std::string where() const { return path_.empty() ? "(top level)" : path_; }

  // Throws kvb::InputError "<source>: <path>: <message>".
  [[noreturn]] void fail(const std::string& message) const;
  // Throws "<source>: <path>: expected <what>, got <describe_json(value)>".
  [[noreturn]] void expected(const std::string& what) const;

  bool is_null() const { return value_->is_null(); }
  bool is_object() const { return value_->is_object(); }
  bool is_array() const { return value_->is_array(); }
  bool is_string() const { return value_->is_string(); }
  bool is_number() const { return value_->is_number(); }
  bool is_bool() const { return value_->is_boolean(); }

  // --- objects
  const JsonNode& object() const;   // checks this is an object; returns *this
  // True when `key` is present and not null (this must be an object).
  bool has(const std::string& key) const;
  // The member `key`: required (missing or null: "<path>.<key>: missing").
  JsonNode at(const std::string& key) const;
  // The member when present and not null.
  std::optional<JsonNode> find(const std::string& key) const;
  // Members in document order (this must be an object).
  std::vector<std::pair<std::string, JsonNode>> members() const;
  // Refuses members not in `known` ("<path>: unknown field 'x' (known: a, b, c)").
  void only_keys(std::initializer_list<std::string_view> known) const;

  // --- arrays
  const JsonNode& array() const;  // checks this is an array; returns *this
  std::size_t size() const;       // elements of an array / members of an object
  JsonNode operator[](std::size_t i) const;  // array element, bounds-checked
  std::vector<JsonNode> items() const;       // array elements

  // --- scalars (this node)
  std::string str() const;
  bool boolean() const;
  // An integer in [lo, hi]. A number written with a fraction or exponent is accepted when it is
  // a whole number (2e3); 2.5 is not.
  std::int64_t integer(std::int64_t lo = std::numeric_limits<std::int64_t>::min(),
                       std::int64_t hi = std::numeric_limits<std::int64_t>::max()) const;
  int int32(int lo = std::numeric_limits<int>::min(), int hi = std::numeric_limits<int>::max()) const {
    return static_cast<int>(integer(lo, hi));
  }
  // A finite number in [lo, hi].
  double number(double lo = -std::numeric_limits<double>::max(),
                double hi = std::numeric_limits<double>::max()) const;
  // A string out of `choices`.
  std::string choice(std::initializer_list<std::string_view> choices) const;

  // --- members with defaults (absent or null: the default)
  std::string str(const std::string& key, const std::string& fallback) const;
  bool boolean(const std::string& key, bool fallback) const;
  std::int64_t integer(const std::string& key, std::int64_t fallback, std::int64_t lo,
                       std::int64_t hi) const;
  int int32(const std::string& key, int fallback, int lo, int hi) const {
    return static_cast<int>(integer(key, fallback, lo, hi));
  }
  double number(const std::string& key, double fallback, double lo, double hi) const;

  // Arrays of scalars.
  std::vector<std::string> strings() const;
  std::vector<std::int64_t> integers(std::int64_t lo, std::int64_t hi) const;

 private:
  std::string child_path(const std::string& key) const;
  const nlohmann::json* value_;
  std::string source_;
  std::string path_;
};

}  // namespace kvb
