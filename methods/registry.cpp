#include "methods/registry.h"

#include <algorithm>
#include <charconv>
#include <cctype>
#include <cmath>

#include "common/check.h"
#include "common/dtype.h"
#include "common/error_text.h"

namespace kvb {
namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

// The registry: one line per method, in the order `kvbench methods` lists them and unknown-name
// errors name them. X(name) declares `MethodEntry name_entry()`, which the method's own file
// defines (methods/quant/full.cpp: full_entry()), and lists it: adding a method is its file plus
// one line here.
#define KVB_METHODS(X) \
  X(full)              \
  X(int)               \
  X(kivi)              \
  X(gear)              \
  X(zipcache)          \
  X(mikv)              \
  X(kvquant)           \
  X(fp8)               \
  X(rotatekv)          \
  X(qserve)            \
  X(streaming)         \
  X(h2o)               \
  X(snapkv)            \
  X(pyramidkv)         \
  X(adakv)             \
  X(knorm)             \
  X(random)            \
  X(duoattention)      \
  X(razorattention)    \
  X(quest)             \
  X(tova)              \
  X(scissorhands)      \
  X(a2sf)              \
  X(observed_attention) \
  X(keydiff)           \
  X(lagkv)

}  // namespace

#define KVB_DECLARE_ENTRY(name) MethodEntry name##_entry();
KVB_METHODS(KVB_DECLARE_ENTRY)
#undef KVB_DECLARE_ENTRY

namespace {

std::vector<MethodEntry> builtin_methods() {
#define KVB_LIST_ENTRY(name) name##_entry(),
  return {KVB_METHODS(KVB_LIST_ENTRY)};
#undef KVB_LIST_ENTRY
}

std::string range_text(const ParamSchema& p) {
  return "at least " + std::to_string(static_cast<int64_t>(p.min)) + " and at most " +
         std::to_string(static_cast<int64_t>(p.max));
}

// Checks `v` against the schema before any arithmetic on it and returns it in canonical form
// (an int without sign or leading zeros: "007" is "7").
std::string check_value(const std::string& text, const StageSpec& st, const ParamSchema& p,
                        const std::string& v) {
  auto fail = [&](const std::string& why) {
    return InputError("spec " + quote_spec(text) + ": " + one_line(st.name, 80) + "(" + p.name +
                      "=" + one_line(v, 80) + "): " + why);
  };
  if (v == "auto" && (p.default_value == "auto" || p.auto_is_compute_dtype)) return v;
  if (p.type == "text") {  // a word the method's finalize() checks (duoattention's roles)
    const bool word = v.size() <= 256 && std::all_of(v.begin(), v.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
    });
    if (!word) throw fail("expected a word of at most 256 letters, digits, '_', '-' or '.'");
    return v;
  }
  if (p.type == "enum") {
    for (const auto& c : p.choices)
      if (c == v) return v;
    throw fail("expected one of " + join(p.choices));
  }
  if (p.type == "int") {
    int64_t n = 0;
    auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec == std::errc::result_out_of_range)
      throw fail(p.choices.empty() ? "out of range (must be " + range_text(p) + ")"
                                   : "expected one of " + join(p.choices));
    if (ec != std::errc() || ptr != v.data() + v.size()) throw fail("not an integer");
    const std::string canonical = std::to_string(n);
    if (!p.choices.empty()) {
      if (std::find(p.choices.begin(), p.choices.end(), canonical) == p.choices.end())
        throw fail("expected one of " + join(p.choices));
      return canonical;
    }
    if (static_cast<double>(n) < p.min || static_cast<double>(n) > p.max)
      throw fail("must be " + range_text(p));
    return canonical;
  }
  double x = 0;
  size_t used = 0;
  try {
    x = std::stod(v, &used);
  } catch (...) {
    used = 0;
  }
  if (used != v.size() || !std::isfinite(x)) throw fail("not a finite number");
  if (x < p.min || x > p.max)
    throw fail("must be in [" + std::to_string(p.min) + ", " + std::to_string(p.max) + "]");
  // Canonical: the shortest text that reads back as the same double ("0.30", "3e-1" and ".3"
  // are all "0.3"), so one setting has one spec and one identity in the results.
  char buf[64];
  auto [end, ec2] = std::to_chars(buf, buf + sizeof(buf), x);
  KVB_CHECK(ec2 == std::errc(), "spec: cannot print ", x);
  return std::string(buf, end);
}

// Every int or float parameter has a documented range (or a list of choices): a schema without
// one is a bug in the method's file, caught when the registry is first used.
void check_schema(const MethodEntry& e) {
  for (const ParamSchema& p : e.params) {
    if (p.type == "enum") {
      KVB_CHECK(!p.choices.empty(), e.name, ".", p.name, ": an enum without choices");
      continue;
    }
    if (p.type == "text") continue;
    KVB_CHECK(p.type == "int" || p.type == "float", e.name, ".", p.name, ": unknown type ", p.type);
    if (!p.choices.empty()) continue;
    KVB_CHECK(p.min < p.max && std::abs(p.min) <= 9007199254740992.0 &&
                  std::abs(p.max) <= 9007199254740992.0,
              e.name, ".", p.name, ": needs a range [min, max] within +-2^53");
  }
}

}  // namespace

const std::vector<MethodEntry>& method_registry() {
  static const std::vector<MethodEntry> r = [] {
    std::vector<MethodEntry> all = builtin_methods();
    for (const MethodEntry& e : all) check_schema(e);
    return all;
  }();
  return r;
}

const MethodEntry* find_method(const std::string& name) {
  for (const auto& e : method_registry())
    if (e.name == name) return &e;
  return nullptr;
}

std::vector<StageSpec> canonicalize(const std::string& text, torch::ScalarType compute) {
  std::vector<StageSpec> chain = parse_spec(text);
  std::vector<std::string> names;
  for (const auto& e : method_registry()) names.push_back(e.name);
  const std::string spec = "spec " + quote_spec(text);
  for (size_t i = 0; i < chain.size(); ++i) {
    StageSpec& st = chain[i];
    const MethodEntry* e = find_method(st.name);
    KVB_INPUT_CHECK(e, spec, ": unknown method '", one_line(st.name, 80), "' (known: ", join(names),
                    ")");
    std::vector<std::string> keys;
    for (const auto& p : e->params) keys.push_back(p.name);
    for (auto& [k, v] : st.params) {
      const ParamSchema* ps = nullptr;
      for (const auto& p : e->params)
        if (p.name == k) ps = &p;
      KVB_INPUT_CHECK(ps, spec, ": method '", st.name, "' has no parameter '", one_line(k, 80),
                      "' (known: ", keys.empty() ? std::string("none") : join(keys), ")");
      v = check_value(text, st, *ps, v);
    }
    for (const auto& p : e->params) {
      if (!st.params.count(p.name)) {
        KVB_INPUT_CHECK(!p.default_value.empty(), spec, ": ", st.name, " needs parameter '", p.name,
                        "' (", p.help, ")");
        st.params[p.name] = p.default_value;
      }
      if (p.auto_is_compute_dtype && st.params[p.name] == "auto")
        st.params[p.name] = dtype_name(compute);
    }
    if (e->finalize) e->finalize(text, st);
    const bool last = i + 1 == chain.size();
    KVB_INPUT_CHECK(last || e->kind() == StageKind::kSelector, spec, ": '", st.name,
                    "' stores the cache and must be the last stage");
  }
  // A selector keeping a different number of slots per head owns its chain's selection.
  if (chain.size() > 2 || (chain.size() == 2 && find_method(chain.back().name)->kind() ==
                                                    StageKind::kSelector)) {
    for (const StageSpec& st : chain) {
      const auto* make = std::get_if<SelectorFactory>(&find_method(st.name)->make);
      KVB_INPUT_CHECK(!make || !(*make)(st)->ragged_heads(), spec, ": '", st.name,
                      "' keeps a different number of slots per head and must be the only "
                      "selecting stage (it composes with a storage stage: ",
                      st.name, "(...)+kivi)");
    }
  }
  // Selectors alone store into full(dtype=<compute>); in fp32 runs that store is left implicit.
  if (find_method(chain.back().name)->kind() == StageKind::kSelector)
    chain.push_back(canonicalize("full", compute).front());
  if (chain.size() > 1 && compute == torch::kFloat32 && chain.back().str() == "full(dtype=fp32)")
    chain.pop_back();
  return chain;
}

std::unique_ptr<KVMethod> make_method(const std::string& text, torch::ScalarType compute) {
  const std::vector<StageSpec> chain = canonicalize(text, compute);
  std::vector<std::shared_ptr<const SelectorMethod>> selectors;
  std::unique_ptr<StorageMethod> storage;
  for (const StageSpec& st : chain) {
    const MethodEntry* e = find_method(st.name);
    if (const auto* make = std::get_if<SelectorFactory>(&e->make)) selectors.push_back((*make)(st));
    else storage = std::get<StorageFactory>(e->make)(st);
  }
  if (selectors.empty()) return storage;
  // In an fp32 run canonicalize() left the implicit full(dtype=fp32) out of the spec.
  const bool implicit = !storage;
  if (implicit) {
    const StageSpec dense = canonicalize("full", compute).front();
    storage = std::get<StorageFactory>(find_method(dense.name)->make)(dense);
  }
  return std::make_unique<ChainMethod>(std::move(selectors), std::move(storage), implicit);
}

bool acts_only_at_end_prefill(const std::string& text) {
  for (const StageSpec& st : canonicalize(text)) {
    const auto* make = std::get_if<SelectorFactory>(&find_method(st.name)->make);
    if (make && (*make)(st)->acts_only_at_end_prefill()) return true;
  }
  return false;
}

std::string describe_param(const ParamSchema& p) {
  std::string s = p.type;
  if (!p.choices.empty()) s += " in {" + join(p.choices) + "}";
  else if (p.type == "int")
    s += " >= " + std::to_string(static_cast<int64_t>(p.min)) +
         " and <= " + std::to_string(static_cast<int64_t>(p.max));
  else if (p.type == "float")
    s += " in [" + std::to_string(p.min) + ", " + std::to_string(p.max) + "]";
  if (p.default_value.empty()) s += ", required";
  else s += ", default " + p.default_value;
  return s;
}

void stage_fail(const std::string& text, const StageSpec& st, const std::string& why) {
  throw InputError("spec " + quote_spec(text) + ": " + one_line(st.str(), 200) + ": " + why);
}

int64_t spec_int(const StageSpec& s, const std::string& key) { return std::stoll(s.params.at(key)); }
double spec_float(const StageSpec& s, const std::string& key) { return std::stod(s.params.at(key)); }

}  // namespace kvb
