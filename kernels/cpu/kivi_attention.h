// Fused decode attention over a packed KIVI cache (CPU): the queries of one decode step attend
// to every past slot of a layer straight from the 2/4-bit codes, their fp16 scales and zero
// points and the full-precision residuals; no dequantized key or value is ever written.
//
// The cache is KIVI's plain layout (methods/quant/kivi.cpp; packing and scale conventions of
// kernels/cpu/quant_kernels.h):
//   keys    slots [0, Nq) quantized per channel, groups of `group` consecutive slots sharing
//           one scale and zero point per channel; slots [Nq, S) in the key residual.
//   values  slots [0, Nqv) quantized per slot, groups of `value_group` consecutive channels
//           sharing one scale and zero point; slots [Nqv, S) in the value residual.
// S = Nq + Nrk = Nqv + Nrv: a slot's key and value may sit on different sides of the split.
//
// How the codes are read (never dequantized into memory):
//   scores  per key group g: q'_c = q_c * s_{g,c}, b = sum_c q_c * z_{g,c} for each query row,
//           then score_j = scale * (sum_c q'_c * code_{j,c} + b) for every slot of the group.
//   values  o += p_j * (s_j * code_j + z_j) is accumulated as (p_j * s_j) * code_j into the
//           output and p_j * z_j into one sum per value group, added to its channels at the end.
// GQA: the G query heads of a KV head (query head h_q reads KV head h_q / G) and the T query
// rows share one pass over that head's codes. Work is split over (batch row, KV head, block of
// slots); each block keeps its own running max and sum, merged at the end (flash-decoding), so
// a few KV heads still fill every thread.
//
// Two implementations with the same results within float rounding: AVX2+FMA+F16C (chosen at run
// time when the CPU has it and head_dim is a multiple of 32 and value_group a multiple of 8) and
// a portable one. Their reference twin is kernels/reference/kivi_attention_reference.h.
#pragma once

#include <torch/types.h>

#include <cstdint>

#include "kernels/cpu/kernel_path.h"

namespace kvb::kernels {

// One layer's KIVI cache in the plain layout. Every tensor is 4-D with its last two dims
// contiguous (narrow()ed views of a store's growing buffers are fine). A part holding no slot
// may be undefined.
struct KiviCache {
  int bits = 2;                  // 2 or 4
  int64_t group = 32;            // key group: slots sharing a per-channel scale/zero
  int64_t value_group = 32;      // value group: channels sharing a per-slot scale/zero
  torch::Tensor key_codes;       // [B, H_kv, Nq, D*bits/8] uint8, Nq a multiple of group
  torch::Tensor key_scale;       // [B, H_kv, Nq/group, D] fp16
  torch::Tensor key_zero;        // [B, H_kv, Nq/group, D] fp16
  torch::Tensor key_residual;    // [B, H_kv, Nrk, D] fp32
  torch::Tensor value_codes;     // [B, H_kv, Nqv, D*bits/8] uint8
  torch::Tensor value_scale;     // [B, H_kv, Nqv, D/value_group] fp16
  torch::Tensor value_zero;      // [B, H_kv, Nqv, D/value_group] fp16
  torch::Tensor value_residual;  // [B, H_kv, Nrv, D] fp32
};

struct AttentionPart {
  torch::Tensor out;  // [B, H_q, T, D] fp32: softmax(scale * q k^T) v over the cache's S slots
  torch::Tensor lse;  // [B, H_q, T] fp32: log sum_j exp(scale * q . k_j); -inf when S == 0
};

// KernelPath (kernels/cpu/kernel_path.h): kAvx2 here is AVX2+FMA+F16C.

// q [B, H_q, T, D] fp32 on the CPU (post-RoPE; scores are scale * q . k), H_q a multiple of the
// cache's H_kv. Throws kvb::Error naming the device when q or the cache is not on the CPU.
AttentionPart kivi_decode_attention(const torch::Tensor& q, const KiviCache& cache, double scale,
                                    KernelPath path = KernelPath::kAuto);

// Whether this CPU runs the AVX2 path at all, and whether it does for this shape.
bool kivi_attention_cpu_has_avx2();
bool kivi_attention_avx2_supports(int64_t head_dim, int64_t value_group);

// Bytes one call reads from the cache: codes, scales, zero points and residuals of every slot.
int64_t kivi_cache_bytes(const KiviCache& cache);

// Calls of kivi_decode_attention() so far in this process (tests check the engine took the path).
int64_t kivi_decode_attention_calls();

}  // namespace kvb::kernels
