// Plain twins of kernels/cpu/quant_attention.h: each cache dequantized whole with torch ops (the
// `int` cache through the reference dequantizer of kernels/reference/quant_reference.h; KVQuant's
// codes unpacked, looked up, scaled, outliers scattered in and sink rows laid over), then
// softmax attention in float64.
#pragma once

#include <torch/types.h>

#include "kernels/cpu/quant_attention.h"
#include "kernels/reference/kivi_attention_reference.h"  // AttentionPart64

namespace kvb::reference {

// q [B, H_q, T, D] (any float dtype); scores are scale * q . k. Query head h_q reads KV head
// h_q / (H_q / H_kv).
AttentionPart64 int_attention(const torch::Tensor& q, const kernels::IntCache& cache,
                              double scale);
AttentionPart64 kvquant_attention(const torch::Tensor& q, const kernels::KVQuantCache& cache,
                                  double scale);

// The dense float64 keys and values [B, H_kv, S, D] a KVQuant cache stands for (undefined when
// it holds no slot).
std::pair<torch::Tensor, torch::Tensor> kvquant_dequantize(const kernels::KVQuantCache& cache,
                                                           int64_t head_dim);

}  // namespace kvb::reference
