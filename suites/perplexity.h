// Perplexity, in two modes and two scorings; suites/README.md ("Protocols") describes the
// protocol in full.
//
// kvbench scoring (the default): the text is tokenized without specials; window w covers text
// tokens [w*stride, w*stride + L) with L = ctx - (tokens the tokenizer adds in front, i.e. BOS),
// and is fed as [BOS] + those tokens through a fresh state at positions 0..ctx-1.
//   decode mode:  the window goes in chunks of `chunk` tokens (1 = exact decode): each chunk
//                 attends to the method's view of everything before it plus causal attention
//                 inside the chunk. Every text token is scored once: by the first window whose
//                 input predicts it (stride < L: the overlap is context only).
//   prefill mode: the window's first `prefix` tokens are a prompt, fed in chunks of `chunk`, then
//                 end_prefill(); the rest goes one token at a time. Scored: the tokens predicted
//                 after end_prefill() (the first is input position prefix + 1; the token at
//                 `prefix` is predicted by the prompt's last row, before compression), each once.
// llama.cpp scoring (decode mode, stride 0): what `llama-perplexity` scores. The whole text is
// tokenized with its specials (BOS first); chunk i is tokens [i*ctx, (i+1)*ctx) with its first
// token replaced by BOS (when the tokenizer adds one), at positions 0..ctx-1; only the logits of
// rows ctx/2 .. ctx-2 are scored (predicting tokens ctx/2+1 .. ctx-1), ctx-1-ctx/2 per chunk;
// n_chunks = floor(tokens / ctx) (at most max_windows).
//
// Every method is measured against the full cache on the same windows and chunks: the reference
// pass runs once per (model, text, protocol) (PerplexityReference) and every method's pass is
// paired with it token by token — ΔNLL, KL(full || method), top-1 agreement, Δp of the correct
// token, each with its standard error. Normalisation: token level (mean NLL over scored tokens).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "harness/model/model.h"
#include "harness/tokenizer/tokenizer.h"
#include "methods/kv_method.h"

namespace kvb {

struct PerplexityParams {
  int64_t ctx = 0;
  int64_t stride = 0;                // 0: L (non-overlapping windows)
  int64_t chunk = 1;                 // tokens per forward call (prefill mode: of the prompt)
  int64_t max_windows = 0;           // 0: all windows
  std::string mode = "decode";       // "decode" | "prefill"
  int64_t prefix = 0;                // prefill: prompt tokens of each window (default ctx / 2)
  std::string scoring = "kvbench";   // "kvbench" | "llama.cpp"
  bool allow_extrapolation = false;  // ctx may exceed the model's max_position_embeddings
};
// From a "params" object, every field range-checked (suites/config.h: limits); defaults filled
// (prefix = ctx / 2 in prefill mode). kvb::InputError "<where>.<field>: expected ..., got ...".
PerplexityParams parse_perplexity_params(const nlohmann::json& j,
                                         const std::string& where = "$.params");
// The canonical params: ctx, stride, chunk, max_windows, and mode/prefix, scoring and
// allow_extrapolation only where they differ from the default (cells recorded before those
// options existed keep their keys).
nlohmann::json perplexity_params_json(const PerplexityParams& p);
// kvb::InputError "<where>.<field>: <problem>" for what the schema cannot say.
void check_perplexity_params(const PerplexityParams& p, const std::string& where);

struct PerplexityText {
  std::vector<int64_t>
      prefix;                // what the tokenizer adds in front of every input (BOS), maybe empty
  std::vector<int64_t> ids;  // the text's tokens, no specials
};
// Tokenizes as much of `text` as the windows need (a prefix cut at a line end, grown until it
// yields enough tokens; all of it when max_windows is 0).
PerplexityText tokenize_for_perplexity(const Tokenizer& tok, const std::string& text,
                                       const PerplexityParams& p);

// What is fed and scored, from the text and the params alone.
struct PerplexityWindow {
  std::vector<int64_t> input;  // fed at positions 0..n-1
  int64_t prompt = 0;          // prefill: tokens fed in chunks before end_prefill(); 0 in decode
  std::vector<int64_t> rows;   // input indices scored, ascending: row i predicts input[i + 1]
};
struct PerplexityPlan {
  PerplexityParams params;
  int64_t stride = 0;  // the stride used (text tokens)
  std::vector<PerplexityWindow> windows;
  int64_t scored = 0;       // rows over all windows
  bool reads_back = false;  // some window reads its own cache back (is fed in several calls)
};
PerplexityPlan plan_perplexity(const PerplexityText& text, const PerplexityParams& p);

struct PerplexityResult {
  int64_t tokens = 0, windows = 0, stride = 0;
  double nll = 0, nll_se = 0, ppl = 0, ppl_se = 0;  // the method
  double ref_nll = 0, ref_ppl = 0;                  // the full cache on the same windows
  // Paired per scored token against the full cache: d = nll_method - nll_full. ln(PPL_method /
  // PPL_full) is mean(d) exactly (token-level normalisation), with the same standard error.
  double delta_nll = 0, delta_nll_se = 0;
  // KL(full || method), nats per token (exact over the vocabulary when the reference kept every
  // log-prob; else over the reference's top-k tokens plus one bucket for the rest, a lower bound).
  double kl_mean = 0, kl_se = 0, kl_median = 0, kl_p90 = 0, kl_p99 = 0, kl_p999 = 0, kl_max = 0;
  double top1_agreement = 0, top1_se = 0;  // the same argmax as the full cache
  double dp_mean = 0, dp_se = 0;           // p_method - p_full of the correct token
  bool identical = false;  // the logits equal the full cache's bitwise at every scored token
  // The method's state after every window of ctx tokens, averaged (rounded to bytes); after the
  // last window when none is full.
  MemoryUse memory;
  std::string memory_measured_at;  // "full_window_mean" | "last_window"
  int64_t memory_windows = 0;      // windows averaged
  int64_t memory_prompt_tokens = -1;  // prefill mode: the prompt of the windows measured
  // Bytes the cache read at the last forward step of each window (KVCacheState::
  // bytes_read_last_step: Quest reads fewer than it holds; a method reading everything, what
  // memory() holds), averaged as memory is; metrics "memory.read_bytes_per_step". -1: not measured.
  int64_t read_bytes_per_step = -1;
  double seconds = 0;              // the method's pass only
  nlohmann::json metrics_json() const;
};

// The "memory" object of a cell's metrics, in every suite: payload_bytes, metadata_bytes,
// tokens_seen, slots, and prompt_tokens when >= 0: the tokens appended before end_prefill()
// (the runner adds promised_bytes where the method makes a promise, for that prompt).
nlohmann::json memory_use_json(const MemoryUse& m, int64_t prompt_tokens = -1);
// `mem` with "read_bytes_per_step" (bytes the state's last decode step read) when read >= 0.
inline nlohmann::json with_read_bytes(nlohmann::json mem, int64_t read) {
  if (read >= 0) mem["read_bytes_per_step"] = read;
  return mem;
}

// The full cache's pass over a plan, kept for every method's pass. Per scored token: the NLL, the
// argmax, p of the correct token, a hash of the logits row (bitwise identity), and the log-probs:
// all of them when the vocabulary has at most `full_vocab_max` entries, else the top `top_k`
// and the log of the rest's mass (as llama.cpp keeps quantized log-probs, an approximation).
struct PerplexityReference {
  struct Options {
    int64_t full_vocab_max = 4096;
    int64_t top_k = 64;
  };
  std::vector<double> nll, p_correct;
  std::vector<int64_t> argmax;
  std::vector<uint64_t> row_hash;
  torch::Tensor logprobs;  // [n, V] fp64 (full), or [n, top_k] fp64 of top_ids
  torch::Tensor top_ids;   // [n, top_k] int64; undefined when logprobs covers the vocabulary
  torch::Tensor tail;      // [n] fp64 log(1 - sum of the top_k probabilities); top-k case only
  PerplexityResult self;   // the reference as a method: KL 0, ΔNLL 0, its memory and seconds
  bool full_vocab() const { return !top_ids.defined(); }
};
PerplexityReference compute_perplexity_reference(const Model& model, const KVMethod& reference,
                                                 const PerplexityPlan& plan,
                                                 const std::function<void(double)>& progress = {},
                                                 PerplexityReference::Options opt = {});

// One method's pass over the plan, paired with `ref` (computed on the same plan).
PerplexityResult run_perplexity_pass(const Model& model, const KVMethod& method,
                                     const PerplexityReference& ref, const PerplexityPlan& plan,
                                     const std::function<void(double)>& progress = {});

// Both passes: the plan, the reference (`reference`, the full cache), then `method`.
PerplexityResult run_perplexity(const Model& model, const KVMethod& method,
                                const KVMethod& reference, const PerplexityText& text,
                                const PerplexityParams& p,
                                const std::function<void(double)>& progress = {});

// The perplexity suite of suites/suite.h, over the functions above; listed in
// suites/registry.cpp.
class Suite;
const Suite& perplexity_suite();

}  // namespace kvb
