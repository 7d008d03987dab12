// Plain twin of kernels/cpu/kivi_attention.h: the cache dequantized with the reference
// dequantizers (kernels/reference/quant_reference.h), keys and values assembled as
// [quantized, residual], then softmax attention in float64.
#pragma once

#include <torch/types.h>

#include "kernels/cpu/kivi_attention.h"

namespace kvb::reference {

struct AttentionPart64 {
  torch::Tensor out;  // [B, H_q, T, D] float64
  torch::Tensor lse;  // [B, H_q, T] float64, -inf when the cache holds no slot
};

// q [B, H_q, T, D] (any float dtype); scores are scale * q . k. Query head h_q reads KV head
// h_q / (H_q / H_kv).
AttentionPart64 kivi_attention(const torch::Tensor& q, const kernels::KiviCache& cache,
                               double scale);

}  // namespace kvb::reference
