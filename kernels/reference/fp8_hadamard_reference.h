// Plain, obviously-correct twins of kernels/cpu/fp8_codec.h and kernels/cpu/hadamard.h.
#pragma once

#include <torch/types.h>

#include <cstdint>

#include "kernels/cpu/fp8_codec.h"

namespace kvb::reference {

// The nearest finite fp8 value by exhaustive search over the 256 codes' values (from the format's
// definition: (-1)^s 2^(e-bias) (1 + m/2^mbits), subnormals 2^(1-bias) m/2^mbits); a tie goes to
// the code with an even mantissa; magnitudes at least the largest finite saturate; NaN -> NaN.
uint8_t fp8_encode(float x, kernels::Fp8Format f);
float fp8_value(uint8_t code, kernels::Fp8Format f);  // from the definition, in double

// x @ H^T / sqrt(n) with H built by Sylvester's construction as a dense matrix.
torch::Tensor hadamard_transform(const torch::Tensor& x);  // [..., n] -> float32
torch::Tensor hadamard_matrix(int64_t n);                  // [n, n] float32, entries +-1

}  // namespace kvb::reference
