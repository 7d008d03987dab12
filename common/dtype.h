// The one spelling of compute and storage dtypes: "fp32", "fp16", "bf16".
#pragma once

#include <string>

#include <torch/types.h>

namespace kvb {

// "fp32" | "float32", "fp16" | "float16", "bf16" | "bfloat16" -> the torch dtype.
// kvb::InputError "<what> '<s>': expected fp32, fp16 or bf16" otherwise.
torch::ScalarType parse_dtype(const std::string& s, const std::string& what = "dtype");
// kFloat32 -> "fp32", kFloat16 -> "fp16", kBFloat16 -> "bf16"; kvb::Error for any other dtype.
const char* dtype_name(torch::ScalarType t);

}  // namespace kvb
