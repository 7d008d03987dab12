#include "suites/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "common/check.h"

namespace kvb {

PerplexityParams parse_perplexity_params(const nlohmann::json& j) {
  PerplexityParams p;
  p.ctx = j.at("ctx").get<int64_t>();
  p.stride = j.value("stride", int64_t{0});
  p.chunk = j.value("chunk", int64_t{1});
  p.max_windows = j.value("max_windows", int64_t{0});
  return p;
}

nlohmann::json perplexity_params_json(const PerplexityParams& p) {
  return {{"ctx", p.ctx}, {"stride", p.stride}, {"chunk", p.chunk}, {"max_windows", p.max_windows}};
}

namespace {

std::vector<int64_t> to64(const std::vector<int32_t>& v) { return {v.begin(), v.end()}; }

std::vector<int64_t> front_specials(const Tokenizer& tok) {
  std::vector<int32_t> with = tok.encode("a", true), without = tok.encode("a", false);
  for (size_t k = 0; k + without.size() <= with.size(); ++k)
    if (std::equal(without.begin(), without.end(), with.begin() + static_cast<std::ptrdiff_t>(k)))
      return {with.begin(), with.begin() + static_cast<std::ptrdiff_t>(k)};
  return {};
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double idx = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(idx)), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (idx - static_cast<double>(lo));
}

}  // namespace

PerplexityText tokenize_for_perplexity(const Tokenizer& tok, const std::string& text,
                                       const PerplexityParams& p) {
  PerplexityText t;
  t.prefix = front_specials(tok);
  const int64_t L = p.ctx - static_cast<int64_t>(t.prefix.size());
  KVB_INPUT_CHECK(L >= 2, "perplexity: ctx ", p.ctx, " leaves fewer than 2 text tokens per window");
  const int64_t stride = p.stride > 0 ? p.stride : L;
  if (p.max_windows <= 0) {
    t.ids = to64(tok.encode(text, false));
  } else {
    const int64_t need = (p.max_windows - 1) * stride + L;
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

nlohmann::json memory_use_json(const MemoryUse& m) {
  return {{"payload_bytes", m.payload_bytes},
          {"metadata_bytes", m.metadata_bytes},
          {"tokens_seen", m.tokens_seen},
          {"slots", m.slots}};
}

nlohmann::json PerplexityResult::metrics_json() const {
  return {{"ppl", ppl},
          {"ppl_se", ppl_se},
          {"nll", nll},
          {"nll_se", nll_se},
          {"ref_ppl", ref_ppl},
          {"ref_nll", ref_nll},
          {"kl_mean", kl_mean},
          {"kl_p99", kl_p99},
          {"kl_max", kl_max},
          {"top1_agreement", top1_agreement},
          {"tokens", tokens},
          {"windows", windows},
          {"memory", memory_use_json(memory)},
          {"seconds", seconds},
          {"tokens_per_second", seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0}};
}

PerplexityResult run_perplexity(const Model& model, const KVMethod& method,
                                const KVMethod& reference, const PerplexityText& text,
                                const PerplexityParams& p,
                                const std::function<void(double)>& progress) {
  c10::InferenceMode guard;
  const auto t_start = std::chrono::steady_clock::now();
  const int64_t P = static_cast<int64_t>(text.prefix.size());
  const int64_t L = p.ctx - P, N = static_cast<int64_t>(text.ids.size());
  const int64_t stride = p.stride > 0 ? p.stride : L;
  KVB_INPUT_CHECK(L >= 2, "perplexity: ctx ", p.ctx, " leaves fewer than 2 text tokens per window");
  KVB_INPUT_CHECK(stride <= L, "perplexity: stride ", stride, " exceeds the ", L,
                  " text tokens of a window (ctx ", p.ctx, P > 0 ? " less the BOS)" : ")");
  KVB_INPUT_CHECK(p.chunk >= 1, "perplexity: chunk must be at least 1");

  // Windows first, so progress knows the total.
  std::vector<std::pair<int64_t, int64_t>> windows;  // text [b, e)
  for (int64_t b = 0; b < N; b += stride) {
    const int64_t e = std::min(b + L, N);
    if (e - b + P < 2) break;  // nothing to predict
    windows.emplace_back(b, e);
    if (e == N || (p.max_windows > 0 && static_cast<int64_t>(windows.size()) >= p.max_windows))
      break;
  }
  int64_t total_in = 0, done_in = 0;
  for (auto [b, e] : windows) total_in += e - b + P;

  const ModelShape shape = model.shape();
  std::vector<double> nll, ref_nll, kl;
  int64_t agree = 0;
  PerplexityResult r;
  int64_t scored_until = 0;  // text tokens below this index are scored already
  ForwardOptions fo;
  fo.all_logits = true;
  for (auto [b, e] : windows) {
    std::vector<int64_t> input(text.prefix);
    input.insert(input.end(), text.ids.begin() + b, text.ids.begin() + e);
    const int64_t n = static_cast<int64_t>(input.size());
    auto st_m = method.make_state(shape);
    auto st_f = reference.make_state(shape);
    for (int64_t s = 0; s < n; s += p.chunk) {
      const int64_t t = std::min(p.chunk, n - s);
      torch::Tensor ids =
          torch::tensor(std::vector<int64_t>(input.begin() + s, input.begin() + s + t))
              .view({1, t});
      torch::Tensor pos = torch::arange(s, s + t, torch::kLong);
      torch::Tensor lm = model.forward(ids, pos, *st_m, fo)[0];  // [t, V]
      torch::Tensor lf = model.forward(ids, pos, *st_f, fo)[0];  // [t, V]
      // Row i (input index s + i) predicts input[s + i + 1] = text token j.
      std::vector<int64_t> rows, targets;
      for (int64_t i = 0; i < t; ++i) {
        const int64_t in_next = s + i + 1;
        if (in_next >= n) break;
        const int64_t j = b + in_next - P;
        if (j < scored_until || in_next < P) continue;
        rows.push_back(i);
        targets.push_back(input[static_cast<size_t>(in_next)]);
      }
      done_in += t;
      if (!rows.empty()) {
        torch::Tensor ri = torch::tensor(rows), ti = torch::tensor(targets).view({-1, 1});
        torch::Tensor pm = lm.index_select(0, ri).to(torch::kFloat64).log_softmax(-1);  // [r, V]
        torch::Tensor pf = lf.index_select(0, ri).to(torch::kFloat64).log_softmax(-1);
        torch::Tensor nm = -pm.gather(1, ti).view({-1}), nf = -pf.gather(1, ti).view({-1});
        torch::Tensor k = (pf.exp() * (pf - pm)).sum(-1);
        torch::Tensor same = lm.index_select(0, ri).argmax(-1) == lf.index_select(0, ri).argmax(-1);
        agree += same.sum().item<int64_t>();
        const double* a = nm.data_ptr<double>();
        const double* c = nf.data_ptr<double>();
        const double* d = k.data_ptr<double>();
        for (size_t i = 0; i < rows.size(); ++i) {
          nll.push_back(a[i]);
          ref_nll.push_back(c[i]);
          kl.push_back(d[i]);
        }
      }
      if (progress) progress(static_cast<double>(done_in) / static_cast<double>(total_in));
    }
    scored_until = e;
    r.memory = st_m->memory();
    ++r.windows;
  }
  KVB_INPUT_CHECK(!nll.empty(), "perplexity: no token was scored");
  const double n = static_cast<double>(nll.size());
  double sum = 0, sum2 = 0, rsum = 0, ksum = 0;
  for (size_t i = 0; i < nll.size(); ++i) {
    sum += nll[i];
    rsum += ref_nll[i];
    ksum += kl[i];
  }
  r.nll = sum / n;
  for (double x : nll) sum2 += (x - r.nll) * (x - r.nll);
  r.nll_se = nll.size() > 1 ? std::sqrt(sum2 / (n - 1) / n) : 0.0;
  r.ppl = std::exp(r.nll);
  r.ppl_se = r.ppl * r.nll_se;
  r.ref_nll = rsum / n;
  r.ref_ppl = std::exp(r.ref_nll);
  r.kl_mean = ksum / n;
  r.kl_p99 = percentile(kl, 0.99);
  r.kl_max = *std::max_element(kl.begin(), kl.end());
  r.top1_agreement = static_cast<double>(agree) / n;
  r.tokens = static_cast<int64_t>(nll.size());
  r.stride = stride;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return r;
}

}  // namespace kvb
