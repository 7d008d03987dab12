// `kvbench methods`: the registry (help and parameter schema per method), and
// `kvbench methods --describe SPEC`: the canonical spec and the memory it promises.
#pragma once

#include <cstdint>
#include <string>

namespace kvb::cli {

struct MethodsArgs {
  int64_t layers = 30, heads = 9, kv_heads = 3, head_dim = 64;  // SmolLM2-135M
  int64_t tokens = 4096;
  std::string dtype = "fp32";  // compute dtype (KIVI's residual is held in it)
  bool json = false;
};

// describe_spec empty: list every method. Returns the exit code; bad specs throw InputError.
int run_methods(const std::string& describe_spec, const MethodsArgs& a);

}  // namespace kvb::cli
