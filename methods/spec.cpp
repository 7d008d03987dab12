#include "methods/spec.h"

#include <cctype>

#include "common/check.h"
#include "common/error_text.h"

namespace kvb {
namespace {

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

bool is_ident(const std::string& s) {
  if (s.empty() || !std::isalpha(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  return true;
}

// A piece of the spec for a message: escaped, cut at 80 characters.
std::string piece(const std::string& s) { return "'" + one_line(s, 80) + "'"; }

StageSpec parse_stage(const std::string& whole, const std::string& text) {
  auto fail = [&](const std::string& why) {
    return InputError("spec " + quote_spec(whole) + ": " + why);
  };
  StageSpec st;
  std::string s = trim(text);
  size_t open = s.find('(');
  if (open == std::string::npos) {
    if (s.find(')') != std::string::npos) throw fail("unbalanced parentheses");
    st.name = s;
  } else {
    if (s.back() != ')')
      throw fail("unbalanced parentheses (expected ')' at the end of " + piece(s) + ")");
    st.name = trim(s.substr(0, open));
    std::string inner = s.substr(open + 1, s.size() - open - 2);
    if (inner.find('(') != std::string::npos || inner.find(')') != std::string::npos)
      throw fail("unbalanced parentheses");
    if (!trim(inner).empty()) {
      size_t start = 0;
      while (start <= inner.size()) {
        size_t comma = inner.find(',', start);
        std::string kv = trim(inner.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
        size_t eq = kv.find('=');
        if (eq == std::string::npos) throw fail("expected key=value, got " + piece(kv));
        std::string k = trim(kv.substr(0, eq)), v = trim(kv.substr(eq + 1));
        if (!is_ident(k)) throw fail("bad parameter name " + piece(k));
        if (v.empty()) throw fail("parameter " + piece(k) + " has no value");
        if (!st.params.emplace(k, v).second) throw fail("parameter " + piece(k) + " given twice");
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    }
  }
  if (!is_ident(st.name)) throw fail("bad method name " + piece(st.name));
  return st;
}

}  // namespace

std::string quote_spec(const std::string& text) { return "'" + one_line(text, 200) + "'"; }

std::string StageSpec::str() const {
  if (params.empty()) return name;
  std::string s = name + "(";
  bool first = true;
  for (const auto& [k, v] : params) {
    if (!first) s += ",";
    s += k + "=" + v;
    first = false;
  }
  return s + ")";
}

std::vector<StageSpec> parse_spec(const std::string& text) {
  KVB_INPUT_CHECK(!trim(text).empty(), "spec ", quote_spec(text), ": empty");
  KVB_INPUT_CHECK(text.size() <= kMaxSpecChars, "spec ", quote_spec(text), ": ", text.size(),
                  " characters, more than the ", kMaxSpecChars, " a spec may have");
  std::vector<StageSpec> chain;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    char c = i < text.size() ? text[i] : '+';
    if (c == '(') ++depth;
    if (c == ')') --depth;
    KVB_INPUT_CHECK(depth >= 0 && depth <= 1, "spec ", quote_spec(text),
                    ": unbalanced parentheses");
    if (c == '+' && depth == 0) {
      KVB_INPUT_CHECK(chain.size() < kMaxSpecStages, "spec ", quote_spec(text), ": more than ",
                      kMaxSpecStages, " stages");
      chain.push_back(parse_stage(text, text.substr(start, i - start)));
      start = i + 1;
    }
  }
  KVB_INPUT_CHECK(depth == 0, "spec ", quote_spec(text), ": unbalanced parentheses");
  return chain;
}

std::string join_spec(const std::vector<StageSpec>& chain) {
  std::string s;
  for (size_t i = 0; i < chain.size(); ++i) s += (i ? "+" : "") + chain[i].str();
  return s;
}

}  // namespace kvb
