// Perplexity in decode mode (DESIGN.md, "Evaluation protocol").
//
// The text is tokenized without specials; window w covers text tokens [w*stride, w*stride + L)
// with L = ctx - (tokens the tokenizer adds in front, i.e. BOS), and is fed as
// [BOS] + those tokens through a fresh state, in chunks of `chunk` tokens (1 = exact decode):
// each chunk attends to the method's view of everything before it plus causal attention inside
// the chunk (Model::forward with all_logits). Every text token is scored once: by the first
// window whose input predicts it (stride < L: the overlap is context only). A `full` state runs
// alongside on the same chunks, giving KL(full || method) per token, its mean and 99th
// percentile, and top-1 agreement. Normalisation: token level (mean NLL over scored tokens).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "harness/model/model.h"
#include "harness/tokenizer/tokenizer.h"
#include "methods/kv_method.h"

namespace kvb {

struct PerplexityParams {
  int64_t ctx = 0;
  int64_t stride = 0;       // 0: L (non-overlapping windows)
  int64_t chunk = 1;        // tokens per forward call
  int64_t max_windows = 0;  // 0: all windows
};
// From a schema-validated "params" object; defaults filled.
PerplexityParams parse_perplexity_params(const nlohmann::json& j);
nlohmann::json perplexity_params_json(const PerplexityParams& p);

struct PerplexityText {
  std::vector<int64_t>
      prefix;                // what the tokenizer adds in front of every input (BOS), maybe empty
  std::vector<int64_t> ids;  // the text's tokens, no specials
};
// Tokenizes as much of `text` as the windows need (a prefix cut at a line end, grown until it
// yields enough tokens; all of it when max_windows is 0).
PerplexityText tokenize_for_perplexity(const Tokenizer& tok, const std::string& text,
                                       const PerplexityParams& p);

struct PerplexityResult {
  int64_t tokens = 0, windows = 0, stride = 0;
  double nll = 0, nll_se = 0, ppl = 0, ppl_se = 0;  // the method
  double ref_nll = 0, ref_ppl = 0;                  // the full cache on the same pass
  double kl_mean = 0, kl_p99 = 0, kl_max = 0;       // KL(full || method), nats per token
  double top1_agreement = 0;                        // fraction of tokens with the same argmax
  MemoryUse memory;                                 // the method's state after the last window
  double seconds = 0;
  nlohmann::json metrics_json() const;
};

// The "memory" object of a cell's metrics, in every suite: payload_bytes, metadata_bytes,
// tokens_seen, slots (the runner adds promised_bytes where the method makes a promise).
nlohmann::json memory_use_json(const MemoryUse& m);

// `reference` is the full-cache method run alongside. `progress` gets the fraction done.
PerplexityResult run_perplexity(const Model& model, const KVMethod& method,
                                const KVMethod& reference, const PerplexityText& text,
                                const PerplexityParams& p,
                                const std::function<void(double)>& progress = {});

// The perplexity suite of suites/suite.h, over run_perplexity(); listed in suites/registry.cpp.
class Suite;
const Suite& perplexity_suite();

}  // namespace kvb
