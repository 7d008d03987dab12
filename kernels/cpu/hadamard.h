// Fast Walsh–Hadamard transform (RotateKV's rotation) over the last dim, orthonormal:
// y = H x / sqrt(n) with H the Sylvester Hadamard matrix (H_1 = [1], H_2n = [[H, H], [H, -H]]).
// H / sqrt(n) is symmetric and orthogonal, so the transform is its own inverse.
#pragma once

#include <torch/types.h>

#include <cstdint>

namespace kvb::kernels {

// In place on a float32 CPU tensor whose rows (last dim, of n = a power of 2) are contiguous:
// n log2 n butterflies per row, then the 1/sqrt(n) scaling. Throws when n is not a power of 2.
void fwht_(const torch::Tensor& x);

// A transformed float32 copy of x (any float dtype, any device: other devices run torch ops).
torch::Tensor fwht(const torch::Tensor& x);

inline bool is_pow2(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

}  // namespace kvb::kernels
