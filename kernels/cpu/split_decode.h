// The flash-decoding driver the fused CPU decode-attention kernels share (kivi_attention.cpp,
// quant_attention.cpp): the queries of one decode step attend over (batch row, KV head, block of
// slots) work items spread over libtorch's threads, each block keeping its own running max, sum
// and unnormalised output, merged at the end by the log-sum-exp.
//
// Header-only on purpose: at::parallel_for runs in parallel only in units compiled with -fopenmp
// (libtorch 1.13's OpenMP build), which both including units are.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace kvb::kernels::split_decode {

struct Geometry {
  int64_t batch = 0, hq = 0, hkv = 0, t = 0, d = 0;  // q [batch, hq, t, d]; G = hq / hkv
  int64_t slots = 0;                                  // S, > 0
  int64_t block = 256;                                // slots per work item
};

// block(b, h, j0, j1, q, mx, l, o): the M = G*T query rows of KV head (b, h) over slots
// [j0, j1): q [M, D] already multiplied by `scale` (row g*T + t: query head h*G + g, query t);
// writes mx [M] (largest score), l [M] (sum of exp(score - mx)) and o [M, D] (sum of
// exp(score - mx) * v, not normalised).
// qp: q's data, contiguous. out [batch, hq, t, d] must hold zeros; lse [batch, hq, t] is written.
template <typename Block>
void run(const Geometry& g, const float* qp, float scale, Block&& block, float* out,
         float* lse) {
  const int64_t G = g.hq / g.hkv, m_rows = G * g.t, d = g.d, blk = g.block;
  const int64_t nblk = (g.slots + blk - 1) / blk, heads = g.batch * g.hkv, items = heads * nblk;
  // Per block: running max [M], sum [M], output [M, D]. Reused between calls (a fresh buffer of
  // this size is an mmap and page faults per call).
  thread_local std::vector<float> partial;
  const size_t np = static_cast<size_t>(items * m_rows);
  if (partial.size() < np * (2 + static_cast<size_t>(d))) partial.resize(np * (2 + d));
  float* pm = partial.data();
  float* pl = pm + np;
  float* po = pl + np;
  at::parallel_for(0, items, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> qb(static_cast<size_t>(m_rows * d));
    for (int64_t it = i0; it < i1; ++it) {
      const int64_t bh = it / nblk, k = it % nblk, b = bh / g.hkv, h = bh % g.hkv;
      for (int64_t gi = 0; gi < G; ++gi)
        for (int64_t ti = 0; ti < g.t; ++ti) {
          const float* src = qp + ((b * g.hq + h * G + gi) * g.t + ti) * d;
          float* dst = qb.data() + (gi * g.t + ti) * d;
          for (int64_t x = 0; x < d; ++x) dst[x] = src[x] * scale;
        }
      block(b, h, k * blk, std::min(g.slots, (k + 1) * blk), qb.data(), pm + it * m_rows,
            pl + it * m_rows, po + it * m_rows * d);
    }
  });
  // Merge of the blocks of each (b, h_kv, row).
  at::parallel_for(0, heads * m_rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t bh = r / m_rows, m = r % m_rows, b = bh / g.hkv, h = bh % g.hkv;
      const int64_t row = (b * g.hq + h * G + m / g.t) * g.t + m % g.t;
      float top = -std::numeric_limits<float>::infinity();
      for (int64_t k = 0; k < nblk; ++k) top = std::max(top, pm[(bh * nblk + k) * m_rows + m]);
      float sum = 0;
      float* dst = out + row * d;
      for (int64_t k = 0; k < nblk; ++k) {
        const int64_t it = bh * nblk + k;
        const float w = std::exp(pm[it * m_rows + m] - top);
        sum += w * pl[it * m_rows + m];
        const float* src = po + (it * m_rows + m) * d;
        for (int64_t x = 0; x < d; ++x) dst[x] += w * src[x];
      }
      const float inv = 1.0f / sum;
      for (int64_t x = 0; x < d; ++x) dst[x] *= inv;
      lse[row] = top + std::log(sum);
    }
  });
}

}  // namespace kvb::kernels::split_decode
