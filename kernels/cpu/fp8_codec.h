// FP8 (OCP 8-bit floating point, v1.0) encode/decode on the CPU, written out by hand: libtorch
// 1.13 has no float8 dtype (2.1+ has kFloat8_e4m3fn / kFloat8_e5m2, which tests compare with
// when present).
//
//   E4M3 ("e4m3fn"): sign, 4 exponent bits (bias 7), 3 mantissa bits; no infinities; S.1111.111
//        is NaN; largest finite 448 (S.1111.110); smallest subnormal 2^-9.
//   E5M2: sign, 5 exponent bits (bias 15), 2 mantissa bits, IEEE-like: S.11111.00 infinity,
//        S.11111.{01,10,11} NaN; largest finite 57344 (S.11110.11); smallest subnormal 2^-16.
//
// Encoding rounds to nearest, ties to even (on the fp8 mantissa, subnormals included), and
// saturates: every finite value or infinity whose magnitude is at least the largest finite one
// becomes +-max (the OCP spec's saturating conversion); NaN stays NaN (S.1111.111 / S.11111.11).
// Signed zero keeps its sign.
#pragma once

#include <torch/types.h>

#include <cstdint>

namespace kvb::kernels {

enum class Fp8Format { kE4M3, kE5M2 };

uint8_t fp8_encode(float x, Fp8Format f);
float fp8_decode(uint8_t code, Fp8Format f);
float fp8_max(Fp8Format f);  // 448 or 57344

// Element-wise over any shape: x float32 -> codes uint8 of x's shape; codes -> float32. Tensors
// on another device go through the CPU.
torch::Tensor fp8_encode(const torch::Tensor& x, Fp8Format f);
torch::Tensor fp8_decode(const torch::Tensor& codes, Fp8Format f);

// The same with a scale per (batch row, head), into preallocated tensors (narrow()ed rows of a
// growing buffer: the last two dims contiguous, the first two any stride), bit-exact with the
// unfused expressions:
//   fp8_encode_scaled: codes = fp8_encode(x / scale), the division in float32;
//   fp8_decode_scaled: out = fp8_decode(codes) * scale.
// scale is [B, 1] (one per batch row) or [B, H] float32; on another device: the unfused ops.
void fp8_encode_scaled(const torch::Tensor& x,      // [B, H, T, D] float32
                       const torch::Tensor& scale,  // [B, 1] or [B, H] float32
                       Fp8Format f,
                       const torch::Tensor& codes);  // [B, H, T, D] uint8, written
void fp8_decode_scaled(const torch::Tensor& codes,   // [B, H, T, D] uint8
                       const torch::Tensor& scale,   // [B, 1] or [B, H] float32
                       Fp8Format f,
                       const torch::Tensor& out);  // [B, H, T, D] float32, written

}  // namespace kvb::kernels
