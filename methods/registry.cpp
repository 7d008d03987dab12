#include "methods/registry.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "harness/common/check.h"
#include "methods/evict/h2o.h"
#include "methods/evict/snapkv.h"
#include "methods/evict/streaming.h"
#include "methods/quant/dense.h"
#include "methods/quant/full.h"
#include "methods/quant/int_quant.h"
#include "methods/quant/kivi.h"

namespace kvb {
namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

torch::ScalarType dtype_of(const std::string& s) {
  if (s == "fp16") return torch::kFloat16;
  if (s == "bf16") return torch::kBFloat16;
  return torch::kFloat32;
}

using MethodPtr = std::unique_ptr<KVMethod>;

[[noreturn]] void stage_fail(const std::string& text, const StageSpec& st, const std::string& why) {
  throw InputError("spec '" + text + "': " + st.str() + ": " + why);
}

// A selector used alone stores into dense fp32 slots; its spec omits the storage.
MethodPtr alone(std::unique_ptr<SelectorMethod> sel) {
  auto m = std::make_unique<ChainMethod>(std::vector<std::shared_ptr<const SelectorMethod>>{std::move(sel)},
                                         std::make_shared<DenseMethod>(torch::kFloat32));
  m->set_storage_implicit(true);
  return m;
}

std::unique_ptr<SelectorMethod> make_streaming(const StageSpec& s) {
  return std::make_unique<StreamingSelector>(spec_int(s, "sink"), spec_int(s, "window"));
}
std::unique_ptr<SelectorMethod> make_h2o(const StageSpec& s) {
  return std::make_unique<H2OSelector>(spec_int(s, "budget"), spec_int(s, "recent"));
}
std::unique_ptr<SelectorMethod> make_snapkv(const StageSpec& s) {
  return std::make_unique<SnapKVSelector>(spec_int(s, "budget"), spec_int(s, "window"), spec_int(s, "pool"),
                                          s.params.at("pooling") == "max");
}

std::vector<MethodEntry> builtin_methods() {
  std::vector<MethodEntry> r;
  r.push_back({"full", "baseline", StageKind::kStorage,
               "Uncompressed cache: keys and values stored densely in the given dtype.",
               {{"dtype", "enum", "fp32", {"fp32", "fp16", "bf16"}, 0, 0, "storage dtype"}},
               [](const StageSpec& s) -> MethodPtr {
                 return std::make_unique<FullMethod>(dtype_of(s.params.at("dtype")));
               },
               [](const StageSpec& s) -> std::unique_ptr<StorageMethod> {
                 return std::make_unique<DenseMethod>(dtype_of(s.params.at("dtype")));
               },
               nullptr, nullptr});
  r.push_back({"int", "quant", StageKind::kStorage,
               "Per-token asymmetric integer quantization of keys and values (FlexGen): groups of "
               "`group` channels along the head dim, fp16 scale and zero point per group, packed codes.",
               {{"bits", "int", "4", {"2", "4", "8"}, 0, 0, "bits per element"},
                {"group", "int", "64", {}, 1, 0, "channels per group (capped at head_dim)"}},
               [](const StageSpec& s) -> MethodPtr {
                 return std::make_unique<IntMethod>(static_cast<int>(spec_int(s, "bits")), spec_int(s, "group"));
               },
               [](const StageSpec& s) -> std::unique_ptr<StorageMethod> {
                 return std::make_unique<IntMethod>(static_cast<int>(spec_int(s, "bits")), spec_int(s, "group"));
               },
               nullptr, nullptr});
  r.push_back({"kivi", "quant", StageKind::kStorage,
               "KIVI: keys quantized per channel over groups of `group` tokens, values per token over "
               "groups of `group` channels, asymmetric with fp16 scale/zero; the most recent tokens stay "
               "in full precision (keys until `residual` accumulate, values the last `residual`).",
               {{"bits", "int", "2", {"2", "4"}, 0, 0, "bits per element"},
                {"group", "int", "32", {}, 1, 0, "tokens per key group; channels per value group"},
                {"residual", "int", "128", {}, 1, 0, "full-precision recent tokens (multiple of group)"}},
               [](const StageSpec& s) -> MethodPtr {
                 return std::make_unique<KiviMethod>(static_cast<int>(spec_int(s, "bits")), spec_int(s, "group"),
                                                     spec_int(s, "residual"));
               },
               [](const StageSpec& s) -> std::unique_ptr<StorageMethod> {
                 return std::make_unique<KiviMethod>(static_cast<int>(spec_int(s, "bits")), spec_int(s, "group"),
                                                     spec_int(s, "residual"));
               },
               nullptr,
               [](const std::string& text, StageSpec& s) {
                 if (spec_int(s, "residual") % spec_int(s, "group") != 0)
                   stage_fail(text, s, "residual must be a multiple of group");
               }});
  r.push_back({"streaming", "evict", StageKind::kSelector,
               "StreamingLLM: keep the first `sink` tokens (attention sinks) and the `window` most "
               "recent tokens; evict the rest as they leave the window.",
               {{"sink", "int", "4", {}, 0, 0, "attention-sink tokens kept from the start"},
                {"window", "int", "", {}, 1, 0, "recent tokens kept (slots = sink + window)"}},
               [](const StageSpec& s) -> MethodPtr { return alone(make_streaming(s)); },
               nullptr, make_streaming, nullptr});
  r.push_back({"h2o", "evict", StageKind::kSelector,
               "H2O heavy hitters: attention accumulated per token (summed over the query heads of a "
               "KV group); over `budget` slots, evict the lowest-score token outside the `recent` window.",
               {{"budget", "int", "", {}, 1, 0, "slots kept per KV head"},
                {"recent", "int", "auto", {}, 0, 0, "most recent tokens always kept (auto: budget/2)"}},
               [](const StageSpec& s) -> MethodPtr { return alone(make_h2o(s)); },
               nullptr, make_h2o,
               [](const std::string& text, StageSpec& s) {
                 if (s.params.at("recent") == "auto") s.params["recent"] = std::to_string(spec_int(s, "budget") / 2);
                 if (spec_int(s, "recent") > spec_int(s, "budget")) stage_fail(text, s, "recent must not exceed budget");
               }});
  r.push_back({"snapkv", "evict", StageKind::kSelector,
               "SnapKV: after the prompt, the last `window` prompt queries vote with their attention, "
               "pooled over `pool` neighbouring tokens; each KV head keeps its top budget-window "
               "prompt tokens plus the window. Compresses once (end of prefill).",
               {{"budget", "int", "", {}, 1, 0, "slots kept per KV head after the prompt"},
                {"window", "int", "32", {}, 1, 0, "observation window (last prompt tokens)"},
                {"pool", "int", "7", {}, 1, 0, "pooling kernel over the token axis (odd)"},
                {"pooling", "enum", "max", {"max", "avg"}, 0, 0, "pooling type"}},
               [](const StageSpec& s) -> MethodPtr { return alone(make_snapkv(s)); },
               nullptr, make_snapkv,
               [](const std::string& text, StageSpec& s) {
                 if (spec_int(s, "window") >= spec_int(s, "budget")) stage_fail(text, s, "window must be smaller than budget");
                 if (spec_int(s, "pool") % 2 == 0) stage_fail(text, s, "pool must be odd");
               }});
  return r;
}

void check_value(const std::string& text, const StageSpec& st, const ParamSchema& p,
                 const std::string& v) {
  auto fail = [&](const std::string& why) {
    return InputError("spec '" + text + "': " + st.name + "(" + p.name + "=" + v + "): " + why);
  };
  if (p.type == "enum") {
    for (const auto& c : p.choices)
      if (c == v) return;
    throw fail("expected one of " + join(p.choices));
  }
  if (v == "auto" && p.default_value == "auto") return;
  double x = 0;
  if (p.type == "int") {
    int64_t n = 0;
    auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || ptr != v.data() + v.size()) throw fail("not an integer");
    x = static_cast<double>(n);
    if (!p.choices.empty() && std::find(p.choices.begin(), p.choices.end(), v) == p.choices.end())
      throw fail("expected one of " + join(p.choices));
  } else {
    size_t used = 0;
    try {
      x = std::stod(v, &used);
    } catch (...) {
      used = 0;
    }
    if (used != v.size() || !std::isfinite(x)) throw fail("not a number");
  }
  if (x < p.min || (p.max != 0 && x > p.max)) {
    std::string range = p.max != 0 ? " and at most " + std::to_string(static_cast<int64_t>(p.max)) : "";
    throw fail("must be at least " + std::to_string(static_cast<int64_t>(p.min)) + range);
  }
}

}  // namespace

const std::vector<MethodEntry>& method_registry() {
  static const std::vector<MethodEntry> r = builtin_methods();
  return r;
}

const MethodEntry* find_method(const std::string& name) {
  for (const auto& e : method_registry())
    if (e.name == name) return &e;
  return nullptr;
}

std::vector<StageSpec> canonicalize(const std::string& text) {
  std::vector<StageSpec> chain = parse_spec(text);
  std::vector<std::string> names;
  for (const auto& e : method_registry()) names.push_back(e.name);
  for (size_t i = 0; i < chain.size(); ++i) {
    StageSpec& st = chain[i];
    const MethodEntry* e = find_method(st.name);
    KVB_INPUT_CHECK(e, "spec '", text, "': unknown method '", st.name, "' (known: ", join(names), ")");
    std::vector<std::string> keys;
    for (const auto& p : e->params) keys.push_back(p.name);
    for (const auto& [k, v] : st.params) {
      const ParamSchema* ps = nullptr;
      for (const auto& p : e->params)
        if (p.name == k) ps = &p;
      KVB_INPUT_CHECK(ps, "spec '", text, "': method '", st.name, "' has no parameter '", k,
                      "' (known: ", keys.empty() ? std::string("none") : join(keys), ")");
      check_value(text, st, *ps, v);
    }
    for (const auto& p : e->params) {
      if (st.params.count(p.name)) continue;
      KVB_INPUT_CHECK(!p.default_value.empty(), "spec '", text, "': ", st.name, " needs parameter '",
                      p.name, "' (", p.help, ")");
      st.params[p.name] = p.default_value;
    }
    if (e->finalize) e->finalize(text, st);
    const bool last = i + 1 == chain.size();
    KVB_INPUT_CHECK(last || e->kind == StageKind::kSelector, "spec '", text, "': '", st.name,
                    "' stores the cache and must be the last stage");
  }
  // Selectors store into full(dtype=fp32) by default: one canonical form for both spellings.
  if (chain.size() > 1 && chain.back().str() == "full(dtype=fp32)") chain.pop_back();
  return chain;
}

std::unique_ptr<KVMethod> make_method(const std::string& text) {
  std::vector<StageSpec> chain = canonicalize(text);
  if (chain.size() == 1) return find_method(chain[0].name)->make(chain[0]);
  std::vector<std::shared_ptr<const SelectorMethod>> selectors;
  std::shared_ptr<const StorageMethod> storage;
  for (const StageSpec& st : chain) {
    const MethodEntry* e = find_method(st.name);
    if (e->kind == StageKind::kSelector) selectors.push_back(e->make_selector(st));
    else storage = e->make_storage(st);
  }
  const bool implicit = !storage;
  if (implicit) storage = std::make_shared<DenseMethod>(torch::kFloat32);
  auto m = std::make_unique<ChainMethod>(std::move(selectors), std::move(storage));
  m->set_storage_implicit(implicit);
  return m;
}

std::string describe_param(const ParamSchema& p) {
  std::string s = p.type;
  if (!p.choices.empty()) s += " in {" + join(p.choices) + "}";
  else if (p.type != "enum" && (p.min != 0 || p.max != 0))
    s += " >= " + std::to_string(static_cast<int64_t>(p.min)) +
         (p.max != 0 ? " and <= " + std::to_string(static_cast<int64_t>(p.max)) : "");
  if (p.default_value.empty()) s += ", required";
  else s += ", default " + p.default_value;
  return s;
}

int64_t spec_int(const StageSpec& s, const std::string& key) { return std::stoll(s.params.at(key)); }
double spec_float(const StageSpec& s, const std::string& key) { return std::stod(s.params.at(key)); }

}  // namespace kvb
