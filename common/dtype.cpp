#include "common/dtype.h"

#include "common/check.h"

namespace kvb {

torch::ScalarType parse_dtype(const std::string& s, const std::string& what) {
  if (s == "fp32" || s == "float32") return torch::kFloat32;
  if (s == "fp16" || s == "float16") return torch::kFloat16;
  if (s == "bf16" || s == "bfloat16") return torch::kBFloat16;
  throw InputError(what + " '" + s + "': expected fp32, fp16 or bf16");
}

const char* dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return "fp32";
    case torch::kFloat16: return "fp16";
    case torch::kBFloat16: return "bf16";
    default: break;
  }
  throw Error(std::string("dtype_name: not a compute dtype: ") + c10::toString(t));
}

}  // namespace kvb
