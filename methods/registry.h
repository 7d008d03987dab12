// The explicit list of KV-cache methods (methods/registry.cpp, KVB_METHODS: one line per
// method). Each entry is defined in its method's own file as `MethodEntry <name>_entry()`: help
// text, parameter schema, one typed factory, the optional cross-parameter checks, and what the
// contract test (tests/test_methods_contract.cpp) checks the method on.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "methods/chain.h"
#include "methods/kv_method.h"
#include "methods/slot_store.h"
#include "methods/spec.h"

namespace kvb {

struct ParamSchema {
  std::string name;
  std::string type;           // "int", "float", "enum", "text" (a word the method's
                              // finalize checks: letters, digits, _ - ., at most 256)
  std::string default_value;  // filled into the canonical spec when absent; "" = required;
                              // "auto" = derived from other parameters (MethodEntry::finalize)
  std::vector<std::string> choices;  // for enum, and the allowed values of an int when non-empty
  // For int/float without choices: the documented range, inclusive, checked before any
  // arithmetic on the value (method_registry() refuses a schema without one, min < max).
  double min = 0, max = 0;
  std::string help;
  // An enum of dtypes whose "auto" (allowed besides the choices) is the run's compute dtype,
  // resolved by canonicalize() so that the canonical spec names the dtype used.
  bool auto_is_compute_dtype = false;
};

// The largest token count a spec parameter may name (budget, window, sink, recent, residual):
// 2^24 = 16,777,216 tokens, far beyond any context kvbench runs, small enough that slot
// arithmetic (slots x layers x heads x head_dim x bytes) cannot overflow int64.
inline constexpr double kMaxSpecTokens = 16777216.0;
// The largest group / pooling size a spec may name (channels or tokens): 2^16.
inline constexpr double kMaxSpecGroup = 65536.0;

enum class StageKind { kStorage, kSelector };

// Factories build a stage from its validated, default-filled spec (the method keeps that spec and
// prints it as its canonical spec()).
using StorageFactory = std::function<std::unique_ptr<StorageMethod>(const StageSpec&)>;
using SelectorFactory = std::function<std::unique_ptr<SelectorMethod>(const StageSpec&)>;

// The contract test's logits check runs a kContractTokens-token sequence whose first
// kContractPrompt tokens are the prompt (chunks of 30, 8 and 1), then end_prefill(), then the
// rest one token at a time, on a 3-layer random model with 2 KV heads of dim 16.
inline constexpr int64_t kContractTokens = 37, kContractPrompt = 30;

// What the contract test checks a method on; adding a method adds its cases, no test edit.
struct ContractCases {
  std::vector<std::string> examples;  // specs every contract check instantiates (at least one)
  // Mean |view - appended| allowed per key/value element of a stage with this spec (the test
  // takes the largest over a chain's stages). Selectors never change what they keep: exact_view.
  std::function<double(const StageSpec&)> view_tolerance;
  std::vector<std::string> lossless;     // must reproduce the full cache's logits (1e-5)
  std::vector<std::string> compressing;  // must change them (by more than 1e-4)
};

inline double exact_view(const StageSpec&) { return 0.0; }

struct MethodEntry {
  std::string name;
  std::string family;  // quant | evict | merge | lowrank | baseline
  std::string help;
  std::vector<ParamSchema> params;
  std::variant<StorageFactory, SelectorFactory> make;
  // Fills "auto" parameters and checks constraints between parameters; throws
  // InputError("spec '<text>': <stage>: <problem>") (stage_fail). Optional.
  std::function<void(const std::string& text, StageSpec&)> finalize;
  ContractCases contract;

  StageKind kind() const {
    return std::holds_alternative<StorageFactory>(make) ? StageKind::kStorage
                                                        : StageKind::kSelector;
  }
};

const std::vector<MethodEntry>& method_registry();
const MethodEntry* find_method(const std::string& name);

// The text of a parameter's schema for help output: "int in [1, 8], default 4" etc.
std::string describe_param(const ParamSchema& p);

// Validates names, keys and values against the schema and fills defaults; dtype parameters left
// "auto" become `compute`, the dtype of the run's keys and values. A chain without a storage
// stage (selectors alone) stores into full(dtype=<compute>): in an fp32 run the canonical spec
// omits it (`h2o(budget=8)` and `h2o(budget=8)+full(dtype=fp32)` are both `h2o(budget=8)`, as
// before compute dtypes were resolved); in any other run it names it (`h2o(budget=8)` in a bf16
// run is `h2o(budget=8)+full(dtype=bf16)`). So every fp32 canonical spec is what it was.
// Throws kvb::InputError "spec '<text>': <problem>" listing what exists.
std::vector<StageSpec> canonicalize(const std::string& text,
                                    torch::ScalarType compute = torch::kFloat32);
// A lone storage stage is that method; otherwise a chain (selectors alone: into `full` in the
// compute dtype, see canonicalize()).
std::unique_ptr<KVMethod> make_method(const std::string& text,
                                      torch::ScalarType compute = torch::kFloat32);

// Whether some stage of the canonical chain acts only at end_prefill()
// (SelectorMethod::acts_only_at_end_prefill: SnapKV); without end_prefill — perplexity in decode
// mode — such a chain does not do what its spec says.
bool acts_only_at_end_prefill(const std::string& text);

int64_t spec_int(const StageSpec& s, const std::string& key);
double spec_float(const StageSpec& s, const std::string& key);

// For finalize: throws InputError "spec '<text>': <stage>: <why>".
[[noreturn]] void stage_fail(const std::string& text, const StageSpec& st, const std::string& why);

}  // namespace kvb
