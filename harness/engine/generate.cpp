#include "harness/engine/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "common/check.h"

namespace kvb {

Sampler::Sampler(SamplingOptions opt) : opt_(opt), state_(opt.seed ^ 0x9E3779B97F4A7C15ULL) {}

double Sampler::uniform() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
}

int64_t Sampler::sample(const torch::Tensor& logits) {
  torch::Tensor l = logits.to(torch::kCPU, torch::kFloat32).contiguous().view({-1});
  const float* p = l.data_ptr<float>();
  const int64_t n = l.numel();
  if (opt_.temperature <= 0) return static_cast<int64_t>(std::max_element(p, p + n) - p);
  // Softmax at temperature in double, then nucleus: smallest prefix by probability with mass >= top_p.
  const double mx = *std::max_element(p, p + n);
  std::vector<double> prob(static_cast<size_t>(n));
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += prob[i] = std::exp((p[i] - mx) / opt_.temperature);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return prob[a] > prob[b]; });
  double kept = 0;
  size_t cut = 0;
  while (cut < order.size()) {
    kept += prob[order[cut]] / sum;
    ++cut;
    if (kept >= opt_.top_p) break;
  }
  double r = uniform() * kept, acc = 0;
  for (size_t i = 0; i < cut; ++i) {
    acc += prob[order[i]] / sum;
    if (r < acc) return order[i];
  }
  return order[cut - 1];
}

GenerateResult generate(const Model& model, KVCacheState& cache, const std::vector<int64_t>& prompt,
                        const GenerateOptions& opt) {
  KVB_INPUT_CHECK(!prompt.empty(), "generate: the prompt has no tokens (the tokenizer adds no BOS)");
  using clock = std::chrono::steady_clock;
  c10::InferenceMode guard;
  GenerateResult res;
  Sampler sampler(opt.sampling);
  const int64_t n = static_cast<int64_t>(prompt.size());
  const int64_t chunk = opt.prefill_chunk > 0 ? opt.prefill_chunk : n;
  ForwardOptions fo;
  fo.all_logits = static_cast<bool>(opt.on_logits);
  auto t0 = clock::now();
  torch::Tensor last;  // [V]
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t t = std::min(chunk, n - s);
    torch::Tensor ids = torch::tensor(std::vector<int64_t>(prompt.begin() + s, prompt.begin() + s + t))
                            .view({1, t});
    torch::Tensor pos = torch::arange(s, s + t, torch::kLong);
    torch::Tensor logits = model.forward(ids, pos, cache, fo);  // [1, t or 1, V]
    if (opt.on_logits)
      for (int64_t i = 0; i < logits.size(1); ++i) opt.on_logits(logits[0][i]);
    last = logits[0][logits.size(1) - 1];
  }
  cache.end_prefill();
  auto t1 = clock::now();
  res.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  int64_t pos = n;
  for (int64_t i = 0; i < opt.max_new_tokens; ++i) {
    int64_t next = sampler.sample(last);
    if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), next) != opt.stop_ids.end()) {
      res.stopped = true;
      break;
    }
    res.tokens.push_back(next);
    if (i + 1 == opt.max_new_tokens) break;  // the last token needs no forward pass
    torch::Tensor ids = torch::tensor({next}).view({1, 1});
    torch::Tensor p = torch::tensor({pos}, torch::kLong);
    torch::Tensor logits = model.forward(ids, p, cache, fo);
    last = logits[0][0];
    if (opt.on_logits) opt.on_logits(last);
    ++pos;
  }
  res.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return res;
}

}  // namespace kvb
