// Per-head top-k selection: for scores [B, H, S] fp32, the indices of the k largest scores of
// each (b, h) row, in ascending index order (what an eviction keeps: slots in slot order).
//
// Order: by value as torch::topk compares them (in double: -0 == +0; NaN above everything, all
// NaNs equal). Each row: the scores become order-preserving int32 keys (AVX2: 8 at a time), the
// k-th largest key is found with std::nth_element on a copy (rows of 4096 or more: on the keys
// of the one bucket of a 12-bit radix histogram that holds it), then one vectorised pass collects
// the indices whose key is above it, or equal to it while ties are still wanted. When the keys
// equal to the threshold do not all fit (ties straddle the k-th place), `ties` decides which:
//   kLowerIndex  the lowest indices among the tied ones;
//   kLikeTorch   the ones torch::topk (libtorch's CPU topk loop, at::native::topk_impl_loop,
//                run on that row alone) keeps: the result is then the set of
//                torch::topk(scores, k, -1) indices, sorted, bit for bit.
// Rows are split over at::parallel_for (the unit is compiled with -fopenmp).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "kernels/cpu/kernel_path.h"

namespace kvb::kernels {

enum class TopkTies { kLowerIndex, kLikeTorch };

// scores: [B, H, S] float32 CPU (any strides; copied contiguous when needed). k is clamped to
// [0, S]: k = 0 gives [B, H, 0], k >= S every index. Returns int64 [B, H, min(k, S)].
torch::Tensor topk_indices(const torch::Tensor& scores, int64_t k,
                           TopkTies ties = TopkTies::kLowerIndex,
                           KernelPath path = KernelPath::kAuto);

// Ragged budgets: k_per_head[h] for every row of head h (size H). Returns int64
// [B, H, min(max k, S)]: row (b, h) holds its min(k_h, S) indices ascending, then -1s.
torch::Tensor topk_indices(const torch::Tensor& scores, const std::vector<int64_t>& k_per_head,
                           TopkTies ties = TopkTies::kLowerIndex,
                           KernelPath path = KernelPath::kAuto);

}  // namespace kvb::kernels
