// The one entry point to the CUDA kernels (kernels/cuda/include/kvb_cuda/*.cuh): plain C++,
// includable from code compiled without the CUDA headers. Every function takes raw device
// pointers and shapes, picks the template instantiation for the runtime bits / head_dim, and
// launches on `stream` (a cudaStream_t; nullptr = the legacy default stream). Launches are
// asynchronous; unsupported shapes throw std::invalid_argument naming the function and the
// value, CUDA errors std::runtime_error. Implemented in kernels/cuda/dispatch.cu.
//
// Conventions are those of the CPU kernels: packed codes with the first code in the lowest bits,
// fp16 scale/zero passed as their uint16 bits (at::Half), element = code * scale + zero in fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

namespace kvb::cuda {

// A [B, H, N, X] device tensor whose last two dims are contiguous: row i of (b, h) starts at
// data + b * batch_stride + h * head_stride + i * X, strides in elements (torch's stride(0),
// stride(1)); X is implied by the head dim. `data` may be null when the part holds no row.
struct DeviceRows {
  const void* data = nullptr;
  int64_t batch_stride = 0, head_stride = 0;
};

enum class ResidualType { kFloat32, kFloat16 };

// One layer's KIVI cache in the plain layout (kernels/cpu/kivi_attention.h, KiviCache).
struct KiviCacheView {
  int bits = 2;               // 2 or 4
  int64_t group = 32;         // key group: slots sharing a per-channel scale/zero
  int64_t value_group = 32;   // value group: channels sharing a per-slot scale/zero
  int64_t batch = 0, kv_heads = 0, head_dim = 0;
  int64_t n_quant_keys = 0, n_residual_keys = 0;      // Nq (a multiple of group), Nrk
  int64_t n_quant_values = 0, n_residual_values = 0;  // Nqv, Nrv; Nq + Nrk == Nqv + Nrv
  ResidualType residual = ResidualType::kFloat32;
  DeviceRows key_codes;       // [B, H_kv, Nq, D*bits/8] uint8
  DeviceRows key_scale;       // [B, H_kv, >= Nq/group, D] fp16
  DeviceRows key_zero;        // [B, H_kv, >= Nq/group, D] fp16
  DeviceRows key_residual;    // [B, H_kv, Nrk, D] fp32 or fp16
  DeviceRows value_codes;     // [B, H_kv, Nqv, D*bits/8] uint8
  DeviceRows value_scale;     // [B, H_kv, Nqv, D/value_group] fp16
  DeviceRows value_zero;      // [B, H_kv, Nqv, D/value_group] fp16
  DeviceRows value_residual;  // [B, H_kv, Nrv, D] fp32 or fp16
};

// The `int` method's cache (methods/quant/int_quant.cpp): every slot quantized per token.
struct IntCacheView {
  int bits = 4;        // 2, 4 or 8
  int64_t group = 64;  // channels per scale/zero group (the effective one: divides head_dim)
  int64_t batch = 0, kv_heads = 0, head_dim = 0, slots = 0;
  DeviceRows key_codes, value_codes;  // [B, H_kv, S, D*bits/8] uint8
  DeviceRows key_scale, key_zero;     // [B, H_kv, S, D/group] fp16
  DeviceRows value_scale, value_zero;
};

// An uncompressed fp16 cache: K, V [B, H_kv, S, D].
struct PlainCacheView {
  int64_t batch = 0, kv_heads = 0, head_dim = 0, slots = 0;
  DeviceRows keys, values;
};

// A decode query block and where the result goes (all device memory, contiguous):
//   q [B, H_q, T, D] fp32 (post-RoPE), H_q a multiple of the cache's H_kv (query head h_q
//   reads KV head h_q / (H_q / H_kv)); scores are scale * q . k.
//   out [B, H_q, T, D] fp32 = softmax(scores) v over every slot; lse [B, H_q, T] fp32 =
//   log sum_j exp(score_j) (-inf and out = 0 when the cache holds no slot).
struct DecodeQuery {
  const float* q = nullptr;
  int64_t q_heads = 0, rows = 1;  // H_q, T
  double scale = 1.0;
  int device = -1;  // the CUDA device holding q, out and the cache; -1 = the current one
  float* out = nullptr;
  float* lse = nullptr;
};

// Workspace bytes the decode kernels need for this shape (the flash-decoding block partials).
// Passing workspace = nullptr makes the call allocate and free it on the stream itself
// (cudaMallocAsync); benchmarks and hot loops pass their own.
size_t kivi_decode_workspace_bytes(const KiviCacheView& cache, const DecodeQuery& q);
size_t int_decode_workspace_bytes(const IntCacheView& cache, const DecodeQuery& q);
size_t plain_decode_workspace_bytes(const PlainCacheView& cache, const DecodeQuery& q);

// Head dims with an instantiation: 32, 64, 128. KIVI bits 2 and 4 (fp32 or fp16 residual);
// int bits 2, 4, 8.
void kivi_decode_attention(const KiviCacheView& cache, const DecodeQuery& q, void* workspace,
                           size_t workspace_bytes, void* stream = nullptr);
void int_decode_attention(const IntCacheView& cache, const DecodeQuery& q, void* workspace,
                          size_t workspace_bytes, void* stream = nullptr);
void plain_decode_attention(const PlainCacheView& cache, const DecodeQuery& q, void* workspace,
                            size_t workspace_bytes, void* stream = nullptr);

// Orthonormal fast Walsh–Hadamard transform in place over rows of n fp32 (x [rows, n],
// contiguous), n a power of 2 up to 8192 (kernels/cpu/hadamard.h).
void fwht_rows(float* x, int64_t rows, int64_t n, void* stream = nullptr);

// Per-row top-k: idx [rows, k] int64 = the indices of the k largest of each row of x
// [rows, s] fp32, in ascending index order, equal values taken lowest index first; 0 <= k <= s.
void topk_rows(const float* x, int64_t rows, int64_t s, int64_t k, int64_t* idx,
               void* stream = nullptr);

// Quest page scores (methods/evict/quest.cpp): q [B, H_q, 1, D], lo/hi [B, H_kv, P, D] per-page
// channel min/max, score [B, H_kv, P] = max over the KV head's query heads of
// sum_c max(q_c lo_c, q_c hi_c). All fp32, contiguous.
void quest_page_scores(const float* q, const float* lo, const float* hi, int64_t batch,
                       int64_t q_heads, int64_t kv_heads, int64_t pages, int64_t head_dim,
                       float* score, void* stream = nullptr);

// Timing for benchmarks: milliseconds per call of `launch` (which enqueues on `stream`) over
// `iters` calls after one warm-up call, measured with CUDA events recorded on `stream`.
float time_ms_per_call(const std::function<void()>& launch, int iters, void* stream = nullptr);

// Blocks until the work queued on `stream` is done; throws on a pending CUDA error.
void stream_synchronize(void* stream = nullptr);

}  // namespace kvb::cuda
