#include "harness/engine/kv_stats.h"

#include <algorithm>
#include <limits>

#include "common/check.h"
#include "methods/registry.h"

namespace kvb {
namespace {

// [B, H, T, D] -> [H, B*T, D] fp32 on the CPU (a copy: the state keeps it).
torch::Tensor heads_first(const torch::Tensor& x) {
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3);
  return x.detach()
      .permute({1, 0, 2, 3})
      .to(torch::kCPU, torch::kFloat32)
      .reshape({H, B * T, D})
      .clone();
}

std::vector<double> to_vector(const torch::Tensor& t) {  // [D] -> doubles
  torch::Tensor c = t.to(torch::kCPU, torch::kDouble).contiguous();
  const double* p = c.data_ptr<double>();
  return std::vector<double>(p, p + c.numel());
}

}  // namespace

ChannelStats channel_stats(const torch::Tensor& x, double outlier_factor) {
  KVB_CHECK(x.dim() == 2, "channel_stats: expected [N, D], got ", x.dim(), " dims");
  const int64_t N = x.size(0), D = x.size(1);
  ChannelStats s;
  if (N == 0 || D == 0) {
    s.mean_abs.assign(static_cast<size_t>(D), 0.0);
    s.max_abs.assign(static_cast<size_t>(D), 0.0);
    return s;
  }
  torch::Tensor a = x.to(torch::kCPU, torch::kFloat32).abs();  // [N, D]
  s.mean_abs = to_vector(a.to(torch::kDouble).mean(0));
  s.max_abs = to_vector(a.amax(0));
  std::vector<double> sorted = s.max_abs;
  std::sort(sorted.begin(), sorted.end());
  const size_t n = sorted.size();
  s.median_absmax = n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  s.max_absmax = sorted.back();
  s.ratio = s.median_absmax > 0 ? s.max_absmax / s.median_absmax : 0.0;
  const double threshold = outlier_factor * s.median_absmax;
  for (int64_t c = 0; c < D; ++c)
    if (s.max_abs[static_cast<size_t>(c)] > threshold) s.outlier_channels.push_back(c);
  // Compared in double, as the channel test above (an fp32 threshold could round past a_c).
  s.outlier_entries = (a.to(torch::kDouble) > threshold).sum().item<int64_t>();
  return s;
}

KVStatsState::KVStatsState(const ModelShape& shape, torch::ScalarType compute, KVStatsOptions opt)
    : shape_(shape), opt_(opt), layers_(static_cast<size_t>(shape.n_layers)) {
  inner_ = make_method("full", compute)->make_state(shape);
}

void KVStatsState::append(int layer, const KVAppend& a) {
  KVB_CHECK(layer >= 0 && layer < shape_.n_layers, "kv stats: layer ", layer, " of ",
            shape_.n_layers);
  Layer& L = layers_[static_cast<size_t>(layer)];
  torch::Tensor pos = a.pos.to(torch::kCPU, torch::kLong);  // [T]
  // The sink is the first slot of observe()'s weights: position 0 when the sequence starts there.
  if (L.tokens == 0)
    KVB_CHECK(pos.numel() > 0 && pos[0].item<int64_t>() == 0,
              "kv stats: the sequence must start at position 0");
  L.k_pre.push_back(heads_first(a.k_pre_rope));
  L.k.push_back(heads_first(a.k));
  L.v.push_back(heads_first(a.v));
  L.last_pos = pos;
  L.tokens += a.k.size(2);
  inner_->append(layer, a);
}

void KVStatsState::observe(int layer, const torch::Tensor& probs) {
  Layer& L = layers_[static_cast<size_t>(layer)];
  KVB_CHECK(
      probs.dim() == 4 && probs.size(1) == shape_.n_head_q && probs.size(2) == L.last_pos.numel(),
      "kv stats: attention weights of shape ", probs.sizes(), " for a chunk of ",
      L.last_pos.numel(), " tokens and ", shape_.n_head_q, " query heads");
  // Column 0: the view's first slot (the full cache's position 0), or the chunk's first token
  // when the view was empty (the first chunk, which starts at position 0).
  L.sink.push_back(probs.select(3, 0)
                       .detach()
                       .permute({1, 0, 2})
                       .to(torch::kCPU, torch::kFloat32)
                       .clone());  // [H_q, B, T]
  L.sink_pos.push_back(L.last_pos);
}

std::unique_ptr<KVCacheState> KVStatsState::clone() const {
  // The recorded chunks are never written after they are taken: the copy shares them.
  auto c = std::make_unique<KVStatsState>(shape_, torch::kFloat32, opt_);
  c->inner_ = inner_->clone();
  c->layers_ = layers_;
  return c;
}

KVStats KVStatsState::stats() const {
  KVStats r;
  r.shape = shape_;
  r.options = opt_;
  const int64_t Hkv = shape_.n_head_kv, Hq = shape_.n_head_q, D = shape_.head_dim;
  const int64_t G = Hkv > 0 ? Hq / Hkv : 0;
  r.tokens = layers_.empty() ? 0 : layers_[0].tokens;
  r.sink_from = std::max<int64_t>(0, std::min(opt_.sink_skip, r.tokens - 1));
  double uniform = 0;
  for (int64_t p = r.sink_from; p < r.tokens; ++p) uniform += 1.0 / static_cast<double>(p + 1);
  r.sink_uniform =
      r.tokens > r.sink_from ? uniform / static_cast<double>(r.tokens - r.sink_from) : 0.0;
  for (const Layer& L : layers_) {
    std::vector<HeadKVStats> heads(static_cast<size_t>(Hkv));
    auto all = [&](const std::vector<torch::Tensor>& chunks) {  // [H_kv, N, D]
      return chunks.empty() ? torch::zeros({Hkv, 0, D}) : torch::cat(chunks, 1);
    };
    const torch::Tensor kp = all(L.k_pre), k = all(L.k), v = all(L.v);
    // Per query head: the mean weight on position 0 over the counted queries.
    torch::Tensor sink_q = torch::zeros({Hq}, torch::kDouble);
    if (!L.sink.empty()) {
      torch::Tensor w = torch::cat(L.sink, 2).to(torch::kDouble);     // [H_q, B, N]
      torch::Tensor keep = torch::cat(L.sink_pos, 0) >= r.sink_from;  // [N]
      torch::Tensor sel = w.index({torch::indexing::Slice(), torch::indexing::Slice(), keep});
      if (sel.size(2) > 0) sink_q = sel.reshape({Hq, -1}).mean(1);
    }
    const std::vector<double> sq = to_vector(sink_q);
    for (int64_t h = 0; h < Hkv; ++h) {
      HeadKVStats& hs = heads[static_cast<size_t>(h)];
      hs.key_pre_rope = channel_stats(kp[h], opt_.outlier_factor);
      hs.key_post_rope = channel_stats(k[h], opt_.outlier_factor);
      hs.value = channel_stats(v[h], opt_.outlier_factor);
      hs.sink_mass_q.assign(sq.begin() + h * G, sq.begin() + (h + 1) * G);
      double sum = 0;
      for (double x : hs.sink_mass_q) sum += x;
      hs.sink_mass = G > 0 ? sum / static_cast<double>(G) : 0.0;
    }
    r.layers.push_back(std::move(heads));
  }
  return r;
}

KVStats compute_kv_stats(const Model& model, const std::vector<int64_t>& ids,
                         const KVStatsOptions& opt) {
  KVB_INPUT_CHECK(opt.chunk >= 1, "kv stats: chunk ", opt.chunk, " must be at least 1");
  KVB_INPUT_CHECK(opt.max_tokens >= 0, "kv stats: max tokens ", opt.max_tokens,
                  " must not be negative");
  KVB_INPUT_CHECK(opt.sink_skip >= 0, "kv stats: sink skip ", opt.sink_skip,
                  " must not be negative");
  KVB_INPUT_CHECK(opt.outlier_factor > 0, "kv stats: outlier factor ", opt.outlier_factor,
                  " must be positive");
  KVB_INPUT_CHECK(!ids.empty(), "kv stats: no tokens to feed");
  const ModelConfig& c = model.config();
  int64_t n = static_cast<int64_t>(ids.size());
  if (opt.max_tokens > 0) n = std::min(n, opt.max_tokens);
  n = std::min<int64_t>(n, c.max_position);
  for (int64_t i = 0; i < n; ++i)
    KVB_INPUT_CHECK(ids[static_cast<size_t>(i)] >= 0 && ids[static_cast<size_t>(i)] < c.vocab_size,
                    "kv stats: token id ", ids[static_cast<size_t>(i)], " at ", i,
                    " is outside the vocabulary (", c.vocab_size, ")");
  c10::InferenceMode guard;
  KVStatsState st(model.shape(), model.dtype(), opt);
  torch::Tensor all =
      torch::tensor(std::vector<int64_t>(ids.begin(), ids.begin() + n), torch::kLong)
          .view({1, n})
          .to(model.device());
  for (int64_t s = 0; s < n; s += opt.chunk) {
    const int64_t t = std::min(opt.chunk, n - s);
    model.forward(all.narrow(1, s, t), torch::arange(s, s + t, torch::kLong), st);
  }
  KVStats r = st.stats();
  r.first_token = ids[0];
  return r;
}

}  // namespace kvb
