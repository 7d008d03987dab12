// Shared-context suite (SCBench-like): one long context, several turns, scored per turn.
//
//   multi_turn     one session: context + first query are prefilled and the state's compression
//                  point (end_prefill) follows, so query-aware methods (SnapKV) score the first
//                  query only; each answer is decoded on a copy of the session, then the gold
//                  answer and the next query are appended (earlier turns use the gold answer).
//   multi_request  the context alone is prefilled and compressed (end_prefill), snapshotted with
//                  KVCacheState::clone(), and each query is appended to and decoded from a fresh
//                  copy of that snapshot, which no query changes.
// Prompt text: context + "\n\n" + input; a later turn appends gold + "\n\n" + input.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "datasets/scbench.h"
#include "harness/model/model.h"
#include "harness/tokenizer/tokenizer.h"
#include "methods/kv_method.h"

namespace kvb {

struct ScbenchParams {
  std::string mode = "multi_turn";  // or "multi_request"
  int64_t max_new_tokens = 32;
  int64_t chunk = 0;        // prefill chunk, 0 = the whole prompt in one call
  int64_t max_samples = 0;  // 0 = all samples of the dataset
};
// From a "params" object, every field range-checked (suites/config.h: limits); defaults filled.
ScbenchParams parse_scbench_params(const nlohmann::json& j, const std::string& where = "$.params");
nlohmann::json scbench_params_json(const ScbenchParams& p);

// Test hooks. after_prompt: the state right after a turn's prompt is in (before decoding).
// after_context (multi_request): the shared snapshot once the context is in and compressed;
// after_query (multi_request): the same snapshot after each query.
struct ScbenchHooks {
  std::function<void(const KVCacheState& snapshot, int64_t sample)> after_context;
  std::function<void(const KVCacheState& state, int64_t sample, int64_t turn)> after_prompt;
  std::function<void(const KVCacheState& snapshot, int64_t sample, int64_t turn)> after_query;
};

// Metrics: mean score, per-turn scores (mean over samples), per-sample outputs, and the memory
// held by the state that had seen the most tokens (after its answer was decoded).
nlohmann::json run_scbench(const Model& model, const Tokenizer& tok, const KVMethod& method,
                           const ScTask& task, const ScbenchParams& p,
                           const std::function<void(double)>& progress = {},
                           const ScbenchHooks& hooks = {});

// The scbench suite of suites/suite.h, over run_scbench(); listed in suites/registry.cpp.
class Suite;
const Suite& scbench_suite();

}  // namespace kvb
