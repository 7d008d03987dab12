// Fused decode attention (CPU) over two more packed caches, read straight from their codes; no
// dequantized key or value row is ever written to memory (codes are decoded in registers, or
// for the portable path into one row of code *values* — integers or codebook levels — that the
// row's scales are then folded into).
//
//   int      FlexGen-style per-token asymmetric integer codes (methods/quant/int_quant.cpp;
//            conventions of kernels/cpu/quant_kernels.h): every slot's D channels in groups of
//            `group` channels, each with an fp16 scale s and zero z; x = code * s + z; 2, 4 or 8
//            bits, packed 8/bits codes per byte, the first in the lowest bits. No residual.
//              scores  score_j = sum_g s_{j,g} (q_g . code_{j,g}) + sum_g z_{j,g} sum_{c in g} q_c
//              values  o += sum_g (p_j s_{j,g}) code_{j,g}; p_j z_{j,g} summed per group, added
//                      to the group's channels at the end.
//   kvquant  KVQuant's non-uniform dense-and-sparse layout (methods/quant/kvquant.cpp):
//              keys    k_c = kcb[code_c] * ks[h, c] + kz[h, c]: a per-layer codebook (lookup
//                      table, 2^bits fp32 levels) and a per-(KV head, channel) fp32 scale/zero;
//              values  v_c = vcb[code_c] * vs_j + vz_j with one fp16 scale/zero per slot;
//              outliers per key and per value row: n (channel int16, exact fp16 value) pairs
//                      that replace the dequantized element;
//              sinks   the first `sink` slots held as fp16 rows that replace theirs;
//            codes packed kvquant-style: each run of 8 codes is `bits` bytes (2, 3 or 4 bits),
//            code i of the run at bit i*bits of their little-endian word.
//              scores  q'_c = q_c ks_c folded once per (query row, KV head); per slot
//                      score = q' . kcb[code] + q . kz, the level looked up by a register
//                      permute (AVX2) of the 2^bits-entry table; an outlier at channel c adds
//                      q_c (x_out - (kcb[code_c] ks_c + kz_c)) (sparse correction).
//              values  o += (p_j vs_j) vcb[code_j] (permute again), p_j vz_j summed and added to
//                      every channel at the end; an outlier adds p_j (x_out - v_c) to o_c.
//            Keys must be stored post-RoPE (kvquant(pre_rope=false)). With pre_rope=true
//            (KVQuant's default) the scores need R(pos_j) k_j per slot, which no per-query
//            table can express; the fused path does not cover it (the method's attend() returns
//            nullopt and the engine takes the dequantized view, which the model rotates).
//
// GQA: the G query heads of a KV head and the T query rows share one pass over its codes. Work
// is split over (batch row, KV head, block of slots), each block with its own running max and
// sum merged at the end (flash-decoding), as in kernels/cpu/kivi_attention.h.
//
// Two implementations, same results within float rounding: AVX2+FMA+F16C (chosen at run time
// when the CPU has it and the shape allows: head_dim a multiple of 8, int groups a multiple of
// 8) and a portable one. Reference twins: kernels/reference/quant_attention_reference.h.
#pragma once

#include <torch/types.h>

#include <cstdint>

#include "kernels/cpu/kivi_attention.h"  // AttentionPart, KernelPath

namespace kvb::kernels {

// One layer of the `int` method's cache. Tensors are 4-D with their last two dims contiguous
// (narrow()ed views of a store's buffers are fine); all undefined or 0 slots: an empty cache.
struct IntCache {
  int bits = 4;           // 2, 4 or 8
  int64_t group = 64;     // channels sharing a scale/zero (divides D)
  torch::Tensor key_codes;    // [B, H_kv, S, D*bits/8] uint8
  torch::Tensor key_scale;    // [B, H_kv, S, D/group] fp16
  torch::Tensor key_zero;     // [B, H_kv, S, D/group] fp16
  torch::Tensor value_codes;  // [B, H_kv, S, D*bits/8] uint8
  torch::Tensor value_scale;  // [B, H_kv, S, D/group] fp16
  torch::Tensor value_zero;   // [B, H_kv, S, D/group] fp16
};

// One layer of KVQuant's cache (post-RoPE keys). D a multiple of 8.
struct KVQuantCache {
  int bits = 4;                  // 2, 3 or 4
  torch::Tensor key_codebook;    // [2^bits] fp32
  torch::Tensor value_codebook;  // [2^bits] fp32
  torch::Tensor key_scale;       // [H_kv, D] fp32
  torch::Tensor key_zero;        // [H_kv, D] fp32
  torch::Tensor key_codes;       // [B, H_kv, S, D*bits/8] uint8 (kvquant packing)
  torch::Tensor value_codes;     // [B, H_kv, S, D*bits/8] uint8
  torch::Tensor value_scale;     // [B, H_kv, S, 1] fp16
  torch::Tensor value_zero;      // [B, H_kv, S, 1] fp16
  // Outliers (undefined: none): n per row, distinct channels within a row.
  torch::Tensor key_outlier_value;    // [B, H_kv, S, n] fp16
  torch::Tensor key_outlier_index;    // [B, H_kv, S, n] int16
  torch::Tensor value_outlier_value;  // [B, H_kv, S, n] fp16
  torch::Tensor value_outlier_index;  // [B, H_kv, S, n] int16
  // Sinks (undefined: none): slots [0, ns) read these fp16 rows instead of their codes.
  int64_t sinks = 0;
  torch::Tensor sink_keys;    // [B, H_kv, >= ns, D] fp16
  torch::Tensor sink_values;  // [B, H_kv, >= ns, D] fp16
};

// q [B, H_q, T, D] fp32 on the CPU (post-RoPE; scores are scale * q . k), H_q a multiple of
// H_kv. Throws kvb::Error naming the device when q or the cache is not on the CPU.
AttentionPart int_decode_attention(const torch::Tensor& q, const IntCache& cache, double scale,
                                   KernelPath path = KernelPath::kAuto);
AttentionPart kvquant_decode_attention(const torch::Tensor& q, const KVQuantCache& cache,
                                       double scale, KernelPath path = KernelPath::kAuto);

// Whether this CPU and shape run the AVX2 path (group: the int cache's; 8 for kvquant).
bool quant_attention_avx2_supports(int64_t head_dim, int64_t group);

// Bytes one call reads from the cache (codes, scales, zeros, outliers, sinks, tables).
int64_t int_cache_bytes(const IntCache& cache);
int64_t kvquant_cache_bytes(const KVQuantCache& cache);

// Calls so far in this process (tests check the engine took the fused path).
int64_t int_decode_attention_calls();
int64_t kvquant_decode_attention_calls();

}  // namespace kvb::kernels
