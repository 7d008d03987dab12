#include "suites/session.h"

#include <algorithm>

#include "common/check.h"

namespace kvb {

int64_t argmax_token(const torch::Tensor& logits) {
  torch::Tensor l = logits.to(torch::kCPU, torch::kFloat32).contiguous().view({-1});
  const float* p = l.data_ptr<float>();
  return static_cast<int64_t>(std::max_element(p, p + l.numel()) - p);
}

torch::Tensor Session::feed(const std::vector<int64_t>& ids, int64_t chunk) {
  KVB_CHECK(!ids.empty(), "Session::feed: no tokens");
  c10::InferenceMode guard;
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t c = chunk > 0 ? chunk : n;
  torch::Tensor last;
  for (int64_t s = 0; s < n; s += c) {
    const int64_t t = std::min(c, n - s);
    torch::Tensor x =
        torch::tensor(std::vector<int64_t>(ids.begin() + s, ids.begin() + s + t)).view({1, t});
    torch::Tensor pos = torch::arange(pos_, pos_ + t, torch::kLong);
    last = model_->forward(x, pos, *state_)[0][0];  // [V]
    pos_ += t;
  }
  return last;
}

std::vector<int64_t> Session::greedy(const torch::Tensor& last, int64_t max_new,
                                     const std::vector<int64_t>& stop_ids) {
  c10::InferenceMode guard;
  std::vector<int64_t> out;
  torch::Tensor l = last;
  for (int64_t i = 0; i < max_new; ++i) {
    const int64_t next = argmax_token(l);
    if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) break;
    out.push_back(next);
    if (i + 1 == max_new) break;
    l = feed({next});
  }
  return out;
}

}  // namespace kvb
