// Asymmetric integer quantization of KV-cache rows with packed 2/4/8-bit codes (CPU).
//
// Conventions shared by every kernel here and by the reference twins in
// kernels/reference/quant_reference.h:
//   - zero = min of the group, scale = (max - min) / (2^bits - 1), both rounded to fp16 first;
//     code = clamp(round_half_even((x - zero) / scale), 0, 2^bits - 1), all in fp32
//     (scale == 0 gives code 0); dequantized value = code * scale + zero in fp32.
//   - packing: 8/bits consecutive codes per byte along the last dim, the first in the lowest bits
//     (channel c sits in byte c / (8/bits) at bit (c % (8/bits)) * bits).
//   - tensors are 4-D [B, H, N, X]; the last two dims must be contiguous (rows of X elements one
//     after the other), the first two may have any stride, so narrow()ed views of growing
//     buffers can be written in place.
#pragma once

#include <cstdint>

#include <torch/types.h>

namespace kvb::kernels {

// Token-wise (row) groups: each row of D channels splits into groups of `group` consecutive
// channels, each with its own scale/zero (FlexGen `int`, KIVI values).
void quantize_rows(const torch::Tensor& x,      // [B, H, N, D] float32
                   int bits, int64_t group,
                   const torch::Tensor& codes,  // [B, H, N, D*bits/8] uint8, written
                   const torch::Tensor& scale,  // [B, H, N, D/group] fp16, written
                   const torch::Tensor& zero);  // [B, H, N, D/group] fp16, written
// quantize_rows(x / div) without the temporary: each row divided by its head's row of div
// (float32 division, as `x / div.view({1, H, 1, D})` computes it), then quantized (QServe's
// SmoothAttention keys).
void quantize_rows_div(const torch::Tensor& x,    // [B, H, N, D] float32
                       const torch::Tensor& div,  // [H, D] float32
                       int bits, int64_t group,
                       const torch::Tensor& codes,  // [B, H, N, D*bits/8] uint8, written
                       const torch::Tensor& scale,  // [B, H, N, D/group] fp16, written
                       const torch::Tensor& zero);  // [B, H, N, D/group] fp16, written
void dequantize_rows(const torch::Tensor& codes,  // [B, H, N, D*bits/8] uint8
                     const torch::Tensor& scale,  // [B, H, N, D/group] fp16
                     const torch::Tensor& zero,   // [B, H, N, D/group] fp16
                     int bits, int64_t group,
                     const torch::Tensor& out);   // [B, H, N, D] float32, written

// Channel-wise groups along tokens: rows [j*group, (j+1)*group) share one scale/zero per channel
// (KIVI keys). N must be a multiple of group.
void quantize_cols(const torch::Tensor& x,      // [B, H, N, D] float32
                   int bits, int64_t group,
                   const torch::Tensor& codes,  // [B, H, N, D*bits/8] uint8, written
                   const torch::Tensor& scale,  // [B, H, N/group, D] fp16, written
                   const torch::Tensor& zero);  // [B, H, N/group, D] fp16, written
void dequantize_cols(const torch::Tensor& codes,  // [B, H, N, D*bits/8] uint8
                     const torch::Tensor& scale,  // [B, H, N/group, D] fp16
                     const torch::Tensor& zero,   // [B, H, N/group, D] fp16
                     int bits, int64_t group,
                     const torch::Tensor& out);   // [B, H, N, D] float32, written

// max |x| over batch rows and tokens per (head, channel), one pass without a |x| temporary;
// NaN where any such value is NaN (as x.abs().amax({0, 2})). QServe's SmoothAttention statistic.
torch::Tensor channel_absmax(const torch::Tensor& x);  // [B, H, N, D] float32 -> [H, D] float32

// Which vector code the CPU quantizers (quantize_rows / quantize_rows_div codes, fp8 encode)
// run: kAuto takes AVX2 where the CPU has it (checked at run time; the build targets the x86-64
// baseline), kBaseline the SSE2 code (scalar off x86). Both give the same bits; tests run both.
enum class QuantSimd { kAuto, kBaseline };
void set_quant_simd(QuantSimd s);  // process-wide, for tests and benchmarks
bool quant_simd_uses_avx2();       // what kAuto (as set now) runs here

// Packing alone: codes [..., D] uint8 (each < 2^bits) <-> packed [..., D*bits/8] uint8.
torch::Tensor pack_codes(const torch::Tensor& codes, int bits);
torch::Tensor unpack_codes(const torch::Tensor& packed, int bits);

}  // namespace kvb::kernels
