#include "suites/scbench.h"

#include <algorithm>
#include <chrono>

#include "common/check.h"
#include "common/json_reader.h"
#include "suites/config.h"
#include "suites/niah.h"
#include "suites/perplexity.h"
#include "suites/session.h"

namespace kvb {

ScbenchParams parse_scbench_params(const nlohmann::json& j, const std::string& where) {
  // Every field range-checked (the limits table in suites/config.h).
  const JsonNode n(j, "", where);
  n.only_keys({"mode", "max_new_tokens", "chunk", "max_samples"});
  ScbenchParams p;
  if (n.has("mode")) p.mode = n.at("mode").choice({"multi_turn", "multi_request"});
  p.max_new_tokens = n.integer("max_new_tokens", p.max_new_tokens, 1, kMaxNewTokens);
  p.chunk = n.integer("chunk", p.chunk, 0, kMaxContextTokens);
  p.max_samples = n.integer("max_samples", p.max_samples, 0, int64_t{1} << 20);
  return p;
}

nlohmann::json scbench_params_json(const ScbenchParams& p) {
  return {{"mode", p.mode},
          {"max_new_tokens", p.max_new_tokens},
          {"chunk", p.chunk},
          {"max_samples", p.max_samples}};
}

namespace {

std::vector<int64_t> enc(const Tokenizer& tok, const std::string& s, bool special) {
  std::vector<int32_t> v = tok.encode(s, special);
  return {v.begin(), v.end()};
}

std::string gold_text(const ScTurn& t) {
  if (!t.gold.empty()) return t.gold;
  std::string s;
  for (size_t i = 0; i < t.answers.size(); ++i) s += (i ? ", " : "") + t.answers[i];
  return s;
}

}  // namespace

nlohmann::json run_scbench(const Model& model, const Tokenizer& tok, const KVMethod& method,
                           const ScTask& task, const ScbenchParams& p,
                           const std::function<void(double)>& progress, const ScbenchHooks& hooks) {
  KVB_INPUT_CHECK(p.mode == "multi_turn" || p.mode == "multi_request", "scbench: unknown mode '",
                  p.mode, "'");
  c10::InferenceMode guard;
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int64_t> stop = stop_ids_for(model, tok);
  const size_t n_samples =
      p.max_samples > 0 ? std::min<size_t>(task.samples.size(), static_cast<size_t>(p.max_samples))
                        : task.samples.size();
  int64_t total_turns = 0, done_turns = 0;
  for (size_t s = 0; s < n_samples; ++s)
    total_turns += static_cast<int64_t>(task.samples[s].turns.size());

  std::vector<double> turn_sum, turn_n;
  nlohmann::json out_samples = nlohmann::json::array();
  double sum = 0;
  int64_t max_mem = 0, max_ctx = 0;
  MemoryUse longest;  // the state that had seen the most tokens
  int64_t longest_prompt = 0;  // its tokens before end_prefill()
  int64_t longest_read = -1;  // bytes its last decode step read
  auto record = [&](size_t turn, double score) {
    if (turn_sum.size() <= turn) {
      turn_sum.resize(turn + 1, 0);
      turn_n.resize(turn + 1, 0);
    }
    turn_sum[turn] += score;
    turn_n[turn] += 1;
    sum += score;
    ++done_turns;
    if (progress)
      progress(static_cast<double>(done_turns) /
               static_cast<double>(std::max<int64_t>(1, total_turns)));
  };
  auto decode = [&](Session& s, const torch::Tensor& last, int64_t prompt) {
    std::vector<int64_t> t = s.greedy(last, p.max_new_tokens, stop);
    MemoryUse mu = s.state().memory();
    max_mem = std::max(max_mem, mu.payload_bytes + mu.metadata_bytes);
    if (mu.tokens_seen > longest.tokens_seen) {
      longest = mu, longest_prompt = prompt;
      // What the last decode step read (Quest reads a subset of what it holds).
      longest_read =
          s.state().bytes_read_last_step().value_or(mu.payload_bytes + mu.metadata_bytes);
    }
    return tok.decode(std::vector<int32_t>(t.begin(), t.end()), true);
  };

  for (size_t si = 0; si < n_samples; ++si) {
    const ScSample& x = task.samples[si];
    KVB_INPUT_CHECK(!x.turns.empty(), "scbench: sample '", x.id, "' has no turns");
    nlohmann::json turns = nlohmann::json::array();
    const int64_t sidx = static_cast<int64_t>(si);
    if (p.mode == "multi_turn") {
      Session s(model, method.make_state(model.shape()));
      torch::Tensor last;
      int64_t prompt = 0;
      for (size_t ti = 0; ti < x.turns.size(); ++ti) {
        if (ti == 0) {
          last = s.feed(enc(tok, x.context + "\n\n" + x.turns[0].input, true), p.chunk);
          s.end_prefill();
          prompt = s.pos();
        } else {
          last = s.feed(enc(tok, gold_text(x.turns[ti - 1]) + "\n\n" + x.turns[ti].input, false),
                        p.chunk);
        }
        if (hooks.after_prompt) hooks.after_prompt(s.state(), sidx, static_cast<int64_t>(ti));
        max_ctx = std::max(max_ctx, s.pos());
        Session d =
            s.clone();  // the answer is decoded on a copy; the session continues with the gold one
        const std::string out = decode(d, last, prompt);
        const double score = score_sc_turn(task.metric, out, x.turns[ti].answers);
        turns.push_back({{"output", out}, {"answers", x.turns[ti].answers}, {"score", score}});
        record(ti, score);
      }
    } else {
      Session base(model, method.make_state(model.shape()));
      base.feed(enc(tok, x.context, true), p.chunk);
      base.end_prefill();
      if (hooks.after_context) hooks.after_context(base.state(), sidx);
      for (size_t ti = 0; ti < x.turns.size(); ++ti) {
        Session q = base.clone();
        torch::Tensor last = q.feed(enc(tok, "\n\n" + x.turns[ti].input, false), p.chunk);
        if (hooks.after_prompt) hooks.after_prompt(q.state(), sidx, static_cast<int64_t>(ti));
        max_ctx = std::max(max_ctx, q.pos());
        const std::string out = decode(q, last, base.pos());
        const double score = score_sc_turn(task.metric, out, x.turns[ti].answers);
        turns.push_back({{"output", out}, {"answers", x.turns[ti].answers}, {"score", score}});
        record(ti, score);
        if (hooks.after_query) hooks.after_query(base.state(), sidx, static_cast<int64_t>(ti));
      }
    }
    out_samples.push_back({{"id", x.id}, {"turns", turns}});
  }
  std::vector<double> per_turn;
  for (size_t i = 0; i < turn_sum.size(); ++i) per_turn.push_back(turn_sum[i] / turn_n[i]);
  return {
      {"score", done_turns ? sum / static_cast<double>(done_turns) : 0.0},
      {"turn_scores", per_turn},
      {"metric", sc_metric_name(task.metric)},
      {"task", task.name},
      {"mode", p.mode},
      {"samples", out_samples},
      {"max_prompt_tokens", max_ctx},
      {"max_memory_bytes", max_mem},
      {"memory", with_read_bytes(memory_use_json(longest, longest_prompt), longest_read)},
      {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
}

}  // namespace kvb
