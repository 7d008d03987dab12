// Needle in a haystack: a grid of context lengths x depths; per grid point one prompt (haystack,
// needle(s) at a sentence boundary, question, answer prefix), a greedy answer from the engine's
// generate(), and exact/substring scoring (no judge model). The grid's samples depend only on
// the suite seed and the grid point, never on the method, so every method sees the same
// haystacks, needles and positions. Sample 0 of a grid point takes its haystack from the
// corpus' first sentence (as a one-sample grid always has); sample s > 0 from a sentence drawn
// from its own seed, so the samples of a point differ in text, not only in their needles.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "datasets/needle.h"
#include "harness/model/model.h"
#include "methods/kv_method.h"

namespace kvb {

struct NiahParams {
  std::vector<int64_t> context_lengths;
  std::vector<double> depths;
  std::string spacing = "linear";  // how depths were made ("list" when given explicitly)
  NeedleOptions needle;
  int64_t max_new_tokens = 12;  // per needle
  std::string metric = "substring";
  int64_t chunk = 0;  // prefill chunk, 0 = whole prompt
  // Prompts per grid cell (own seeds, own haystack windows); the heatmap holds each cell's mean.
  // Sample 0 of a cell keeps the seed and haystack it had before this option existed.
  int64_t samples_per_cell = 1;
  bool allow_extrapolation = false;  // context lengths may exceed max_position_embeddings
};
// Limits of a run's params (suites/config.h has the whole table).
inline constexpr size_t kMaxNiahLengths = 64, kMaxNiahDepths = 1024;
inline constexpr int64_t kMaxNiahNeedles = 60;  // a city each (datasets/prose.h: 60 cities)
inline constexpr size_t kMaxNiahTemplateChars = 4096;
inline constexpr int64_t kMaxNewTokens = 4096;  // per needle; scbench's per turn
inline constexpr int64_t kMaxNiahSamples = 1024;
inline constexpr int64_t kMaxNiahPrompts = 65536;            // lengths x depths x samples
inline constexpr int64_t kMaxNiahTokens = int64_t{1} << 28;  // summed over the grid
// From a "params" object, every field range-checked; defaults filled. kvb::InputError
// "<where>.<field>: expected ..., got ..." and "<where>.<field>: ..." for templates missing their
// placeholders or a grid beyond its limits.
NiahParams parse_niah_params(const nlohmann::json& j, const std::string& where);
nlohmann::json niah_params_json(const NiahParams& p);

struct NiahPoint {
  int64_t context_len = 0;
  double depth = 0;
  size_t row = 0, col = 0;  // heatmap cell: index into context_lengths, depths
  NiahSample sample;
};
std::vector<NiahPoint> build_niah_grid(const Tokenizer& tok, const Haystack& hay,
                                       const NiahParams& p, uint64_t seed);

// Metrics: mean score, the heatmap (rows: context lengths, columns: depths), per-sample details
// (actual depth, tokens, output), the memory held after the longest prompt and its answer, and
// timings per context length ("niah.prefill": the prompt; "niah.decode_step": one generated
// token fed back).
nlohmann::json run_niah(const Model& model, const Tokenizer& tok, const KVMethod& method,
                        const std::vector<NiahPoint>& grid, const NiahParams& p,
                        const std::function<void(double)>& progress = {});

// Stop ids for generation: the tokenizer's EOS and the model config's eos ids.
std::vector<int64_t> stop_ids_for(const Model& model, const Tokenizer& tok);

// The niah suite of suites/suite.h, over run_niah(); listed in suites/registry.cpp.
class Suite;
const Suite& niah_suite();

}  // namespace kvb
