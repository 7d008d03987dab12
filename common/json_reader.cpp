#include "common/json_reader.h"

#include <cmath>
#include <filesystem>
#include <system_error>

#include "common/check.h"
#include "common/error_text.h"
#include "common/json_io.h"

namespace kvb {
namespace {

using json = nlohmann::json;

// Builds the document like nlohmann's own DOM parser, and refuses what it would take silently:
// nesting beyond the limit and duplicate keys. It never recurses, whatever the input.
class CheckedDomBuilder {
 public:
  CheckedDomBuilder(json& root, const std::string& source, int max_depth)
      : root_(root), source_(source), max_depth_(max_depth) {}

  bool null() { return put(json(nullptr)); }
  bool boolean(bool v) { return put(json(v)); }
  bool number_integer(json::number_integer_t v) { return put(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return put(json(v)); }
  bool number_float(json::number_float_t v, const json::string_t& text) {
    if (!std::isfinite(v)) fail("number " + quote_input(text) + " is out of range");
    return put(json(v));
  }
  bool string(json::string_t& v) { return put(json(std::move(v))); }
  bool binary(json::binary_t& v) { return put(json::binary(std::move(v))); }
  bool start_object(std::size_t) { return open(json::object()); }
  bool key(json::string_t& k) {
    json* obj = stack_.back();
    if (obj->contains(k)) fail(path() + ": duplicate key " + quote_input(k));
    pending_key_ = std::move(k);
    return true;
  }
  bool end_object() { return close(); }
  bool start_array(std::size_t) { return open(json::array()); }
  bool end_array() { return close(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    std::string msg = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 2: ...": keep the tail.
    auto p = msg.find("] ");
    if (p != std::string::npos) msg = msg.substr(p + 2);
    if (e.id == 406) fail(msg);  // number overflow
    fail("invalid JSON: " + msg);
  }

 private:
  [[noreturn]] void fail(const std::string& message) const {
    throw InputError(source_ + ": " + message);
  }
  std::string path() const { return path_.empty() ? "(top level)" : path_; }

  json* insert(json&& v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    json* parent = stack_.back();
    if (parent->is_array()) {
      parent->push_back(std::move(v));
      return &parent->back();
    }
    json& slot = (*parent)[pending_key_];
    slot = std::move(v);
    return &slot;
  }
  bool put(json&& v) {
    insert(std::move(v));
    return true;
  }
  bool open(json&& container) {
    if (static_cast<int>(stack_.size()) >= max_depth_) {
      fail("nesting deeper than " + std::to_string(max_depth_) + " levels");
    }
    // The path is kept for messages about duplicate keys; it is cheap at these depths.
    std::string seg;
    if (!stack_.empty()) {
      const json* parent = stack_.back();
      seg = parent->is_array() ? "[" + std::to_string(parent->size()) + "]"
                               : (path_.empty() ? "" : ".") + one_line(pending_key_, 80);
    }
    segments_.push_back(seg.size());
    path_ += seg;
    stack_.push_back(insert(std::move(container)));
    return true;
  }
  bool close() {
    stack_.pop_back();
    path_.resize(path_.size() - segments_.back());
    segments_.pop_back();
    return true;
  }

  json& root_;
  const std::string& source_;
  int max_depth_;
  std::vector<json*> stack_;
  std::vector<std::size_t> segments_;
  std::string path_;
  std::string pending_key_;
};

const char* article_kind(const json& v) {
  switch (v.type()) {
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a number";
    case json::value_t::binary:
      return "binary data";
    case json::value_t::discarded:
      return "a discarded value";
    case json::value_t::null:
      return "null";
  }
  return "?";
}

}  // namespace

json parse_json(std::string_view text, const std::string& source, const JsonLimits& limits) {
  if (text.size() > limits.max_bytes) {
    throw InputError(source + ": " + std::to_string(text.size()) + " bytes, more than the " +
                     std::to_string(limits.max_bytes) + " a JSON input may have");
  }
  // nlohmann's lexer takes a NUL byte between tokens for the end of the input, so
  // "{...}\0anything" would parse; a JSON text never holds a raw NUL.
  if (auto nul = text.find('\0'); nul != std::string_view::npos) {
    throw InputError(source + ": invalid JSON: a NUL byte at offset " + std::to_string(nul));
  }
  json root;
  CheckedDomBuilder builder(root, source, limits.max_depth);
  json::sax_parse(text.begin(), text.end(), &builder, json::input_format_t::json, true);
  return root;
}

json read_json_input(const std::string& path, const JsonLimits& limits) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec && size > limits.max_bytes) {
    throw InputError(path + ": " + std::to_string(size) + " bytes, more than the " +
                     std::to_string(limits.max_bytes) + " a JSON input may have");
  }
  return parse_json(read_file(path), path, limits);
}

std::string describe_json(const json& v) {
  std::string out = article_kind(v);
  switch (v.type()) {
    case json::value_t::string:
      return out + " " + quote_input(v.get_ref<const std::string&>());
    case json::value_t::boolean:
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return out + " " + v.dump();
    default:
      return out;
  }
}

// ---------------------------------------------------------------------------------------------

void JsonNode::fail(const std::string& message) const {
  throw InputError((source_.empty() ? "" : source_ + ": ") + where() + ": " + message);
}

void JsonNode::expected(const std::string& what) const {
  fail("expected " + what + ", got " + describe_json(*value_));
}

std::string JsonNode::child_path(const std::string& key) const {
  const std::string k = one_line(key, 80);
  return path_.empty() ? k : path_ + "." + k;
}

const JsonNode& JsonNode::object() const {
  if (!value_->is_object()) expected("an object");
  return *this;
}

bool JsonNode::has(const std::string& key) const {
  object();
  auto it = value_->find(key);
  return it != value_->end() && !it->is_null();
}

JsonNode JsonNode::at(const std::string& key) const {
  object();
  auto it = value_->find(key);
  if (it == value_->end() || it->is_null()) {
    throw InputError((source_.empty() ? "" : source_ + ": ") + child_path(key) + ": missing");
  }
  return JsonNode(*it, source_, child_path(key));
}

std::optional<JsonNode> JsonNode::find(const std::string& key) const {
  object();
  auto it = value_->find(key);
  if (it == value_->end() || it->is_null()) return std::nullopt;
  return JsonNode(*it, source_, child_path(key));
}

std::vector<std::pair<std::string, JsonNode>> JsonNode::members() const {
  object();
  std::vector<std::pair<std::string, JsonNode>> out;
  out.reserve(value_->size());
  for (auto it = value_->begin(); it != value_->end(); ++it) {
    out.emplace_back(it.key(), JsonNode(it.value(), source_, child_path(it.key())));
  }
  return out;
}

void JsonNode::only_keys(std::initializer_list<std::string_view> known) const {
  object();
  for (auto it = value_->begin(); it != value_->end(); ++it) {
    bool ok = false;
    for (auto k : known) ok |= it.key() == k;
    if (ok) continue;
    std::string list;
    for (auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
    fail("unknown field " + quote_input(it.key()) + " (known: " + list + ")");
  }
}

const JsonNode& JsonNode::array() const {
  if (!value_->is_array()) expected("an array");
  return *this;
}

std::size_t JsonNode::size() const {
  if (!value_->is_array() && !value_->is_object()) expected("an array or an object");
  return value_->size();
}

JsonNode JsonNode::operator[](std::size_t i) const {
  array();
  if (i >= value_->size()) {
    fail("has " + std::to_string(value_->size()) + " elements, element " + std::to_string(i) +
         " is missing");
  }
  return JsonNode((*value_)[i], source_, path_ + "[" + std::to_string(i) + "]");
}

std::vector<JsonNode> JsonNode::items() const {
  array();
  std::vector<JsonNode> out;
  out.reserve(value_->size());
  for (std::size_t i = 0; i < value_->size(); ++i) {
    out.emplace_back((*value_)[i], source_, path_ + "[" + std::to_string(i) + "]");
  }
  return out;
}

std::string JsonNode::str() const {
  if (!value_->is_string()) expected("a string");
  return value_->get_ref<const std::string&>();
}

bool JsonNode::boolean() const {
  if (!value_->is_boolean()) expected("a boolean");
  return value_->get<bool>();
}

std::int64_t JsonNode::integer(std::int64_t lo, std::int64_t hi) const {
  const std::string range = "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  std::int64_t v = 0;
  if (value_->is_number_unsigned()) {
    const auto u = value_->get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) expected(range);
    v = static_cast<std::int64_t>(u);
  } else if (value_->is_number_integer()) {
    v = value_->get<std::int64_t>();
  } else if (value_->is_number_float()) {
    const double d = value_->get<double>();
    // Whole numbers written as 2e3 or 4.0 are integers; beyond ±2^63 they cannot be.
    if (!(d == std::floor(d)) || d < -9.2233720368547758e18 || d >= 9.2233720368547758e18) {
      expected(range);
    }
    v = static_cast<std::int64_t>(d);
  } else {
    expected(range);
  }
  if (v < lo || v > hi) expected(range);
  return v;
}

double JsonNode::number(double lo, double hi) const {
  if (!value_->is_number()) expected("a number");
  const double d = value_->get<double>();
  if (!std::isfinite(d) || d < lo || d > hi) {
    std::ostringstream os;
    os << "a number in [" << lo << ", " << hi << "]";
    expected(os.str());
  }
  return d;
}

std::string JsonNode::choice(std::initializer_list<std::string_view> choices) const {
  std::string list;
  for (auto c : choices) list += (list.empty() ? "" : ", ") + std::string(c);
  if (!value_->is_string()) expected("one of " + list);
  const auto& s = value_->get_ref<const std::string&>();
  for (auto c : choices) {
    if (s == c) return s;
  }
  expected("one of " + list);
}

std::string JsonNode::str(const std::string& key, const std::string& fallback) const {
  auto v = find(key);
  return v ? v->str() : fallback;
}

bool JsonNode::boolean(const std::string& key, bool fallback) const {
  auto v = find(key);
  return v ? v->boolean() : fallback;
}

std::int64_t JsonNode::integer(const std::string& key, std::int64_t fallback, std::int64_t lo,
                               std::int64_t hi) const {
  auto v = find(key);
  return v ? v->integer(lo, hi) : fallback;
}

double JsonNode::number(const std::string& key, double fallback, double lo, double hi) const {
  auto v = find(key);
  return v ? v->number(lo, hi) : fallback;
}

std::vector<std::string> JsonNode::strings() const {
  std::vector<std::string> out;
  for (const auto& item : items()) out.push_back(item.str());
  return out;
}

std::vector<std::int64_t> JsonNode::integers(std::int64_t lo, std::int64_t hi) const {
  std::vector<std::int64_t> out;
  for (const auto& item : items()) out.push_back(item.integer(lo, hi));
  return out;
}

}  // namespace kvb
