// `kvbench kv-stats --model DIR --text FILE [--max-tokens N] [--json FILE] [--html FILE]`: runs
// the model over the text (tokenized by the model's tokenizer, BOS added when it adds one; at
// most the model's context) and reports, per layer and KV head, the per-channel magnitude of
// pre-RoPE keys, post-RoPE keys and values, outlier channels and entries, and the attention-sink
// mass (harness/engine/kv_stats.h has the definitions): whether a model has the key-channel
// outliers KIVI and KVQuant exploit.
//
// stdout: one table row per layer and KV head. --json: everything, with the per-channel mean |x|
// and absmax. --html: a self-contained page with the table and one SVG chart per layer (channel
// absmax of keys before and after RoPE and of values, KV heads side by side). Outputs are written
// only after the statistics are computed, each through a temporary file and a rename; bad input
// (model, text, output paths) is one line on stderr and exit code 2 with nothing written.
#pragma once

#include <cstdint>
#include <string>

namespace kvb::cli {

struct KVStatsArgs {
  std::string model_dir, text, json, html;
  int64_t max_tokens = 0;  // 0: the model's context
  int64_t sink_skip = 16;
  double outlier_factor = 4.0;
};

int run_kv_stats(const KVStatsArgs& a);

}  // namespace kvb::cli
