#include "suites/niah.h"

#include <algorithm>
#include <chrono>
#include <map>

#include "common/check.h"
#include "common/json_reader.h"
#include "common/timing.h"
#include "datasets/rng.h"
#include "harness/engine/generate.h"
#include "suites/config.h"
#include "suites/perplexity.h"

namespace kvb {

NiahParams parse_niah_params(const nlohmann::json& j, const std::string& where) {
  // Every field range-checked (the limits table in suites/config.h) before anything is built.
  const JsonNode n(j, "", where);
  n.only_keys({"context_lengths", "depths", "spacing", "needles", "digits", "needle", "question",
               "answer_prefix", "question_multi", "answer_prefix_multi", "max_new_tokens", "metric",
               "chunk", "samples_per_cell", "allow_extrapolation"});
  NiahParams p;
  const JsonNode lens = n.at("context_lengths");
  if (!lens.is_array() || lens.size() == 0 || lens.size() > kMaxNiahLengths)
    lens.expected("an array of 1 to " + std::to_string(kMaxNiahLengths) + " context lengths");
  p.context_lengths = lens.integers(16, kMaxContextTokens);
  if (auto d = n.find("depths"); d && d->is_array()) {
    if (d->size() == 0 || d->size() > kMaxNiahDepths)
      d->expected("an array of 1 to " + std::to_string(kMaxNiahDepths) + " depths");
    for (const JsonNode& x : d->items()) p.depths.push_back(x.number(0.0, 1.0));
    p.spacing = "list";
  } else if (d) {
    d->only_keys({"n", "spacing"});
    p.spacing = d->has("spacing") ? d->at("spacing").choice({"linear", "sigmoid"}) : "linear";
    p.depths = grid_depths(d->at("n").integer(1, kMaxNiahDepths), p.spacing);
  } else {
    p.depths = grid_depths(5, "linear");
  }
  NeedleOptions& o = p.needle;
  o.needles = n.integer("needles", 1, 1, kMaxNiahNeedles);
  o.digits = n.integer("digits", o.digits, 1, 18);
  auto read_template = [&](const char* key, std::string& field) {
    if (auto t = n.find(key)) {
      field = t->str();
      if (field.size() > kMaxNiahTemplateChars)
        t->expected("a template of at most " + std::to_string(kMaxNiahTemplateChars) +
                    " characters");
    }
  };
  read_template("needle", o.needle);
  read_template("question", o.question);
  read_template("answer_prefix", o.answer_prefix);
  read_template("question_multi", o.question_multi);
  read_template("answer_prefix_multi", o.answer_prefix_multi);
  p.max_new_tokens = n.integer("max_new_tokens", p.max_new_tokens, 1, kMaxNewTokens);
  p.metric = n.has("metric") ? n.at("metric").choice({"substring", "exact"}) : p.metric;
  p.chunk = n.integer("chunk", p.chunk, 0, kMaxContextTokens);
  p.samples_per_cell = n.integer("samples_per_cell", p.samples_per_cell, 1, kMaxNiahSamples);
  p.allow_extrapolation = n.boolean("allow_extrapolation", false);
  // The grid's prompts are built (and held) before any cell runs: bounded in count and tokens.
  const int64_t per_length = static_cast<int64_t>(p.depths.size()) * p.samples_per_cell;
  const int64_t prompts = static_cast<int64_t>(p.context_lengths.size()) * per_length;
  int64_t tokens = 0;
  for (int64_t len : p.context_lengths) tokens += len * per_length;
  KVB_INPUT_CHECK(prompts <= kMaxNiahPrompts, where, ": the grid (context_lengths x depths x ",
                  "samples_per_cell) has ", prompts, " prompts, more than the ", kMaxNiahPrompts,
                  " a run may build");
  KVB_INPUT_CHECK(tokens <= kMaxNiahTokens, where, ": the grid's prompts hold up to ", tokens,
                  " tokens, more than the ", kMaxNiahTokens, " a run may build");
  auto need = [&](const std::string& field, const std::string& text,
                  const std::vector<std::string>& keys) {
    for (const auto& k : keys)
      KVB_INPUT_CHECK(text.find("{" + k + "}") != std::string::npos, where, ".", field,
                      ": must contain {", k, "}");
  };
  // One needle may go without a city (a pass key: "The pass key is {number}."); several need
  // their cities to tell them apart.
  if (o.needles == 1) {
    need("needle", o.needle, {"number"});
  } else {
    need("needle", o.needle, {"city", "number"});
    need("question_multi", o.question_multi, {"cities"});
  }
  return p;
}

nlohmann::json niah_params_json(const NiahParams& p) {
  nlohmann::json j = {{"context_lengths", p.context_lengths},
                      {"depths", p.depths},
                      {"spacing", p.spacing},
                      {"needles", p.needle.needles},
                      {"needle", p.needle.needle},
                      {"question", p.needle.question},
                      {"answer_prefix", p.needle.answer_prefix},
                      {"question_multi", p.needle.question_multi},
                      {"answer_prefix_multi", p.needle.answer_prefix_multi},
                      {"max_new_tokens", p.max_new_tokens},
                      {"metric", p.metric},
                      {"chunk", p.chunk}};
  // Only when set: cells recorded before the option existed keep their parameters (and key).
  if (p.samples_per_cell != 1) j["samples_per_cell"] = p.samples_per_cell;
  if (p.needle.digits != 7) j["digits"] = p.needle.digits;
  if (p.allow_extrapolation) j["allow_extrapolation"] = true;
  return j;
}

std::vector<NiahPoint> build_niah_grid(const Tokenizer& tok, const Haystack& hay,
                                       const NiahParams& p, uint64_t seed) {
  std::vector<NiahPoint> g;
  for (size_t li = 0; li < p.context_lengths.size(); ++li)
    for (size_t di = 0; di < p.depths.size(); ++di)
      for (int64_t k = 0; k < p.samples_per_cell; ++k) {
        const int64_t L = p.context_lengths[li];
        std::string key = "niah/" + std::to_string(L) + "/" + std::to_string(di);
        if (k > 0) key += "/" + std::to_string(k);
        const uint64_t s = derive_seed(seed, key);
        // Sample 0 from the corpus' first sentence; the others from their own.
        const int64_t first =
            k == 0 ? 0 : static_cast<int64_t>(derive_seed(s, "haystack") % hay.sentences.size());
        g.push_back({L, p.depths[di], li, di,
                     build_niah_sample(tok, hay, L, p.depths[di], p.needle, s, first)});
      }
  return g;
}

std::vector<int64_t> stop_ids_for(const Model& model, const Tokenizer& tok) {
  std::vector<int64_t> s(model.config().eos_ids.begin(), model.config().eos_ids.end());
  if (auto e = tok.eos_id()) s.push_back(*e);
  return s;
}

nlohmann::json run_niah(const Model& model, const Tokenizer& tok, const KVMethod& method,
                        const std::vector<NiahPoint>& grid, const NiahParams& p,
                        const std::function<void(double)>& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int64_t> stop = stop_ids_for(model, tok);
  const size_t nd = p.depths.size();
  std::vector<std::vector<double>> heat(p.context_lengths.size(), std::vector<double>(nd, 0.0));
  nlohmann::json samples = nlohmann::json::array();
  double total = 0;
  int64_t max_payload = 0;
  MemoryUse longest;  // the state after the longest prompt
  int64_t longest_prompt = 0;
  int64_t longest_read = -1;  // bytes its last decode step read
  // Per context length: prefill wall time, and decode wall time per forward step.
  std::map<int64_t, std::vector<double>> prefill_ms, step_ms;
  for (size_t i = 0; i < grid.size(); ++i) {
    const NiahPoint& pt = grid[i];
    auto state = method.make_state(model.shape());
    GenerateOptions go;
    go.max_new_tokens = p.max_new_tokens * std::max<int64_t>(1, p.needle.needles);
    go.stop_ids = stop;
    go.prefill_chunk = p.chunk;
    GenerateResult gr = generate(model, *state, pt.sample.ids, go);
    const std::string out =
        tok.decode(std::vector<int32_t>(gr.tokens.begin(), gr.tokens.end()), true);
    std::vector<std::string> answers;
    nlohmann::json needles = nlohmann::json::array();
    for (const auto& n : pt.sample.needles) {
      answers.push_back(n.number);
      needles.push_back({{"city", n.city},
                         {"number", n.number},
                         {"depth", n.depth},
                         {"actual_depth", n.actual_depth},
                         {"token_pos", n.token_pos}});
    }
    const double score = score_niah(out, answers, p.metric);
    heat[pt.row][pt.col] += score / static_cast<double>(p.samples_per_cell);
    total += score;
    const MemoryUse mu = state->memory();
    max_payload = std::max(max_payload, mu.payload_bytes + mu.metadata_bytes);
    if (mu.tokens_seen > longest.tokens_seen) {
      longest = mu, longest_prompt = static_cast<int64_t>(pt.sample.ids.size());
      // What the last decode step read (Quest reads a subset of what it holds).
      longest_read = state->bytes_read_last_step().value_or(mu.payload_bytes + mu.metadata_bytes);
    }
    prefill_ms[pt.context_len].push_back(1e3 * gr.prefill_seconds);
    // Every generated token but the last is fed back, unless a stop id ended generation.
    const size_t steps = gr.stopped ? gr.tokens.size() : std::max<size_t>(gr.tokens.size(), 1) - 1;
    if (steps > 0)
      step_ms[pt.context_len].push_back(1e3 * gr.decode_seconds / static_cast<double>(steps));
    samples.push_back({{"context_len", pt.context_len},
                       {"depth", pt.depth},
                       {"prompt_tokens", pt.sample.ids.size()},
                       {"haystack_tokens", pt.sample.haystack_tokens},
                       {"haystack_first_sentence", pt.sample.first_sentence},
                       {"needles", needles},
                       {"output", out},
                       {"score", score},
                       {"memory_bytes", mu.payload_bytes + mu.metadata_bytes}});
    if (progress) progress(static_cast<double>(i + 1) / static_cast<double>(grid.size()));
  }
  const std::string device = model.device().str();
  nlohmann::json timings = nlohmann::json::array();
  for (const auto& [len, ms] : prefill_ms)
    timings.push_back(kernel_timing_json(summarize_timing(
        "niah.prefill", "context_len=" + std::to_string(len) + ",chunk=" + std::to_string(p.chunk),
        device, ms)));
  for (const auto& [len, ms] : step_ms)
    timings.push_back(kernel_timing_json(
        summarize_timing("niah.decode_step", "context_len=" + std::to_string(len), device, ms)));
  return {
      {"score", grid.empty() ? 0.0 : total / static_cast<double>(grid.size())},
      {"heatmap", {{"context_lengths", p.context_lengths}, {"depths", p.depths}, {"scores", heat}}},
      {"samples", samples},
      {"max_memory_bytes", max_payload},
      {"memory", with_read_bytes(memory_use_json(longest, longest_prompt), longest_read)},
      {"timings", timings},
      {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
}

}  // namespace kvb
