// Internals of kernels/cpu/kivi_attention.h shared by its portable and AVX2 translation units:
// the problem as raw pointers (no torch types, so the AVX2 unit compiles nothing of torch under
// its target flags) and the per-block functions.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace kvb::kernels::kivi_detail {

// A [B, H, N, X] tensor whose last two dims are contiguous: row i of (b, h) starts at
// base + b * sb + h * sh + i * x.
template <typename T>
struct RowsRef {
  const T* base = nullptr;
  int64_t sb = 0, sh = 0, x = 0;
  const T* row(int64_t b, int64_t h, int64_t i) const { return base + b * sb + h * sh + i * x; }
};

struct Problem {
  int bits = 2;
  int64_t group = 32, gv = 32;           // key group (slots), value group (channels)
  int64_t hkv = 0, g = 0, t = 0, d = 0;  // KV heads, query heads per KV head, query rows, head dim
  int64_t nq = 0, nrk = 0, nqv = 0, nrv = 0, s = 0;  // slot split of keys and values, S
  RowsRef<uint8_t> kq;                               // [B, H_kv, Nq, D*bits/8]
  RowsRef<uint16_t> ks;                              // [B, H_kv, Nq/group, D] fp16 bits
  RowsRef<uint16_t> kz;
  RowsRef<float> kr;     // [B, H_kv, Nrk, D]
  RowsRef<uint8_t> vq;   // [B, H_kv, Nqv, D*bits/8]
  RowsRef<uint16_t> vs;  // [B, H_kv, Nqv, D/gv] fp16 bits
  RowsRef<uint16_t> vz;
  RowsRef<float> vr;  // [B, H_kv, Nrv, D]
};

// A block's softmax statistics over one row of n scores, in place: r becomes exp(r - top);
// *top = max r, *sum = sum of the exps (the portable code of both fused decode kernels).
inline void block_softmax_row(float* r, int64_t n, float* top, float* sum) {
  float t = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) t = std::max(t, r[i]);
  float s = 0;
  for (int64_t i = 0; i < n; ++i) {
    r[i] = std::exp(r[i] - t);
    s += r[i];
  }
  *top = t;
  *sum = s;
}

// One work item: the M = G*T query rows of KV head (b, h) over slots [j0, j1).
//   q   [M, D] the rows, already multiplied by the softmax scale (row g*T + t: query head
//       h*G + g, query t)
//   mx  [M] written: the largest score of each row over the block
//   l   [M] written: sum_j exp(score_j - mx)
//   o   [M, D] written: sum_j exp(score_j - mx) * v_j (not normalized)
// j0 is a multiple of the key group. Scratch memory is the callee's (thread-local).
using BlockFn = void (*)(const Problem& p, int64_t b, int64_t h, int64_t j0, int64_t j1,
                         const float* q, float* mx, float* l, float* o);

void block_portable(const Problem& p, int64_t b, int64_t h, int64_t j0, int64_t j1, const float* q,
                    float* mx, float* l, float* o);
// Needs AVX2, FMA and F16C, D a multiple of 32 and gv a multiple of 8.
void block_avx2(const Problem& p, int64_t b, int64_t h, int64_t j0, int64_t j1, const float* q,
                float* mx, float* l, float* o);

}  // namespace kvb::kernels::kivi_detail
