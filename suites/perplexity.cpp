#include "suites/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/check.h"
#include "common/json_reader.h"
#include "suites/config.h"

namespace kvb {

PerplexityParams parse_perplexity_params(const nlohmann::json& j, const std::string& where) {
  const JsonNode n(j, "", where);
  n.only_keys({"ctx", "stride", "chunk", "max_windows", "mode", "prefix", "scoring",
               "allow_extrapolation"});
  PerplexityParams p;
  p.ctx = n.at("ctx").integer(2, kMaxContextTokens);
  p.stride = n.integer("stride", 0, 0, kMaxContextTokens);
  p.chunk = n.integer("chunk", 1, 1, kMaxContextTokens);
  p.max_windows = n.integer("max_windows", 0, 0, kMaxContextTokens);
  p.mode = n.has("mode") ? n.at("mode").choice({"decode", "prefill"}) : "decode";
  p.prefix = n.integer("prefix", 0, 0, kMaxContextTokens);
  if (p.mode == "prefill" && p.prefix == 0) p.prefix = p.ctx / 2;
  p.scoring = n.has("scoring") ? n.at("scoring").choice({"kvbench", "llama.cpp"}) : "kvbench";
  p.allow_extrapolation = n.boolean("allow_extrapolation", false);
  return p;
}

nlohmann::json perplexity_params_json(const PerplexityParams& p) {
  nlohmann::json j = {
      {"ctx", p.ctx}, {"stride", p.stride}, {"chunk", p.chunk}, {"max_windows", p.max_windows}};
  if (p.mode != "decode") {
    j["mode"] = p.mode;
    j["prefix"] = p.prefix;
  } else if (p.prefix != 0) {
    j["prefix"] = p.prefix;  // refused by check_perplexity_params
  }
  if (p.scoring != "kvbench") j["scoring"] = p.scoring;
  if (p.allow_extrapolation) j["allow_extrapolation"] = true;
  return j;
}

void check_perplexity_params(const PerplexityParams& p, const std::string& where) {
  KVB_INPUT_CHECK(p.stride <= p.ctx, where, ".stride: must not exceed ctx (", p.ctx, ")");
  KVB_INPUT_CHECK(p.mode == "decode" || p.mode == "prefill", where, ".mode: \"", p.mode,
                  "\" is neither \"decode\" nor \"prefill\"");
  KVB_INPUT_CHECK(p.scoring == "kvbench" || p.scoring == "llama.cpp", where, ".scoring: \"",
                  p.scoring, "\" is neither \"kvbench\" nor \"llama.cpp\"");
  if (p.mode == "prefill") {
    KVB_INPUT_CHECK(p.prefix >= 1 && p.prefix <= p.ctx - 2, where, ".prefix: ", p.prefix,
                    " must be between 1 and ctx - 2 (", p.ctx - 2,
                    ") so that a window scores at least one token after its prompt");
  } else {
    KVB_INPUT_CHECK(p.prefix == 0, where,
                    ".prefix: only with \"mode\": \"prefill\" (decode mode has no prompt)");
  }
  if (p.scoring == "llama.cpp") {
    KVB_INPUT_CHECK(
        p.stride == 0, where,
        ".stride: must be 0 with \"scoring\": \"llama.cpp\" (its chunks do not overlap)");
    KVB_INPUT_CHECK(p.mode == "decode", where,
                    ".mode: \"scoring\": \"llama.cpp\" scores decode-mode chunks only");
    KVB_INPUT_CHECK(p.ctx >= 4, where, ".ctx: \"scoring\": \"llama.cpp\" needs at least 4");
  }
}

namespace {

using Clock = std::chrono::steady_clock;

std::vector<int64_t> to64(const std::vector<int32_t>& v) { return {v.begin(), v.end()}; }

std::vector<int64_t> front_specials(const Tokenizer& tok) {
  std::vector<int32_t> with = tok.encode("a", true), without = tok.encode("a", false);
  for (size_t k = 0; k + without.size() <= with.size(); ++k)
    if (std::equal(without.begin(), without.end(), with.begin() + static_cast<std::ptrdiff_t>(k)))
      return {with.begin(), with.begin() + static_cast<std::ptrdiff_t>(k)};
  return {};
}

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double idx = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(idx)), hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (idx - static_cast<double>(lo));
}

struct MeanSe {
  double mean = 0, se = 0;
};
// Mean and its standard error sd / sqrt(n) (sd with n - 1).
MeanSe mean_se(const std::vector<double>& v) {
  MeanSe r;
  if (v.empty()) return r;
  const double n = static_cast<double>(v.size());
  for (double x : v) r.mean += x;
  r.mean /= n;
  double ss = 0;
  for (double x : v) ss += (x - r.mean) * (x - r.mean);
  r.se = v.size() > 1 ? std::sqrt(ss / (n - 1) / n) : 0.0;
  return r;
}

uint64_t row_hash(const float* p, int64_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  const auto* b = reinterpret_cast<const unsigned char*>(p);
  for (size_t i = 0; i < static_cast<size_t>(n) * sizeof(float); ++i)
    h = (h ^ b[i]) * 0x100000001b3ULL;
  return h;
}

// The scored rows of one forward call: logits [r, V] fp32 on the CPU, targets [r].
struct ScoredRows {
  torch::Tensor logits;   // [r, V] fp32, CPU, contiguous
  torch::Tensor targets;  // [r] int64
};

// Feeds every window of the plan through a fresh state of `method`; `on_rows` gets the scored
// rows in plan order, `on_window` the state after each window. `progress` gets the fraction of
// input tokens fed.
void feed_plan(const Model& model, const KVMethod& method, const PerplexityPlan& plan,
               const std::function<void(const ScoredRows&)>& on_rows,
               const std::function<void(const PerplexityWindow&, const KVCacheState&)>& on_window,
               const std::function<void(double)>& progress) {
  c10::InferenceMode guard;
  const ModelShape shape = model.shape();
  int64_t total = 0, done = 0;
  for (const auto& w : plan.windows) total += static_cast<int64_t>(w.input.size());
  for (const PerplexityWindow& w : plan.windows) {
    const int64_t n = static_cast<int64_t>(w.input.size());
    auto st = method.make_state(shape);
    size_t next_row = 0;  // the first row of w.rows not yet scored
    // Feeds input [s, s + t) in one call; scores the rows among them when `score` is set.
    auto call = [&](int64_t s, int64_t t, bool score) {
      ForwardOptions fo;
      fo.all_logits = score && t > 1;
      torch::Tensor ids =
          torch::tensor(std::vector<int64_t>(w.input.begin() + s, w.input.begin() + s + t))
              .view({1, t});
      torch::Tensor pos = torch::arange(s, s + t, torch::kLong);
      torch::Tensor lg = model.forward(ids, pos, *st, fo)[0];  // [t or 1, V]
      done += t;
      if (score) {
        std::vector<int64_t> rows, targets;
        while (next_row < w.rows.size() && w.rows[next_row] < s + t) {
          const int64_t i = w.rows[next_row++];
          KVB_CHECK(i >= s, "perplexity: row ", i, " scored out of order");
          rows.push_back(fo.all_logits ? i - s : 0);
          targets.push_back(w.input[static_cast<size_t>(i + 1)]);
        }
        if (!rows.empty())
          on_rows({lg.index_select(0, torch::tensor(rows).to(lg.device()))
                       .to(torch::kCPU, torch::kFloat32)
                       .contiguous(),
                   torch::tensor(targets)});
      }
      if (progress && total > 0) progress(static_cast<double>(done) / static_cast<double>(total));
    };
    if (w.prompt > 0) {
      for (int64_t s = 0; s < w.prompt; s += plan.params.chunk)
        call(s, std::min(plan.params.chunk, w.prompt - s), false);
      st->end_prefill();
      for (int64_t s = w.prompt; s < n; ++s) call(s, 1, true);
    } else {
      for (int64_t s = 0; s < n; s += plan.params.chunk)
        call(s, std::min(plan.params.chunk, n - s), true);
    }
    KVB_CHECK(next_row == w.rows.size(), "perplexity: ", w.rows.size() - next_row,
              " rows of a window were not scored");
    on_window(w, *st);
  }
}

// The state's memory after each window of ctx tokens, averaged; the last window's when none is.
class MemoryMeter {
 public:
  explicit MemoryMeter(int64_t ctx) : ctx_(ctx) {}
  void add(const PerplexityWindow& w, const KVCacheState& st) {
    last_ = st.memory();
    // The window's last forward step (decode mode with chunk 1: its last decode step); a state
    // that reads all it holds has read what memory() holds.
    last_read_ = st.bytes_read_last_step().value_or(last_.payload_bytes + last_.metadata_bytes);
    last_prompt_ = w.prompt;
    if (static_cast<int64_t>(w.input.size()) != ctx_) return;
    prompt_ = w.prompt;
    ++full_;
    read_ += static_cast<double>(last_read_);
    pay_ += static_cast<double>(last_.payload_bytes);
    meta_ += static_cast<double>(last_.metadata_bytes);
    slots_ += static_cast<double>(last_.slots);
    seen_ = last_.tokens_seen;
  }
  void put(PerplexityResult& r) const {
    const int64_t prompt = full_ == 0 ? last_prompt_ : prompt_;  // 0 in decode mode
    r.memory_prompt_tokens = prompt > 0 ? prompt : -1;
    if (full_ == 0) {
      r.memory = last_;
      r.read_bytes_per_step = last_read_;
      r.memory_measured_at = "last_window";
      r.memory_windows = 1;
      return;
    }
    const double k = static_cast<double>(full_);
    r.memory.payload_bytes = std::llround(pay_ / k);
    r.memory.metadata_bytes = std::llround(meta_ / k);
    r.memory.slots = std::llround(slots_ / k);
    r.memory.tokens_seen = seen_;
    r.read_bytes_per_step = std::llround(read_ / k);
    r.memory_measured_at = "full_window_mean";
    r.memory_windows = full_;
  }

 private:
  int64_t ctx_, full_ = 0, seen_ = 0, prompt_ = 0, last_prompt_ = 0, last_read_ = 0;
  double pay_ = 0, meta_ = 0, slots_ = 0, read_ = 0;
  MemoryUse last_;
};

void fill_nll(PerplexityResult& r, const std::vector<double>& nll, const std::vector<double>& ref) {
  KVB_INPUT_CHECK(!nll.empty(), "perplexity: no token was scored");
  const MeanSe m = mean_se(nll), f = mean_se(ref);
  r.tokens = static_cast<int64_t>(nll.size());
  r.nll = m.mean;
  r.nll_se = m.se;
  r.ppl = std::exp(r.nll);
  r.ppl_se = r.ppl * r.nll_se;
  r.ref_nll = f.mean;
  r.ref_ppl = std::exp(r.ref_nll);
}

}  // namespace

PerplexityText tokenize_for_perplexity(const Tokenizer& tok, const std::string& text,
                                       const PerplexityParams& p) {
  PerplexityText t;
  t.prefix = front_specials(tok);
  const int64_t P = static_cast<int64_t>(t.prefix.size());
  const int64_t L = p.ctx - P;
  KVB_INPUT_CHECK(L >= 2, "perplexity: ctx ", p.ctx, " leaves fewer than 2 text tokens per window");
  const int64_t stride = p.stride > 0 ? p.stride : L;
  if (p.max_windows <= 0) {
    t.ids = to64(tok.encode(text, false));
  } else {
    // llama.cpp scoring: chunks of ctx tokens of [specials] + text.
    const int64_t need =
        p.scoring == "llama.cpp" ? p.max_windows * p.ctx - P : (p.max_windows - 1) * stride + L;
    size_t chars = static_cast<size_t>(need) * 8 + 256;
    for (;;) {
      size_t cut = chars >= text.size() ? text.size() : text.rfind('\n', chars);
      if (cut == std::string::npos || cut == 0) cut = std::min(chars, text.size());
      t.ids = to64(tok.encode(text.substr(0, cut), false));
      // A margin keeps the tokens near the cut (which a longer prefix might merge) unused.
      if (cut == text.size() || static_cast<int64_t>(t.ids.size()) >= need + 64) break;
      chars *= 2;
    }
    if (static_cast<int64_t>(t.ids.size()) > need) t.ids.resize(static_cast<size_t>(need));
  }
  KVB_INPUT_CHECK(static_cast<int64_t>(t.ids.size()) >= 2,
                  "perplexity: the text has fewer than 2 tokens");
  return t;
}

PerplexityPlan plan_perplexity(const PerplexityText& text, const PerplexityParams& p) {
  PerplexityPlan plan;
  plan.params = p;
  const int64_t P = static_cast<int64_t>(text.prefix.size());
  const int64_t L = p.ctx - P, N = static_cast<int64_t>(text.ids.size());
  KVB_INPUT_CHECK(p.chunk >= 1, "perplexity: chunk must be at least 1");
  KVB_INPUT_CHECK(L >= 2, "perplexity: ctx ", p.ctx, " leaves fewer than 2 text tokens per window");

  if (p.scoring == "llama.cpp") {
    // llama-perplexity: the text tokenized with its specials, cut into chunks of ctx tokens, the
    // first token of each replaced by BOS; the second half of each chunk scored.
    std::vector<int64_t> all(text.prefix);
    all.insert(all.end(), text.ids.begin(), text.ids.end());
    int64_t chunks = static_cast<int64_t>(all.size()) / p.ctx;
    if (p.max_windows > 0) chunks = std::min(chunks, p.max_windows);
    KVB_INPUT_CHECK(chunks >= 1, "perplexity: \"scoring\": \"llama.cpp\" needs ctx (", p.ctx,
                    ") tokens; the text has ", all.size());
    plan.stride = p.ctx;
    for (int64_t c = 0; c < chunks; ++c) {
      PerplexityWindow w;
      w.input.assign(all.begin() + c * p.ctx, all.begin() + (c + 1) * p.ctx);
      if (P > 0) w.input[0] = text.prefix[0];
      for (int64_t j = p.ctx / 2; j <= p.ctx - 2; ++j) w.rows.push_back(j);
      plan.scored += static_cast<int64_t>(w.rows.size());
      plan.reads_back = plan.reads_back || p.ctx > p.chunk;
      plan.windows.push_back(std::move(w));
    }
    return plan;
  }

  const int64_t stride = p.stride > 0 ? p.stride : L;
  KVB_INPUT_CHECK(stride <= L, "perplexity: stride ", stride, " exceeds the ", L,
                  " text tokens of a window (ctx ", p.ctx, P > 0 ? " less the BOS)" : ")");
  plan.stride = stride;
  const bool prefill = p.mode == "prefill";
  int64_t scored_until = 0;  // text tokens below this index are scored already
  for (int64_t b = 0; b < N; b += stride) {
    const int64_t e = std::min(b + L, N);
    if (e - b + P < 2) break;  // nothing to predict
    PerplexityWindow w;
    w.input = text.prefix;
    w.input.insert(w.input.end(), text.ids.begin() + b, text.ids.begin() + e);
    const int64_t n = static_cast<int64_t>(w.input.size());
    // Prefill: only windows that score something after their prompt.
    if (prefill && n < p.prefix + 2) break;
    w.prompt = prefill ? p.prefix : 0;
    // Row i predicts input[i + 1] = text token b + i + 1 - P.
    for (int64_t i = prefill ? p.prefix : 0; i + 1 < n; ++i) {
      const int64_t j = b + i + 1 - P;
      if (i + 1 < P || j < scored_until) continue;
      w.rows.push_back(i);
    }
    plan.scored += static_cast<int64_t>(w.rows.size());
    plan.reads_back = plan.reads_back || prefill || n > p.chunk;
    plan.windows.push_back(std::move(w));
    scored_until = e;
    if (e == N || (p.max_windows > 0 && static_cast<int64_t>(plan.windows.size()) >= p.max_windows))
      break;
  }
  KVB_INPUT_CHECK(plan.scored > 0, "perplexity: no token would be scored (",
                  prefill ? "the text is shorter than prefix + 2 tokens" : "the text is too short",
                  ")");
  return plan;
}

nlohmann::json memory_use_json(const MemoryUse& m, int64_t prompt_tokens) {
  nlohmann::json j{{"payload_bytes", m.payload_bytes},
                   {"metadata_bytes", m.metadata_bytes},
                   {"tokens_seen", m.tokens_seen},
                   {"slots", m.slots}};
  if (prompt_tokens >= 0) j["prompt_tokens"] = prompt_tokens;
  return j;
}

nlohmann::json PerplexityResult::metrics_json() const {
  nlohmann::json mem = memory_use_json(memory, memory_prompt_tokens);
  mem["measured_at"] = memory_measured_at;
  mem["windows"] = memory_windows;
  if (read_bytes_per_step >= 0) mem["read_bytes_per_step"] = read_bytes_per_step;
  return {{"ppl", ppl},
          {"ppl_se", ppl_se},
          {"nll", nll},
          {"nll_se", nll_se},
          {"ref_ppl", ref_ppl},
          {"ref_nll", ref_nll},
          {"delta_nll", delta_nll},
          {"delta_nll_se", delta_nll_se},
          {"ln_ppl_ratio", delta_nll},
          {"ln_ppl_ratio_se", delta_nll_se},
          {"kl_mean", kl_mean},
          {"kl_mean_se", kl_se},
          {"kl_median", kl_median},
          {"kl_p90", kl_p90},
          {"kl_p99", kl_p99},
          {"kl_p999", kl_p999},
          {"kl_max", kl_max},
          {"top1_agreement", top1_agreement},
          {"top1_agreement_se", top1_se},
          {"dp_mean", dp_mean},
          {"dp_mean_se", dp_se},
          {"tokens", tokens},
          {"windows", windows},
          {"memory", mem},
          {"seconds", seconds},
          {"tokens_per_second", seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0}};
}

PerplexityReference compute_perplexity_reference(const Model& model, const KVMethod& reference,
                                                 const PerplexityPlan& plan,
                                                 const std::function<void(double)>& progress,
                                                 PerplexityReference::Options opt) {
  const auto t0 = Clock::now();
  PerplexityReference ref;
  std::vector<torch::Tensor> lps, tops, tails;
  bool full = true;
  MemoryMeter meter(plan.params.ctx);
  feed_plan(
      model, reference, plan,
      [&](const ScoredRows& s) {
        const int64_t r = s.logits.size(0), V = s.logits.size(1);
        full = V <= opt.full_vocab_max;
        torch::Tensor lp = s.logits.to(torch::kFloat64).log_softmax(-1);  // [r, V]
        torch::Tensor tl = lp.gather(1, s.targets.view({-1, 1})).view({-1});
        torch::Tensor am = s.logits.argmax(-1);
        const double* t = tl.data_ptr<double>();
        const int64_t* a = am.data_ptr<int64_t>();
        for (int64_t i = 0; i < r; ++i) {
          ref.nll.push_back(-t[i]);
          ref.p_correct.push_back(std::exp(t[i]));
          ref.argmax.push_back(a[i]);
          ref.row_hash.push_back(row_hash(s.logits.data_ptr<float>() + i * V, V));
        }
        if (full) {
          lps.push_back(lp);
        } else {
          auto [v, idx] = lp.topk(std::min(opt.top_k, V), -1);
          lps.push_back(v);
          tops.push_back(idx);
          tails.push_back(
              lp.scatter(1, idx, -std::numeric_limits<double>::infinity()).logsumexp(-1));
        }
      },
      [&](const PerplexityWindow& w, const KVCacheState& st) {
        meter.add(w, st);
        ++ref.self.windows;
      },
      progress);
  ref.logprobs = torch::cat(lps, 0);
  if (!full) {
    ref.top_ids = torch::cat(tops, 0);
    ref.tail = torch::cat(tails, 0);
  }
  PerplexityResult& r = ref.self;
  fill_nll(r, ref.nll, ref.nll);
  r.stride = plan.stride;
  r.top1_agreement = 1.0;
  r.identical = true;
  meter.put(r);
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return ref;
}

PerplexityResult run_perplexity_pass(const Model& model, const KVMethod& method,
                                     const PerplexityReference& ref, const PerplexityPlan& plan,
                                     const std::function<void(double)>& progress) {
  const auto t0 = Clock::now();
  const size_t n_ref = ref.nll.size();
  KVB_CHECK(static_cast<int64_t>(n_ref) == plan.scored,
            "perplexity: the reference was computed on another plan");
  std::vector<double> nll, d, kl, dp;
  nll.reserve(n_ref);
  int64_t agree = 0;
  bool identical = true;
  PerplexityResult r;
  MemoryMeter meter(plan.params.ctx);
  feed_plan(
      model, method, plan,
      [&](const ScoredRows& s) {
        const int64_t rows = s.logits.size(0), V = s.logits.size(1);
        const int64_t a = static_cast<int64_t>(nll.size());
        KVB_CHECK(a + rows <= static_cast<int64_t>(n_ref),
                  "perplexity: more rows than the reference");
        torch::Tensor lp = s.logits.to(torch::kFloat64).log_softmax(-1);  // [r, V]
        torch::Tensor tl = lp.gather(1, s.targets.view({-1, 1})).view({-1});
        torch::Tensor am = s.logits.argmax(-1);
        torch::Tensor k;
        if (ref.full_vocab()) {
          torch::Tensor rl = ref.logprobs.narrow(0, a, rows);
          k = (rl.exp() * (rl - lp)).sum(-1);
        } else {
          // Over the reference's top-k tokens plus one bucket for the rest of the vocabulary.
          torch::Tensor ids = ref.top_ids.narrow(0, a, rows), rl = ref.logprobs.narrow(0, a, rows);
          torch::Tensor rt = ref.tail.narrow(0, a, rows);
          torch::Tensor ml = lp.gather(1, ids);
          torch::Tensor mt =
              lp.scatter(1, ids, -std::numeric_limits<double>::infinity()).logsumexp(-1);
          torch::Tensor tail_term = torch::where(rt > -std::numeric_limits<double>::infinity(),
                                                 rt.exp() * (rt - mt), torch::zeros_like(rt));
          k = (rl.exp() * (rl - ml)).sum(-1) + tail_term;
        }
        const double* t = tl.data_ptr<double>();
        const int64_t* am_p = am.data_ptr<int64_t>();
        const double* kp = k.data_ptr<double>();
        for (int64_t i = 0; i < rows; ++i) {
          const size_t g = static_cast<size_t>(a + i);
          nll.push_back(-t[i]);
          d.push_back(-t[i] - ref.nll[g]);
          kl.push_back(kp[i]);
          dp.push_back(std::exp(t[i]) - ref.p_correct[g]);
          agree += am_p[i] == ref.argmax[g];
          identical =
              identical && row_hash(s.logits.data_ptr<float>() + i * V, V) == ref.row_hash[g];
        }
      },
      [&](const PerplexityWindow& w, const KVCacheState& st) {
        meter.add(w, st);
        ++r.windows;
      },
      progress);
  KVB_CHECK(nll.size() == n_ref, "perplexity: ", nll.size(), " rows against the reference's ",
            n_ref);
  fill_nll(r, nll, ref.nll);
  r.stride = plan.stride;
  const double n = static_cast<double>(nll.size());
  const MeanSe dd = mean_se(d), kk = mean_se(kl), pp = mean_se(dp);
  r.delta_nll = dd.mean;
  r.delta_nll_se = dd.se;
  r.kl_mean = kk.mean;
  r.kl_se = kk.se;
  std::sort(kl.begin(), kl.end());
  r.kl_median = percentile(kl, 0.5);
  r.kl_p90 = percentile(kl, 0.9);
  r.kl_p99 = percentile(kl, 0.99);
  r.kl_p999 = percentile(kl, 0.999);
  r.kl_max = kl.back();
  r.top1_agreement = static_cast<double>(agree) / n;
  r.top1_se = std::sqrt(r.top1_agreement * (1 - r.top1_agreement) / n);
  r.dp_mean = pp.mean;
  r.dp_se = pp.se;
  r.identical = identical;
  meter.put(r);
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return r;
}

PerplexityResult run_perplexity(const Model& model, const KVMethod& method,
                                const KVMethod& reference, const PerplexityText& text,
                                const PerplexityParams& p,
                                const std::function<void(double)>& progress) {
  const PerplexityPlan plan = plan_perplexity(text, p);
  auto half = [&](double base) {
    return [&progress, base](double f) {
      if (progress) progress(base + 0.5 * f);
    };
  };
  const PerplexityReference ref = compute_perplexity_reference(model, reference, plan, half(0.0));
  return run_perplexity_pass(model, method, ref, plan, half(0.5));
}

}  // namespace kvb
