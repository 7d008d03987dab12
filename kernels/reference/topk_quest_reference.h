// Plain, obviously-correct twins of kernels/cpu/topk.h and kernels/cpu/quest_bounds.h (the
// FWHT's is hadamard_transform in fp8_hadamard_reference.h: a dense matrix product).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace kvb::reference {

// scores [B, H, S] float32: per row, every index sorted by (score descending, NaN first, -0 ==
// +0; then index ascending), the first min(k_h, S) kept and sorted ascending; rows padded with
// -1 to [B, H, max_h min(k_h, S)]. k_per_head has H entries.
torch::Tensor topk_lower_index(const torch::Tensor& scores, const std::vector<int64_t>& k_per_head);

// q [B, H_q, D], lo / hi [B, H_kv, P, D]: max over the G = H_q / H_kv query heads of KV head
// kvh (heads kvh * G + g) of sum_c max(q_c lo_c, q_c hi_c), in double. [B, H_kv, P] float64.
torch::Tensor quest_upper_bounds(const torch::Tensor& q, const torch::Tensor& lo,
                                 const torch::Tensor& hi);

}  // namespace kvb::reference
