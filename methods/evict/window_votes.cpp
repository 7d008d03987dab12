#include "methods/evict/window_votes.h"

#include <cmath>
#include <limits>

#include "common/check.h"

namespace kvb {

void WindowQueries::record(int layer, const KVAppend& a) {
  Layer& Q = layers_[static_cast<size_t>(layer)];
  KVB_CHECK(a.q.defined(), method_, ": the engine must hand queries to append()");
  const int64_t t = a.q.size(2), r = std::min(t, window_);
  torch::Tensor q = a.q.narrow(2, t - r, r).to(torch::kFloat32);
  torch::Tensor p = a.pos.narrow(0, t - r, r).to(torch::kLong);
  if (Q.q.defined()) {
    q = torch::cat({Q.q, q}, 2);
    p = torch::cat({Q.pos, p}, 0);
  }
  const int64_t n = q.size(2), keep = std::min(n, window_);
  Q.q = q.narrow(2, n - keep, keep).clone();
  Q.pos = p.narrow(0, n - keep, keep).clone();
}

int64_t WindowQueries::bytes(int layer) const {
  const Layer& Q = layers_[static_cast<size_t>(layer)];
  return Q.q.defined() ? Q.q.numel() * 4 + Q.pos.numel() * 8 : 0;
}

void WindowQueries::deep_copy() {
  for (Layer& Q : layers_) {
    if (Q.q.defined()) Q.q = Q.q.clone();
    if (Q.pos.defined()) Q.pos = Q.pos.clone();
  }
}

torch::Tensor window_votes(const KVView& v, const torch::Tensor& q, const torch::Tensor& qpos,
                           const torch::Tensor& in_window, int64_t pool, bool max_pool) {
  const int64_t s = v.slots();
  const int64_t b = v.k.size(0), h = v.k.size(1), d = v.k.size(3), w = q.size(2);
  const int64_t g = q.size(1) / h;
  torch::Tensor k = v.k.to(torch::kFloat32);
  torch::Tensor qg = q.reshape({b, h, g * w, d});
  torch::Tensor scores =
      torch::matmul(qg, k.transpose(-1, -2)).div_(std::sqrt(static_cast<double>(d)));
  scores = scores.view({b, h, g, w, s});
  if (v.logit_bias.defined()) scores.add_(v.logit_bias.to(torch::kFloat32).view({b, h, 1, 1, s}));
  torch::Tensor future = v.pos.view({b, h, 1, 1, s}) > qpos.view({1, 1, 1, w, 1});  // causal
  scores.masked_fill_(future, -std::numeric_limits<float>::infinity());
  torch::Tensor votes = torch::softmax(scores, -1).sum({2, 3});  // [B, H_kv, S]

  if (in_window.defined()) votes.masked_fill_(in_window, 0);
  torch::Tensor flat = votes.view({b * h, 1, s});
  torch::Tensor pooled = max_pool ? torch::max_pool1d(flat, {pool}, {1}, {pool / 2})
                                  : torch::avg_pool1d(flat, {pool}, {1}, {pool / 2});
  return pooled.view({b, h, s});
}

torch::Tensor WindowVoteState::appended(int layer, const KVAppend& a, const SelectContext& ctx) {
  if (!decided(layer)) queries_.record(layer, a);
  return {};
}

torch::Tensor WindowVoteState::decision_scores(int layer, const SelectContext& ctx,
                                               const torch::Tensor& in_window) {
  if (!queries_.has(layer)) return {};
  return window_votes(ctx.store.view(layer), queries_.q(layer), queries_.pos(layer), in_window,
                      pool_, max_pool_);
}

std::unique_ptr<ScoreSelectorState> WindowVoteState::copy() const {
  auto c = std::make_unique<WindowVoteState>(*this);
  c->queries_.deep_copy();
  return c;
}

}  // namespace kvb
