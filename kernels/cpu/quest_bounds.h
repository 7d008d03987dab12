// Quest page-bound scoring (methods/evict/quest.cpp, Tang et al. 2024): for a decode query and
// the per-channel key minimum and maximum of every page, the upper bound of q . k over the page
//   U_h(p) = sum_c max(q_hc * min_pc, q_hc * max_pc)          for each query head h,
// aggregated over the query heads of a KV group by the maximum (GQA: H_q = G * H_kv, query head
// kvh * G + g reads KV head kvh), as methods/evict/quest.cpp ranks pages.
//
// Bit-identical to quest.cpp's torch expression
//   max_g (torch::maximum(q * lo, q * hi).sum(-1))
// on the same machine: products and maxima are single IEEE operations either way, and the sum
// over c is done in the order libtorch's CPU float sum (ATen cascade_sum, inner reduction)
// adds in: W-lane vector partials in 4 interleaved accumulators, the leftover vectors into the
// first, the 4 combined, then the scalar tail and the W lanes in order; D < W: 4 interleaved
// scalar partials. W is libtorch's vector width for the CPU capability it dispatches to (8 for
// AVX2 and the portable build, 16 for AVX512: quest_sum_lanes()). Both paths (portable and AVX2)
// keep that order. NaN propagates as in torch::maximum and max.
#pragma once

#include <torch/types.h>

#include <cstdint>

#include "kernels/cpu/kernel_path.h"

namespace kvb::kernels {

// q [B, H_q, D] or [B, H_q, 1, D] (any float dtype, converted to float32), lo / hi
// [B, H_kv, P, D] float32 CPU, H_q a multiple of H_kv. Returns [B, H_kv, P] float32.
torch::Tensor quest_page_upper_bounds(const torch::Tensor& q, const torch::Tensor& lo,
                                      const torch::Tensor& hi,
                                      KernelPath path = KernelPath::kAuto);

// The lane width W of libtorch's float sum on this machine (8 or 16; from at::show_config()'s
// "CPU capability usage").
int quest_sum_lanes();

}  // namespace kvb::kernels
