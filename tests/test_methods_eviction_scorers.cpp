// The score-selector methods that score from attention or from the held keys/values — TOVA,
// Scissorhands, A2SF, observed attention, KeyDiff, LagKV — each against an independent
// reimplementation of its rule: a state is driven with synthetic keys/values and hand-built
// attention probabilities (observe()), the test recomputes per KV head, in double and in
// position space, which tokens the rule keeps, and compares with the positions the store holds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "methods/registry.h"
#include "tests/methods_test_util.h"

namespace kvb {
namespace {

using test::held_positions;
using test::method_shape;

// Attention weights for a chunk: colpos [H_kv, S + T] (the position each column holds, per KV
// head), qpos [T] -> [1, H_q, T, S + T].
using ProbsFn =
    std::function<torch::Tensor(const torch::Tensor& colpos, const torch::Tensor& qpos)>;

// The engine's call order (view, append, observe) with recorded inputs.
struct Driver {
  ModelShape shape;
  torch::Generator gen;
  ProbsFn probs_fn;
  std::vector<torch::Tensor> k, v;  // per layer [1, H_kv, N, D], append order
  struct Step {
    int64_t s = 0, t = 0;
    torch::Tensor colpos;  // [H_kv, S + T] int64
    torch::Tensor probs;   // [1, H_q, T, S + T] or undefined (no attention wanted)
  };
  std::vector<Step> last;  // per layer, the latest chunk
  int64_t n = 0;

  Driver(const ModelShape& s, uint64_t seed, ProbsFn fn = {})
      : shape(s),
        gen(at::make_generator<at::CPUGeneratorImpl>(seed)),
        probs_fn(std::move(fn)),
        k(static_cast<size_t>(s.n_layers)),
        v(static_cast<size_t>(s.n_layers)),
        last(static_cast<size_t>(s.n_layers)) {
    if (!probs_fn)
      probs_fn = [this](const torch::Tensor& c, const torch::Tensor& q) {
        return random_probs(c, q);
      };
  }

  // Random logits, causal by position, softmax.
  torch::Tensor random_probs(const torch::Tensor& colpos, const torch::Tensor& qpos) {
    const int64_t hq = shape.n_head_q, g = hq / shape.n_head_kv, t = qpos.size(0);
    torch::Tensor logits = torch::randn({1, hq, t, colpos.size(1)}, gen) * 2;
    torch::Tensor cp = colpos.repeat_interleave(g, 0).view({1, hq, 1, colpos.size(1)});
    logits.masked_fill_(cp > qpos.view({1, 1, t, 1}), -std::numeric_limits<float>::infinity());
    return torch::softmax(logits, -1);
  }

  void feed(KVCacheState& st, int64_t t) {
    const int64_t hq = shape.n_head_q, hkv = shape.n_head_kv, d = shape.head_dim;
    torch::Tensor pos = torch::arange(n, n + t, torch::kLong);
    for (int l = 0; l < shape.n_layers; ++l) {
      KVView view = st.view(l);
      const int64_t s = view.slots();
      torch::Tensor vpos = s > 0 ? view.pos[0].clone() : torch::empty({hkv, 0}, torch::kLong);
      torch::Tensor kk = torch::randn({1, hkv, t, d}, gen), vv = torch::randn({1, hkv, t, d}, gen);
      torch::Tensor q = torch::randn({1, hq, t, d}, gen);
      st.append(l, KVAppend{kk, kk, vv, pos, q});
      k[l] = k[l].defined() ? torch::cat({k[l], kk}, 2) : kk;
      v[l] = v[l].defined() ? torch::cat({v[l], vv}, 2) : vv;
      Step& S = last[static_cast<size_t>(l)];
      S = Step{s, t, torch::cat({vpos, pos.view({1, t}).expand({hkv, t})}, 1), {}};
      if (st.wants_attention(l)) {
        S.probs = probs_fn(S.colpos, pos);
        st.observe(l, S.probs);
      }
    }
    n += t;
  }
};

// What one query gave each position in one KV head: G query heads summed (or averaged).
// Returns, per query t of the chunk, position -> weight.
std::vector<std::map<int64_t, double>> group_attention(const Driver::Step& S, int64_t h, int64_t g,
                                                       bool mean) {
  std::vector<std::map<int64_t, double>> out(static_cast<size_t>(S.t));
  torch::Tensor p = S.probs[0].to(torch::kFloat64);
  for (int64_t t = 0; t < S.t; ++t)
    for (int64_t c = 0; c < S.s + S.t; ++c) {
      double w = 0;
      for (int64_t j = 0; j < g; ++j) w += p[h * g + j][t][c].item<double>();
      out[static_cast<size_t>(t)][S.colpos[h][c].item<int64_t>()] = mean ? w / g : w;
    }
  return out;
}

// Keeps the `budget` best of `held` by key (highest first); the rest are erased.
template <typename Key>
void keep_best(std::map<int64_t, double>& held, int64_t budget,
               const std::function<Key(int64_t pos, double score)>& key) {
  if (static_cast<int64_t>(held.size()) <= budget) return;
  std::vector<std::pair<Key, int64_t>> r;
  for (const auto& [p, sc] : held) r.push_back({key(p, sc), p});
  std::sort(r.begin(), r.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = static_cast<size_t>(budget); i < r.size(); ++i) held.erase(r[i].second);
}

std::set<int64_t> keys_of(const std::map<int64_t, double>& m) {
  std::set<int64_t> s;
  for (const auto& [p, sc] : m) s.insert(p);
  return s;
}

const std::vector<int64_t> kChunks = {13, 1, 1, 1, 7, 1, 1, 30, 1, 1, 1, 1, 2, 1, 1, 1, 5, 1, 1};

// The rule of an attention-scored selector that decides when over budget: per KV head, `update`
// turns the chunk's group attention into the positions' new scores; then the top `budget` by
// (within the `recent` window, score, position).
struct OnlineRule {
  int64_t budget, recent;
  bool mean_over_group;
  std::function<void(std::map<int64_t, double>& held, const std::vector<std::map<int64_t, double>>&,
                     int64_t s)>
      update;
  bool ties_to_newer = false;
};

void expect_online_rule(const std::string& spec, const OnlineRule& rule, uint64_t seed,
                        ProbsFn fn = {}) {
  SCOPED_TRACE(spec);
  const ModelShape shape = method_shape(2, 4, 2, 8);
  const int64_t g = 2;
  auto st = make_method(spec)->make_state(shape);
  Driver drv(shape, seed, std::move(fn));
  std::vector<std::map<int64_t, double>> ref(4);  // [layer * 2 + head] position -> score
  for (int64_t chunk : kChunks) {
    drv.feed(*st, chunk);
    const int64_t last = drv.n - 1;
    for (int l = 0; l < 2; ++l)
      for (int64_t h = 0; h < 2; ++h) {
        auto& held = ref[static_cast<size_t>(l * 2 + h)];
        const Driver::Step& S = drv.last[static_cast<size_t>(l)];
        for (int64_t p = drv.n - chunk; p < drv.n; ++p) held[p] = 0;
        rule.update(held, group_attention(S, h, g, rule.mean_over_group), S.s);
        keep_best<std::tuple<bool, double, int64_t>>(held, rule.budget, [&](int64_t p, double sc) {
          return std::make_tuple(p > last - rule.recent, sc, rule.ties_to_newer ? p : 0);
        });
        ASSERT_EQ(held_positions(*st, l, h), keys_of(held))
            << "layer " << l << " head " << h << " after " << drv.n << " tokens";
      }
  }
}

OnlineRule tova_rule(int64_t budget) {
  return {budget, 0, true,
          [](std::map<int64_t, double>& held, const std::vector<std::map<int64_t, double>>& a,
             int64_t) {
            for (auto& [p, sc] : held) sc = a.back().at(p);  // the current query only
          }};
}

OnlineRule a2sf_rule(int64_t budget, int64_t recent, double f) {
  return {budget, recent, false,
          [f](std::map<int64_t, double>& held, const std::vector<std::map<int64_t, double>>& a,
              int64_t) {
            for (const auto& q : a)  // one query at a time: score <- f * score + attention
              for (auto& [p, sc] : held) sc = f * sc + q.at(p);
          }};
}

TEST(MethodEvictionScorers, TovaKeepsTheTopOfTheCurrentQueryPerKVHead) {
  expect_online_rule("tova(budget=16)", tova_rule(16), 1);
  expect_online_rule("tova(budget=5)", tova_rule(5), 2);
}

TEST(MethodEvictionScorers, A2SFDecaysAccumulatedAttentionPerQuery) {
  expect_online_rule("a2sf(budget=16,forget=0.3)", a2sf_rule(16, 8, 0.3), 3);
  expect_online_rule("a2sf(budget=12,forget=0.9,recent=3)", a2sf_rule(12, 3, 0.9), 4);
  expect_online_rule("a2sf(budget=12,forget=1,recent=0)", a2sf_rule(12, 0, 1.0), 5);
}

// Scissorhands: per query, the positions whose (group-mean) weight exceeds 1/n, n = the tokens
// that query attends; counts over the last `history` queries; ties keep the newer token.
void expect_scissorhands(const std::string& spec, int64_t budget, int64_t recent, int64_t history,
                         uint64_t seed, ProbsFn fn = {}) {
  auto records = std::make_shared<std::vector<std::vector<std::set<int64_t>>>>(4);
  auto which = std::make_shared<size_t>(0);
  OnlineRule r{budget, recent, true, {}, true};
  r.update = [records, which, history](std::map<int64_t, double>& held,
                                       const std::vector<std::map<int64_t, double>>& a, int64_t s) {
    auto& rec = (*records)[*which];
    for (size_t t = 0; t < a.size(); ++t) {
      const double n = static_cast<double>(s + static_cast<int64_t>(t) + 1);
      std::set<int64_t> imp;
      for (const auto& [p, w] : a[t])
        if (w > 1.0 / n) imp.insert(p);
      rec.push_back(imp);
    }
    const size_t from = rec.size() > static_cast<size_t>(history) ? rec.size() - history : 0;
    for (auto& [p, sc] : held) {
      sc = 0;
      for (size_t i = from; i < rec.size(); ++i) sc += rec[i].count(p);
    }
    *which = (*which + 1) % 4;  // layer 0 head 0, head 1, layer 1 head 0, head 1
  };
  expect_online_rule(spec, r, seed, std::move(fn));
}

TEST(MethodEvictionScorers, ScissorhandsCountsImportanceOverTheHistoryWindow) {
  expect_scissorhands("scissorhands(budget=16,history=400)", 16, 8, 400, 6);
  expect_scissorhands("scissorhands(budget=16,history=5,recent=2)", 16, 2, 5, 7);
  expect_scissorhands("scissorhands(budget=10,history=9,recent=0)", 10, 0, 9, 8);
  expect_scissorhands("scissorhands(budget=20,history=17,recent=4)", 20, 4, 17, 9);
}

TEST(MethodEvictionScorers, TovaAndA2SFSelectTheSameBeforeKivi) {
  expect_online_rule("tova(budget=16)+kivi(bits=2,group=8,residual=8)", tova_rule(16), 10);
  expect_online_rule("a2sf(budget=16,forget=0.5)+kivi(bits=2)", a2sf_rule(16, 8, 0.5), 11);
}

// Hand-built attention: the query at position i gives position 0 the weight `w0(i)` and shares
// the rest evenly over the other positions it sees (causal).
ProbsFn token0_attention(const ModelShape& shape, std::function<double(int64_t)> w0) {
  return [shape, w0](const torch::Tensor& colpos, const torch::Tensor& qpos) {
    const int64_t hq = shape.n_head_q, g = hq / shape.n_head_kv, t = qpos.size(0);
    const int64_t c = colpos.size(1);
    torch::Tensor p = torch::zeros({1, hq, t, c});
    for (int64_t qh = 0; qh < hq; ++qh)
      for (int64_t i = 0; i < t; ++i) {
        const int64_t qp = qpos[i].item<int64_t>();
        int64_t others = 0;
        for (int64_t j = 0; j < c; ++j) {
          const int64_t cp = colpos[qh / g][j].item<int64_t>();
          others += cp <= qp && cp != 0;
        }
        for (int64_t j = 0; j < c; ++j) {
          const int64_t cp = colpos[qh / g][j].item<int64_t>();
          if (cp > qp) continue;
          const double w = cp == 0 ? (others ? w0(qp) : 1.0) : (1.0 - w0(qp)) / others;
          p[0][qh][i][j] = static_cast<float>(w);
        }
      }
    return p;
  };
}

bool holds_token0(const std::string& spec, const ProbsFn& fn, int64_t tokens) {
  const ModelShape shape = method_shape(1, 2, 1, 8);
  auto st = make_method(spec)->make_state(shape);
  Driver drv(shape, 12, fn);
  for (int64_t i = 0; i < tokens; ++i) drv.feed(*st, 1);
  return held_positions(*st, 0, 0).count(0) == 1;
}

// Position 0 drew most of the attention of the first queries, the last query gives it almost
// nothing: TOVA evicts it (only the current query counts), H2O keeps it.
TEST(MethodEvictionScorers, TovaDecidesFromTheCurrentQueryOnly) {
  const ModelShape shape = method_shape(1, 2, 1, 8);
  auto fn = token0_attention(shape, [](int64_t q) { return q < 8 ? 0.9 : 0.001; });
  EXPECT_FALSE(holds_token0("tova(budget=8)", fn, 9));
  EXPECT_TRUE(holds_token0("h2o(budget=8,recent=0)", fn, 9));
}

// Position 0 drew heavy attention from the first 6 queries, then almost none: without forgetting
// it stays (H2O), with a small factor its old attention fades and it goes.
TEST(MethodEvictionScorers, A2SFForgetsOldAttention) {
  const ModelShape shape = method_shape(1, 2, 1, 8);
  auto fn = token0_attention(shape, [](int64_t q) { return q < 6 ? 0.9 : 0.001; });
  EXPECT_TRUE(holds_token0("a2sf(budget=8,forget=1,recent=0)", fn, 30));
  EXPECT_FALSE(holds_token0("a2sf(budget=8,forget=0.5,recent=0)", fn, 30));
}

// Position 0 was important to the first 6 queries only: with a window of 400 queries its count
// stays the highest; with a window of 8 those queries have left the window and it goes.
TEST(MethodEvictionScorers, ScissorhandsForgetsImportanceOutsideTheWindow) {
  const ModelShape shape = method_shape(1, 2, 1, 8);
  auto fn = token0_attention(shape, [](int64_t q) { return q < 6 ? 0.9 : 0.001; });
  EXPECT_TRUE(holds_token0("scissorhands(budget=8,history=400,recent=0)", fn, 30));
  EXPECT_FALSE(holds_token0("scissorhands(budget=8,history=8,recent=0)", fn, 30));
  // And the property check on this hand-built attention.
  expect_scissorhands(
      "scissorhands(budget=8,history=8,recent=2)", 8, 2, 8, 13,
      token0_attention(method_shape(2, 4, 2, 8), [](int64_t q) { return q < 6 ? 0.9 : 0.001; }));
}

// Observed attention: summed over the prompt's queries and the group, divided by G times the
// number of queries that saw the token; top `budget` once at end_prefill; decode tokens stay.
TEST(MethodEvictionScorers, ObservedAttentionKeepsTheTopMeanAttentionOfThePrompt) {
  const ModelShape shape = method_shape(2, 4, 2, 8);
  for (int64_t chunk : {1, 9, 64}) {
    SCOPED_TRACE(chunk);
    auto st = make_method("observed_attention(budget=20)")->make_state(shape);
    Driver drv(shape, 14);
    std::vector<std::map<int64_t, double>> sum(4), seen(4);
    const int64_t prompt = 64;
    for (int64_t done = 0; done < prompt; done += chunk) {
      drv.feed(*st, std::min(chunk, prompt - done));
      for (int l = 0; l < 2; ++l)
        for (int64_t h = 0; h < 2; ++h) {
          const size_t i = static_cast<size_t>(l * 2 + h);
          const Driver::Step& S = drv.last[static_cast<size_t>(l)];
          auto a = group_attention(S, h, 2, false);
          for (size_t t = 0; t < a.size(); ++t)
            for (const auto& [p, w] : a[t]) {
              sum[i][p] += w;
              if (p <= drv.n - S.t + static_cast<int64_t>(t)) seen[i][p] += 1;
            }
        }
    }
    EXPECT_EQ(held_positions(*st, 0, 0).size(), 64u);  // nothing before end_prefill
    st->end_prefill();
    std::vector<std::set<int64_t>> want(4);
    for (size_t i = 0; i < 4; ++i) {
      std::map<int64_t, double> score;
      for (const auto& [p, s] : sum[i]) score[p] = s / (2 * seen[i][p]);
      keep_best<double>(score, 20, [](int64_t, double sc) { return sc; });
      want[i] = keys_of(score);
    }
    for (int step = 0; step < 6; ++step) {
      for (int l = 0; l < 2; ++l)
        for (int64_t h = 0; h < 2; ++h)
          ASSERT_EQ(held_positions(*st, l, h), want[static_cast<size_t>(l * 2 + h)])
              << "layer " << l << " head " << h << " after " << drv.n;
      drv.feed(*st, 1);
      for (auto& w : want) w.insert(drv.n - 1);  // decode tokens are never evicted
    }
  }
}

// KeyDiff: whenever over budget, the `budget` held keys of lowest cosine to the mean of the
// held normalised keys.
TEST(MethodEvictionScorers, KeyDiffKeepsTheKeysLeastLikeTheMeanDirection) {
  const ModelShape shape = method_shape(2, 4, 2, 8);
  for (const char* spec : {"keydiff(budget=16)", "keydiff(budget=3)"}) {
    SCOPED_TRACE(spec);
    const int64_t budget = canonicalize(spec).front().params.at("budget") == "3" ? 3 : 16;
    auto st = make_method(spec)->make_state(shape);
    Driver drv(shape, 15);
    std::vector<std::set<int64_t>> held(4);
    for (int64_t chunk : kChunks) {
      drv.feed(*st, chunk);
      for (int l = 0; l < 2; ++l)
        for (int64_t h = 0; h < 2; ++h) {
          auto& set = held[static_cast<size_t>(l * 2 + h)];
          for (int64_t p = drv.n - chunk; p < drv.n; ++p) set.insert(p);
          if (static_cast<int64_t>(set.size()) > budget) {
            torch::Tensor keys = drv.k[l][0][h].to(torch::kFloat64);  // [N, D]
            std::vector<double> anchor(8, 0.0);
            for (int64_t p : set) {
              const double nrm = keys[p].norm().item<double>();
              for (int64_t d = 0; d < 8; ++d)
                anchor[d] += keys[p][d].item<double>() / nrm / set.size();
            }
            double an = 0;
            for (double x : anchor) an += x * x;
            an = std::sqrt(an);
            std::map<int64_t, double> score;
            for (int64_t p : set) {
              double dot = 0;
              for (int64_t d = 0; d < 8; ++d) dot += keys[p][d].item<double>() * anchor[d];
              score[p] = -dot / (keys[p].norm().item<double>() * an);
            }
            keep_best<double>(score, budget, [](int64_t, double sc) { return sc; });
            set = keys_of(score);
          }
          ASSERT_EQ(held_positions(*st, l, h), set)
              << "layer " << l << " head " << h << " after " << drv.n;
        }
    }
  }
}

// LagKV, straight from the description: chunks of `lag` after `sink` sinks, each scored against
// the next chunk's per-channel min/max (std over channels of the normalised key and value,
// softmax over the chunk, mean of the two), ranked within the chunk; the last full chunk and the
// remainder are kept with the sinks.
std::set<int64_t> lagkv_rule(const torch::Tensor& keys, const torch::Tensor& values,  // [N, D]
                             int64_t budget, int64_t lag, int64_t sink) {
  const int64_t n = keys.size(0), d = keys.size(1);
  std::set<int64_t> all;
  for (int64_t p = 0; p < n; ++p) all.insert(p);
  if (n <= budget) return all;
  const int64_t scored = n < sink + 2 * lag ? 0 : (n - sink) / lag - 1;
  const int64_t tail_from = sink + scored * lag;
  // Priority: (class, value, chunk): sinks 2, tail 1 (later first), chunk tokens 0 by rank.
  std::vector<std::tuple<int, double, int64_t, int64_t>> r;
  for (int64_t p = 0; p < sink && p < n; ++p) r.push_back({2, 0.0, 0, p});
  for (int64_t p = tail_from; p < n; ++p) r.push_back({1, static_cast<double>(p), 0, p});
  auto state_scores = [&](const torch::Tensor& x, int64_t c) {
    torch::Tensor xx = x.to(torch::kFloat64);
    std::vector<double> sd(static_cast<size_t>(lag));
    for (int64_t i = 0; i < lag; ++i) {
      std::vector<double> z;
      for (int64_t ch = 0; ch < d; ++ch) {
        double mn = 1e300, mx = -1e300;
        for (int64_t j = 0; j < lag; ++j) {
          const double y = xx[sink + (c + 1) * lag + j][ch].item<double>();
          mn = std::min(mn, y), mx = std::max(mx, y);
        }
        const double range = mx > mn ? mx - mn : 1.0;
        z.push_back((xx[sink + c * lag + i][ch].item<double>() - mn) / range);
      }
      double mean = 0, var = 0;
      for (double e : z) mean += e / d;
      for (double e : z) var += (e - mean) * (e - mean) / (d - 1);
      sd[static_cast<size_t>(i)] = std::sqrt(var);
    }
    double total = 0;
    for (double e : sd) total += std::exp(e);
    for (double& e : sd) e = std::exp(e) / total;
    return sd;
  };
  for (int64_t c = 0; c < scored; ++c) {
    std::vector<double> sk = state_scores(keys, c), sv = state_scores(values, c);
    std::vector<std::pair<double, int64_t>> byscore;
    for (int64_t i = 0; i < lag; ++i)
      byscore.push_back({(sk[static_cast<size_t>(i)] + sv[static_cast<size_t>(i)]) / 2, i});
    std::sort(byscore.begin(), byscore.end());
    for (int64_t rank = 0; rank < lag; ++rank)
      r.push_back({0, static_cast<double>(rank), c,
                   sink + c * lag + byscore[static_cast<size_t>(rank)].second});
  }
  std::sort(r.begin(), r.end(), [](const auto& a, const auto& b) {
    return std::make_tuple(std::get<0>(a), std::get<1>(a), std::get<2>(a)) >
           std::make_tuple(std::get<0>(b), std::get<1>(b), std::get<2>(b));
  });
  std::set<int64_t> keep;
  for (int64_t i = 0; i < budget; ++i) keep.insert(std::get<3>(r[static_cast<size_t>(i)]));
  return keep;
}

TEST(MethodEvictionScorers, LagKVKeepsTheTopLagRelativeScoresAtEndOfPrefill) {
  struct Case {
    const char* spec;
    int64_t budget, lag, sink, prompt;
  };
  const ModelShape shape = method_shape(2, 4, 2, 8);
  for (const Case& c : {Case{"lagkv(budget=40,lag=16,sink=4)", 40, 16, 4, 100},
                        Case{"lagkv(budget=23,lag=8,sink=2)", 23, 8, 2, 77},
                        Case{"lagkv(budget=12,lag=16)", 12, 16, 4, 30},  // too short to score
                        Case{"lagkv(budget=3,lag=4,sink=0)", 3, 4, 0, 50},
                        Case{"lagkv(budget=60,lag=128)", 60, 128, 4, 70}}) {
    SCOPED_TRACE(c.spec);
    auto st = make_method(c.spec)->make_state(shape);
    Driver drv(shape, 16);
    for (int64_t done = 0; done < c.prompt; done += 33)
      drv.feed(*st, std::min<int64_t>(33, c.prompt - done));
    st->end_prefill();
    for (int i = 0; i < 3; ++i) drv.feed(*st, 1);
    for (int l = 0; l < 2; ++l)
      for (int64_t h = 0; h < 2; ++h) {
        std::set<int64_t> want =
            lagkv_rule(drv.k[l][0][h].narrow(0, 0, c.prompt), drv.v[l][0][h].narrow(0, 0, c.prompt),
                       c.budget, c.lag, c.sink);
        for (int64_t p = c.prompt; p < drv.n; ++p) want.insert(p);
        ASSERT_EQ(held_positions(*st, l, h), want) << "layer " << l << " head " << h;
      }
  }
}

// The memory each holds is what its spec promises, the importance ring included.
TEST(MethodEvictionScorers, ScissorhandsCountsItsImportanceRingAsMetadata) {
  const ModelShape shape = method_shape(2, 4, 2, 8);
  auto m = make_method("scissorhands(budget=16,history=20)");
  auto st = m->make_state(shape);
  Driver drv(shape, 17);
  for (int64_t c : {30, 1, 1, 9}) drv.feed(*st, c);
  const MemoryUse got = st->memory();
  // Per layer: 2 heads x 16 slots x (4 bytes count + 3 bytes ring + 8 bytes position).
  EXPECT_EQ(got.metadata_bytes, 2 * 2 * 16 * (4 + 3 + 8));
  EXPECT_EQ(got.metadata_bytes, m->promised_memory(shape, drv.n)->metadata_bytes);
}

}  // namespace
}  // namespace kvb
