// PyramidKV's per-layer budgets (methods/evict/pyramidkv.cpp), shared with adakv(base=pyramidkv).
#pragma once

#include <cstdint>
#include <vector>

namespace kvb {

// The slots each of `n_layers` layers keeps per KV head (window included), bottom layer first,
// for a SnapKV-equivalent `budget` (> window >= 1) and steepness `beta` >= 1. With B = budget -
// window (the non-window part SnapKV keeps in every layer), as in the PyramidKV paper and its
// code (Zefan-Cai/KVCache-Factory): the top layer gets lo = max(1, floor(B / beta)) non-window
// slots, the bottom layer hi = 2B - lo, and layer l (0 = bottom) the linear interpolation
//   n_l = hi - l (hi - lo) / (L - 1)          (exact rational; sum over layers = L B)
// rounded down, the L B - sum floor(n_l) leftover slots going one each to the layers with the
// largest fractional parts (ties: the lower layer). Each layer keeps n_l + window. So the total
// is exactly L * budget (SnapKV's), budgets never grow from bottom to top, and every layer keeps
// more than its window. One layer: budget. beta = 1: budget in every layer.
std::vector<int64_t> pyramid_layer_budgets(int64_t n_layers, int64_t budget, int64_t window,
                                           int64_t beta);

}  // namespace kvb
