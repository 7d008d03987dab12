// Fast Walsh–Hadamard transform (RotateKV's rotation) over the last dim, orthonormal:
// y = H x / sqrt(n) with H the Sylvester Hadamard matrix (H_1 = [1], H_2n = [[H, H], [H, -H]]).
// H / sqrt(n) is symmetric and orthogonal, so the transform is its own inverse.
//
// Both paths do the same butterflies in the same order per element (stage h = 1, 2, 4, ...:
// p[j] = a + b, p[j + h] = a - b, then one multiply by 1/sqrt(n)), so they give bit-identical
// results: the AVX2 path does stages 1, 2, 4 inside 8-float registers (permute, add, subtract,
// blend) and the later ones 8 pairs at a time (n >= 8; smaller rows take the portable loop).
// Rows are split over at::parallel_for (the unit is compiled with -fopenmp).
#pragma once

#include <torch/types.h>

#include <cstdint>

#include "kernels/cpu/kernel_path.h"

namespace kvb::kernels {

// In place on a float32 CPU tensor whose rows (last dim, of n = a power of 2) are contiguous:
// n log2 n butterflies per row, then the 1/sqrt(n) scaling. Throws when n is not a power of 2,
// and for kAvx2 when the CPU has no AVX2.
void fwht_(const torch::Tensor& x, KernelPath path = KernelPath::kAuto);

// A transformed float32 copy of x (any float dtype, any device: other devices run torch ops).
torch::Tensor fwht(const torch::Tensor& x);

inline bool is_pow2(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

}  // namespace kvb::kernels
