// Flash-decoding attention of a few query rows over a long cache, on the GPU, generic in how a
// key or value is read (a Loader policy: KIVI codes + residual, per-token int codes, plain fp16;
// see kivi_attention.cuh, int_attention.cuh, plain_attention.cuh).
//
// Split kernel: one CTA per (batch row b, KV head h, chunk of up to kRowsPerCta query rows,
// block of kBlockSlots slots). The M = G*T query rows of a KV head are its G query heads times
// the T query positions (row m: query head h*G + m/T, position m%T), so the G heads of a GQA
// group share one read of the block's keys and values. Per row it writes the block's maximum
// score, sum of exp(score - max) and the unnormalized sum of exp(score - max) * v.
// Merge kernel: per (b, query head, position) combines the blocks of that row (rescaled to the
// common maximum) into out [B, H_q, T, D] and lse [B, H_q, T].
//
// Scores are scale * q . k with q pre-multiplied by scale (as the CPU kernel does). All math is
// fp32; exp and log are the accurate expf / logf.
#pragma once

#include <cmath>
#include <cstdint>

#include "common.cuh"

namespace kvb::cuda::detail {

constexpr int kBlockSlots = 256;   // slots per split block
constexpr int kRowsPerCta = 16;    // query rows per CTA (more rows: more CTAs over the same slots)
constexpr int kDecodeThreads = 128;
constexpr int kLanesPerSlot = 8;   // lanes sharing one key (each reads D/8 channels)
constexpr int kValueRows = 4;      // query rows one thread accumulates per value channel

struct DecodeShape {
  int64_t batch = 0, hkv = 0, g = 0, t = 0, s = 0;
  int64_t m = 0;       // g * t
  int64_t nblk = 0;    // ceil(s / kBlockSlots)
  int64_t chunks = 0;  // ceil(m / kRowsPerCta)
};

struct DecodeWorkspace {
  float* pm = nullptr;  // [B, H_kv, nblk, M] block maximum
  float* pl = nullptr;  // [B, H_kv, nblk, M] block sum of exp(score - max)
  float* po = nullptr;  // [B, H_kv, nblk, M, D] block sum of exp(score - max) * v
};

inline DecodeShape decode_shape(int64_t batch, int64_t hkv, int64_t g, int64_t t, int64_t s) {
  DecodeShape p;
  p.batch = batch;
  p.hkv = hkv;
  p.g = g;
  p.t = t;
  p.s = s;
  p.m = g * t;
  p.nblk = (s + kBlockSlots - 1) / kBlockSlots;
  p.chunks = (p.m + kRowsPerCta - 1) / kRowsPerCta;
  return p;
}

// Floats of workspace a call needs.
inline int64_t decode_workspace_floats(const DecodeShape& p, int64_t d) {
  return p.batch * p.hkv * p.nblk * p.m * (d + 2);
}

inline DecodeWorkspace decode_workspace(const DecodeShape& p, float* base) {
  const int64_t n = p.batch * p.hkv * p.nblk * p.m;
  return {base, base + n, base + 2 * n};
}

// Loader concept (D the head dim, a compile-time constant of the loader):
//   __device__ void key(int64_t b, int64_t h, int64_t j, int c0, float (&k)[D / kLanesPerSlot])
//       channels [c0, c0 + D/8) of key j of (b, h), as fp32
//   __device__ float value(int64_t b, int64_t h, int64_t j, int c)
//       channel c of value j of (b, h), as fp32
template <int D, class Loader>
__global__ void __launch_bounds__(kDecodeThreads)
    decode_split_kernel(DecodeShape p, const float* __restrict__ q, float scale, Loader ld,
                        DecodeWorkspace ws) {
  static_assert(D % (kLanesPerSlot * 4) == 0, "head_dim must be a multiple of 32");
  constexpr int kCpl = D / kLanesPerSlot;
  constexpr int kSlotsPerPass = kDecodeThreads / kLanesPerSlot;
  constexpr int kWarps = kDecodeThreads / 32;
  __shared__ float qs[kRowsPerCta][D];
  __shared__ float sc[kRowsPerCta][kBlockSlots];

  const int64_t blk = blockIdx.x;
  const int64_t h = blockIdx.y / p.chunks, chunk = blockIdx.y % p.chunks;
  const int64_t b = blockIdx.z;
  const int64_t m0 = chunk * kRowsPerCta;
  const int mc = static_cast<int>(p.m - m0 < kRowsPerCta ? p.m - m0 : kRowsPerCta);
  const int64_t j0 = blk * kBlockSlots;
  const int n = static_cast<int>(p.s - j0 < kBlockSlots ? p.s - j0 : kBlockSlots);
  const int tid = static_cast<int>(threadIdx.x);
  const int64_t hq_total = p.hkv * p.g;

  // The chunk's query rows, times the softmax scale.
  for (int i = tid; i < mc * D; i += kDecodeThreads) {
    const int r = i / D, c = i % D;
    const int64_t m = m0 + r, hq = h * p.g + m / p.t, ti = m % p.t;
    qs[r][c] = q[((b * hq_total + hq) * p.t + ti) * D + c] * scale;
  }
  __syncthreads();

  // Scores: kLanesPerSlot lanes per slot, each over kCpl channels, reduced by shuffles inside
  // the aligned group of kLanesPerSlot lanes. Every lane runs every shuffle (base is uniform
  // over the CTA; out-of-range slots compute on zeros and are not stored).
  const int li = tid % kLanesPerSlot, slot_lane = tid / kLanesPerSlot;
  const int c0 = li * kCpl;
  for (int base = 0; base < n; base += kSlotsPerPass) {
    const int jj = base + slot_lane;
    const bool valid = jj < n;
    float k[kCpl];
    if (valid) {
      ld.key(b, h, j0 + jj, c0, k);
    } else {
#pragma unroll
      for (int c = 0; c < kCpl; ++c) k[c] = 0.0f;
    }
    for (int r = 0; r < mc; ++r) {
      float acc = 0.0f;
#pragma unroll
      for (int c = 0; c < kCpl; ++c) acc = fmaf(qs[r][c0 + c], k[c], acc);
#pragma unroll
      for (int o = kLanesPerSlot / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
      if (valid && li == 0) sc[r][jj] = acc;
    }
  }
  __syncthreads();

  // Block softmax statistics, one warp per row; sc becomes exp(score - max).
  const int warp = tid / 32, lane = tid % 32;
  const int64_t item = (b * p.hkv + h) * p.nblk + blk;
  for (int r = warp; r < mc; r += kWarps) {
    float top = -INFINITY;
    for (int j = lane; j < n; j += 32) top = fmaxf(top, sc[r][j]);
    top = warp_max(top);
    float sum = 0.0f;
    for (int j = lane; j < n; j += 32) {
      const float e = expf(sc[r][j] - top);
      sc[r][j] = e;
      sum += e;
    }
    sum = warp_sum(sum);
    if (lane == 0) {
      ws.pm[item * p.m + m0 + r] = top;
      ws.pl[item * p.m + m0 + r] = sum;
    }
  }
  __syncthreads();

  // Values: a thread per (channel, kValueRows rows); each value is read (and dequantized) once
  // for those rows. Within a warp the rows are the same, so the sc reads are broadcasts.
  const int rchunks = (mc + kValueRows - 1) / kValueRows;
  for (int it = tid; it < D * rchunks; it += kDecodeThreads) {
    const int c = it % D, r0 = (it / D) * kValueRows;
    float acc[kValueRows];
#pragma unroll
    for (int u = 0; u < kValueRows; ++u) acc[u] = 0.0f;
    for (int j = 0; j < n; ++j) {
      const float v = ld.value(b, h, j0 + j, c);
#pragma unroll
      for (int u = 0; u < kValueRows; ++u)
        if (r0 + u < mc) acc[u] = fmaf(sc[r0 + u][j], v, acc[u]);
    }
#pragma unroll
    for (int u = 0; u < kValueRows; ++u)
      if (r0 + u < mc) ws.po[(item * p.m + m0 + r0 + u) * D + c] = acc[u];
  }
}

// One CTA of D threads per (b, h_kv, row m): merges the nblk blocks of that row.
template <int D>
__global__ void __launch_bounds__(D)
    decode_merge_kernel(DecodeShape p, DecodeWorkspace ws, float* __restrict__ out,
                        float* __restrict__ lse) {
  const int64_t rid = blockIdx.x;  // (b * hkv + h) * m + mi
  const int64_t bh = rid / p.m, mi = rid % p.m;
  const int64_t b = bh / p.hkv, h = bh % p.hkv;
  const int64_t row = (b * p.hkv * p.g + h * p.g + mi / p.t) * p.t + mi % p.t;
  const int c = static_cast<int>(threadIdx.x);
  float top = -INFINITY;
  for (int64_t k = 0; k < p.nblk; ++k) top = fmaxf(top, ws.pm[(bh * p.nblk + k) * p.m + mi]);
  float sum = 0.0f, acc = 0.0f;
  for (int64_t k = 0; k < p.nblk; ++k) {
    const int64_t it = bh * p.nblk + k;
    const float w = expf(ws.pm[it * p.m + mi] - top);
    sum = fmaf(w, ws.pl[it * p.m + mi], sum);
    acc = fmaf(w, ws.po[(it * p.m + mi) * D + c], acc);
  }
  out[row * D + c] = acc / sum;
  if (c == 0) lse[row] = top + logf(sum);
}

// out [B, H_q, T, D] = 0 and lse = -inf (a cache holding no slot).
__global__ void decode_empty_kernel(int64_t rows, int d, float* __restrict__ out,
                                    float* __restrict__ lse) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows * d) out[i] = 0.0f;
  if (i < rows) lse[i] = -INFINITY;
}

// Launches split + merge on `stream`. p.s > 0 and p.m > 0; ws holds
// decode_workspace_floats(p, D) floats. Grid limits are checked by the caller.
template <int D, class Loader>
void launch_decode(const DecodeShape& p, const float* q, float scale, const Loader& ld, float* ws,
                   float* out, float* lse, cudaStream_t stream) {
  const DecodeWorkspace w = decode_workspace(p, ws);
  const dim3 grid(static_cast<unsigned>(p.nblk), static_cast<unsigned>(p.hkv * p.chunks),
                  static_cast<unsigned>(p.batch));
  decode_split_kernel<D, Loader><<<grid, kDecodeThreads, 0, stream>>>(p, q, scale, ld, w);
  check_cuda(cudaGetLastError(), "decode_split_kernel launch");
  decode_merge_kernel<D><<<static_cast<unsigned>(p.batch * p.hkv * p.m), D, 0, stream>>>(p, w, out,
                                                                                         lse);
  check_cuda(cudaGetLastError(), "decode_merge_kernel launch");
}

inline void launch_decode_empty(int64_t rows, int64_t d, float* out, float* lse,
                                cudaStream_t stream) {
  const int64_t n = rows * d;
  if (n == 0 && rows == 0) return;
  const int64_t total = n > rows ? n : rows;
  decode_empty_kernel<<<ceil_div_u(total, 256), 256, 0, stream>>>(rows, static_cast<int>(d), out,
                                                                   lse);
  check_cuda(cudaGetLastError(), "decode_empty_kernel launch");
}

}  // namespace kvb::cuda::detail
