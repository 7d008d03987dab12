// What a model's keys and values look like, per layer and KV head (`kvbench kv-stats`): the
// per-channel magnitudes KIVI and KVQuant open with (a few key channels far larger than the
// rest, before and after RoPE; values without such channels) and the attention-sink mass.
//
// Definitions (every statistic is over the tokens fed, batch row 0 .. B-1 together):
//   - channel absmax a_c = max_t |x[t, c]|, channel mean |x| m_c = mean_t |x[t, c]|, for each of
//     the head_dim channels c of one KV head, for pre-RoPE keys (KVAppend::k_pre_rope), post-RoPE
//     keys (KVAppend::k) and values (KVAppend::v), all in fp32;
//   - median absmax: the median of a_c over the head's channels (the mean of the two middle
//     values when head_dim is even); ratio = max_c a_c / median absmax (0 when the median is 0);
//   - outlier channel: a channel with a_c > outlier_factor x the median absmax (default 4);
//   - outlier entry: an element with |x[t, c]| > outlier_factor x the median absmax, the same
//     threshold, so an outlier channel holds at least one; their count over all tokens and
//     channels says whether the outlier channels are large on every token (KIVI's premise: fixed
//     channels) or on a few;
//   - sink mass of query head h: the mean, over queries at positions >= sink_from, of the softmax
//     weight the query gives to the first token (position 0); a KV head's sink mass is the mean
//     of its query group's. sink_from = min(opt.sink_skip, tokens - 1) (the first queries attend
//     to few tokens, so their weight on token 0 says little). For scale: attention spread evenly
//     over the causal prefix gives sink_uniform = mean of 1 / (p + 1) over the same positions.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "harness/model/model.h"
#include "methods/kv_method.h"

namespace kvb {

struct KVStatsOptions {
  int64_t max_tokens = 0;       // feed at most this many ids (0: all); never past the context
  int64_t chunk = 256;          // prefill chunk: observe() gets [B, H_q, chunk, S + chunk]
  int64_t sink_skip = 16;       // queries at positions < sink_skip are left out of the sink mass
  double outlier_factor = 4.0;  // outlier channel / entry threshold, x the median channel absmax
};

// One kind of tensor (pre-RoPE keys, post-RoPE keys or values) of one KV head.
struct ChannelStats {
  std::vector<double> mean_abs, max_abs;  // [D] per channel: mean |x|, max |x|
  double max_absmax = 0, median_absmax = 0, ratio = 0;
  std::vector<int64_t> outlier_channels;  // ascending channel indices
  int64_t outlier_entries = 0;            // elements over the threshold (all tokens, channels)
};

struct HeadKVStats {
  ChannelStats key_pre_rope, key_post_rope, value;
  double sink_mass = 0;             // mean over the group's query heads
  std::vector<double> sink_mass_q;  // [G] per query head of the group (query head h*G + g)
};

struct KVStats {
  ModelShape shape;
  int64_t tokens = 0;        // ids fed
  int64_t first_token = -1;  // the id at position 0 (BOS when added); -1: unknown (stats())
  int64_t sink_from = 0;     // first query position counted in the sink mass
  double sink_uniform = 0;   // the sink mass of attention spread evenly (see above)
  KVStatsOptions options;
  std::vector<std::vector<HeadKVStats>> layers;  // [layer][KV head]
};

// A cache state that keeps everything as `full` does (it wraps make_method("full") in the
// compute dtype) and records what is appended and the attention weights it observes; stats()
// summarizes them. Feed it as any state (the engine's order: view, append, observe).
class KVStatsState : public KVCacheState {
 public:
  KVStatsState(const ModelShape& shape, torch::ScalarType compute, KVStatsOptions opt = {});
  void append(int layer, const KVAppend& a) override;
  bool wants_attention(int layer) const override { return true; }
  void observe(int layer, const torch::Tensor& probs) override;  // [B, H_q, T, S + T]
  KVView view(int layer) const override { return inner_->view(layer); }
  MemoryUse memory() const override { return inner_->memory(); }
  MemoryUse memory(int layer) const override { return inner_->memory(layer); }
  std::unique_ptr<KVCacheState> clone() const override;

  // The statistics of everything appended and observed so far (tokens: those of layer 0).
  KVStats stats() const;

 private:
  struct Layer {
    std::vector<torch::Tensor> k_pre, k, v;  // chunks [H_kv, B*T, D] fp32 CPU
    std::vector<torch::Tensor> sink;         // chunks [H_q, B, T] fp32 CPU: weight on position 0
    std::vector<torch::Tensor> sink_pos;     // chunks [T] int64: the queries' positions
    torch::Tensor last_pos;                  // [T] the positions of the latest append
    int64_t tokens = 0;                      // tokens appended (per batch row)
  };
  ModelShape shape_;
  KVStatsOptions opt_;
  std::unique_ptr<KVCacheState> inner_;
  std::vector<Layer> layers_;
};

// Statistics of one [N, D] block of one head (rows: tokens), with the definitions above.
ChannelStats channel_stats(const torch::Tensor& x, double outlier_factor);  // [N, D]

// Runs `model` over ids[0 .. n) at positions 0 .. n-1 in chunks of opt.chunk through a
// KVStatsState, n = min(ids.size(), opt.max_tokens when > 0, the model's context).
// kvb::InputError when ids is empty or holds an id outside the vocabulary.
KVStats compute_kv_stats(const Model& model, const std::vector<int64_t>& ids,
                         const KVStatsOptions& opt = {});

}  // namespace kvb
