#include "cli/methods_cmd.h"

#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/dtype.h"
#include "common/error_text.h"
#include "methods/registry.h"

namespace kvb::cli {
namespace {

const char* kind_name(StageKind k) { return k == StageKind::kStorage ? "storage" : "selector"; }

int list_methods(bool json) {
  nlohmann::json all = nlohmann::json::array();
  for (const MethodEntry& e : method_registry()) {
    nlohmann::json params = nlohmann::json::array();
    for (const ParamSchema& p : e.params) {
      nlohmann::json j{
          {"name", p.name}, {"type", p.type}, {"help", p.help}, {"schema", describe_param(p)}};
      if (!p.default_value.empty()) j["default"] = p.default_value;
      if (!p.choices.empty()) j["choices"] = p.choices;
      params.push_back(j);
    }
    all.push_back({{"name", e.name},
                   {"family", e.family},
                   {"kind", kind_name(e.kind())},
                   {"help", e.help},
                   {"params", params}});
  }
  if (json) {
    std::cout << all.dump(2) << "\n";
    return 0;
  }
  std::cout << "KV-cache methods (chain selectors before one storage stage: "
               "'snapkv(budget=256)+kivi(bits=2)')\n";
  for (const auto& m : all) {
    std::cout << "\n"
              << m["name"].get<std::string>() << "  [" << m["family"].get<std::string>() << ", "
              << m["kind"].get<std::string>() << "]\n  " << m["help"].get<std::string>() << "\n";
    for (const auto& p : m["params"])
      std::cout << "    " << p["name"].get<std::string>() << ": " << p["schema"].get<std::string>()
                << " -- " << p["help"].get<std::string>() << "\n";
  }
  return 0;
}

}  // namespace

int run_methods(const std::string& describe_spec, const MethodsArgs& a) {
  if (describe_spec.empty()) return list_methods(a.json);
  KVB_INPUT_CHECK(
      a.layers > 0 && a.kv_heads > 0 && a.head_dim > 0 && a.heads > 0 && a.heads % a.kv_heads == 0,
      "methods --describe: the shape needs positive --layers/--heads/--kv-heads/--head-dim, "
      "heads a multiple of kv-heads");
  KVB_INPUT_CHECK(a.tokens > 0, "methods --describe: --tokens must be positive");
  const torch::ScalarType compute = parse_dtype(a.dtype);
  auto method = make_method(describe_spec, compute);
  ModelShape shape;
  shape.n_layers = a.layers;
  shape.n_head_q = a.heads;
  shape.n_head_kv = a.kv_heads;
  shape.head_dim = a.head_dim;
  shape.max_position = a.tokens;
  std::optional<MemoryUse> m = method->promised_memory(shape, a.tokens, compute);
  KVB_INPUT_CHECK(m.has_value(), "spec ", quote_input(describe_spec), ": ", method->spec(),
                  " makes no memory promise");
  std::optional<MemoryUse> ref =
      make_method("full(dtype=fp16)")->promised_memory(shape, a.tokens, compute);
  const double total = static_cast<double>(m->payload_bytes + m->metadata_bytes);
  const double tokens = static_cast<double>(a.tokens);
  const double bpt = 8.0 * total / tokens;
  // Per element of K and V across all layers and KV heads.
  const double bpe =
      8.0 * total / (tokens * 2.0 * static_cast<double>(a.layers * a.kv_heads * a.head_dim));
  const double ratio = static_cast<double>(ref->payload_bytes) / total;
  if (a.json) {
    nlohmann::json j{{"spec", method->spec()},
                     {"effective_spec", method->effective_spec(shape)},
                     {"shape",
                      {{"layers", a.layers},
                       {"heads", a.heads},
                       {"kv_heads", a.kv_heads},
                       {"head_dim", a.head_dim}}},
                     {"tokens", a.tokens},
                     {"compute_dtype", a.dtype},
                     {"payload_bytes", m->payload_bytes},
                     {"metadata_bytes", m->metadata_bytes},
                     {"slots", m->slots},
                     {"bits_per_token", bpt},
                     {"bits_per_element", bpe},
                     {"compression_vs_fp16", ratio}};
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::printf("spec:            %s\n", method->spec().c_str());
  if (const std::string eff = method->effective_spec(shape); eff != method->spec())
    std::printf("on this shape:   %s\n", eff.c_str());
  std::printf(
      "shape:           %lld layers, %lld heads, %lld KV heads, head dim %lld, %lld tokens (%s)\n",
      static_cast<long long>(a.layers), static_cast<long long>(a.heads),
      static_cast<long long>(a.kv_heads), static_cast<long long>(a.head_dim),
      static_cast<long long>(a.tokens), a.dtype.c_str());
  std::printf("payload bytes:   %lld\n", static_cast<long long>(m->payload_bytes));
  std::printf("metadata bytes:  %lld\n", static_cast<long long>(m->metadata_bytes));
  std::printf("slots held:      %lld (summed over layers and KV heads)\n",
              static_cast<long long>(m->slots));
  std::printf("bits per token:  %.1f (all layers; %.3f bits per K/V element)\n", bpt, bpe);
  std::printf("promise:         %s\n",
              method->promise_is_exact()
                  ? "exact (what a state holds)"
                  : "upper bound (the bytes held after evictions depend on which slots the "
                    "selectors drop)");
  std::printf("vs full fp16:    %.2fx smaller\n", ratio);
  return 0;
}

}  // namespace kvb::cli
