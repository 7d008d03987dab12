// Plain, obviously-correct twins of kernels/cpu/quant_kernels.h written with whole-tensor torch
// ops (same conventions: fp16-rounded scale/zero, round half to even, low bits first).
#pragma once

#include <cstdint>

#include <torch/types.h>

namespace kvb::reference {

struct Quantized {
  torch::Tensor codes;  // [B, H, N, D*bits/8] uint8, packed
  torch::Tensor scale;  // fp16: [B, H, N, D/group] (rows) or [B, H, N/group, D] (cols)
  torch::Tensor zero;   // fp16, same shape as scale
};

Quantized quantize_rows(const torch::Tensor& x, int bits, int64_t group);  // x [B, H, N, D] fp32
torch::Tensor dequantize_rows(const Quantized& q, int bits, int64_t group);  // -> [B, H, N, D] fp32
Quantized quantize_cols(const torch::Tensor& x, int bits, int64_t group);
torch::Tensor dequantize_cols(const Quantized& q, int bits, int64_t group);

torch::Tensor pack_codes(const torch::Tensor& codes, int bits);  // [..., D] -> [..., D*bits/8]
torch::Tensor unpack_codes(const torch::Tensor& packed, int bits);

}  // namespace kvb::reference
