// Quest's page bounds (methods/evict/quest.cpp), shared with its tests.
#pragma once

#include <cstdint>

#include <torch/types.h>

namespace kvb {

struct QuestBounds {
  torch::Tensor lo, hi;  // [B, H_kv, P, D] fp32: per-channel key min / max of each page
};

// Bounds of the pages [i*page, (i+1)*page) of k ([B, H_kv, S, D]); the last page may be partial.
QuestBounds quest_page_bounds(const torch::Tensor& k, int64_t page);

// Per query head, the upper bound of q . k over each page's keys: sum_d max(q_d lo_d, q_d hi_d).
// q [B, H_q, 1, D] (H_q a multiple of H_kv; head h reads KV head h / (H_q / H_kv));
// returns [B, H_kv, G, P] fp32 (G = H_q / H_kv).
torch::Tensor quest_page_scores(const torch::Tensor& q, const QuestBounds& b);

}  // namespace kvb
