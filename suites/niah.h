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
// From a schema-validated "params" object; defaults filled. kvb::InputError "<json path>: ..."
// for templates missing their placeholders.
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
