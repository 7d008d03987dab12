// The explicit list of KV-cache methods, each with help text and a parameter schema.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "methods/chain.h"
#include "methods/kv_method.h"
#include "methods/slot_store.h"
#include "methods/spec.h"

namespace kvb {

struct ParamSchema {
  std::string name;
  std::string type;                  // "int", "float", "enum"
  std::string default_value;         // filled into the canonical spec when absent; "" = required;
                                     // "auto" = derived from other parameters (MethodEntry::finalize)
  std::vector<std::string> choices;  // for enum, and the allowed values of an int when non-empty
  double min = 0, max = 0;           // for int/float (inclusive; max 0 = unbounded)
  std::string help;
};

enum class StageKind { kStorage, kSelector };

struct MethodEntry {
  std::string name;
  std::string family;  // quant | evict | merge | lowrank | baseline
  StageKind kind;
  std::string help;
  std::vector<ParamSchema> params;
  // Builds the method from a validated, default-filled stage spec.
  std::function<std::unique_ptr<KVMethod>(const StageSpec&)> make;
  // kStorage: the same method as the last stage of a chain. kSelector: the selecting stage.
  std::function<std::unique_ptr<StorageMethod>(const StageSpec&)> make_storage;
  std::function<std::unique_ptr<SelectorMethod>(const StageSpec&)> make_selector;
  // Fills "auto" parameters and checks constraints between parameters; throws
  // InputError("spec '<text>': <stage>: <problem>").
  std::function<void(const std::string& text, StageSpec&)> finalize;
};

const std::vector<MethodEntry>& method_registry();
const MethodEntry* find_method(const std::string& name);

// The text of a parameter's schema for help output: "int in [1, 8], default 4" etc.
std::string describe_param(const ParamSchema& p);

// Validates names, keys and values against the schema and fills defaults.
// Throws kvb::InputError "spec '<text>': <problem>" listing what exists.
std::vector<StageSpec> canonicalize(const std::string& text);
std::unique_ptr<KVMethod> make_method(const std::string& text);

int64_t spec_int(const StageSpec& s, const std::string& key);
double spec_float(const StageSpec& s, const std::string& key);

}  // namespace kvb
