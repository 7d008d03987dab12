// `kvquant(bits=4|3|2, outliers=0.01, sink=1, pre_rope=true, calib=offline)`: KVQuant (Hooper et
// al. 2024, SqueezeAILab/KVQuant), written from the paper.
//
//   keys    per channel: x -> u = (x - zero[h, c]) / scale[h, c] with zero and scale from the
//           offline calibration (the calibration keys between the channel's outlier thresholds
//           map to [-1, 1]); before RoPE when pre_rope=true (the store holds
//           KVAppend::k_pre_rope, view() gives keys before RoPE and says so through
//           KVCacheState::view_keys_pre_rope(): the model rotates each slot at its source position).
//   values  per token, online: the n_v largest |v| of the token are outliers; zero and scale (fp16)
//           are the mid-range and half-range of the rest, u = (v - zero) / scale in [-1, 1].
//   datatype  u (clamped to [-1, 1]) becomes the index of the nearest of 2^bits levels: a
//           per-layer codebook for keys and one for values, from sensitivity-weighted k-means on
//           the calibration's normalized values (below), packed `bits` bits per element.
//   dense-and-sparse  per key vector (token, head) the n_k elements of largest |u| — those
//           furthest outside the calibrated channel ranges — and per value vector the n_v
//           largest |v| are kept exactly in fp16 with their channel index (int16);
//           n = ceil(outliers x D) (kvquant_outliers_per_vector), a fixed count per vector.
//   sink    the first `sink` tokens appended are also held in fp16 (keys as stored: pre-RoPE when
//           pre_rope=true) and viewed from there.
//
// Storage per layer (B x H_kv heads, S slots, D = head_dim, n_k = n_v = n):
//   payload   codes: 2 x S x D x bits / 8 bytes per head (keys and values);
//             outlier values: 2 x S x n x 2 bytes (fp16) per head;
//             sink rows: held sinks x 2 x D x 2 bytes (fp16 keys and values) per head.
//   metadata  outlier indices: 2 x S x n x 2 bytes (int16) per head;
//             value zero and scale: S x 2 x 2 bytes (fp16) per head;
//             codebooks: 2 x 2^bits x 4 bytes (fp32) and key zero/scale: H_kv x D x 2 x 4 bytes
//             (fp32), once per layer that holds a token (a sequence's share of the model's
//             calibration: batch 1 holds them once);
//             positions (SlotPositions: none while implicit);
//             after a chain dropped slots: the kept flags of the sink tokens, 1 byte each per head.
// Every slot is a row of one layout (codes, outliers, value scales), sinks included: a sink's
// fp16 row is held beside its quantized row (which view() never reads; `sink` rows x the
// quantized record per head: with sink=1, one token's codes). So a chain's keep() moves rows.
// Slots must stay in append order (keep() takes ascending indices; no drop_swap): held sinks are
// then each head's first slots.
//
// Calibration (calib=offline, KVMethod::calibrate): the calibration text's token ids
// (CalibrationContext::calibration_ids: `kvbench calibrate --data FILE`, or in `kvbench run` a
// built-in generated prose, suites/runner.h) in samples of at most min(2048, max_position)
// tokens, at most 16 samples (the paper's 16 x 2K), each fed as one prompt through a recording
// full-precision cache. Per layer:
//   - key thresholds per (KV head, channel): the outliers/2 and 1 - outliers/2 quantiles of the
//     calibration keys (order statistics, floor((outliers/2)(N-1)) from either end), zero their
//     mid-point, scale their half-distance (at least 1e-6);
//   - key codebook: k-means over the normalized calibration keys inside the thresholds, each
//     weighted by E[q_c^2] x scale_c^2 (mean square of the queries of the KV head's group on
//     channel c, averaged over the RoPE pair c, c +- D/2 when pre_rope=true);
//   - value codebook: k-means over the normalized non-outlier calibration values, each weighted
//     by its token's scale^2.
// Deviation: the paper weights k-means by Fisher information (squared gradients of the loss on
// calibration data). kvbench runs inference only (no autograd through the model), so the
// weights are the first-order sensitivity of what attention computes to a normalized code —
// the logit q.k for keys (d logit / d u_c = q_c scale_c), the output for values with attention
// taken as uniform (d out / d u = p scale, p unknown) — not of the loss. Q-Norm (the paper's
// 2-bit centroid re-normalization) is not done. Keys' outliers are a fixed count per key vector
// (largest calibrated-normalized magnitude), not every element beyond the channel thresholds
// (a data-dependent count), so memory follows from the spec.
// The artifact: <cache_dir>/kvquant/<model_id>-<FNV-1a 64 of the spec>-<calibration hash>.json
// (method, spec, model_id, calibration_hash and source, shape, bits, per layer the codebooks
// and the key zero/scale). A file there whose identity fields differ is calibrated again and
// replaced; a file that does not parse or holds malformed numbers is refused (InputError naming
// it: delete it to calibrate again), never used.
//
// attend() (the fused path, kernels/cpu/quant_attention.h): with pre_rope=false only, for one
// decode query per head in fp32 before any slot was dropped, attention reads the codes, the
// codebooks, the sparse outliers and the sink rows directly. pre_rope=true (the default) keeps
// the dequantized view: its scores need every slot rotated at its own position.
//
// calib=prompt (an ablation, and the contract test's examples: no offline step): each layer
// calibrates itself, by the same rule, on the first chunk appended to it (the prompt), then
// keeps that calibration; its codebooks and key scales are the state's own (counted the same).
#include "methods/quant/kvquant.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <string>

#include "common/check.h"
#include "common/hash.h"
#include "common/json_io.h"
#include "kernels/cpu/quant_attention.h"
#include "methods/registry.h"

namespace kvb {

int64_t kvquant_outliers_per_vector(double fraction, int64_t d) {
  if (fraction <= 0) return 0;
  const double want = fraction * static_cast<double>(d);
  const double r = std::round(want);
  const int64_t n =
      std::abs(want - r) < 1e-9 * std::max(1.0, want) ? static_cast<int64_t>(r)
                                                       : static_cast<int64_t>(std::ceil(want));
  return std::min(n, d);
}

torch::Tensor weighted_kmeans_1d(const torch::Tensor& x_in, const torch::Tensor& w_in,
                                 int64_t levels, int iters) {
  torch::Tensor x = x_in.reshape({-1}).to(torch::kFloat32);
  const auto opts = x.options();
  if (x.numel() == 0) return torch::linspace(-1, 1, levels, opts);
  torch::Tensor w = w_in.defined() ? w_in.reshape({-1}).to(opts) : torch::ones_like(x);
  if (w.sum().item<double>() <= 0) w = torch::ones_like(x);
  auto [xs, order] = x.sort();
  torch::Tensor ws = w.index_select(0, order);
  torch::Tensor cw = ws.cumsum(0);
  const double total = cw[-1].item<double>();
  // Start: the weighted quantiles (i + 1/2) / levels.
  torch::Tensor at = (torch::arange(levels, opts) + 0.5) * (total / static_cast<double>(levels));
  torch::Tensor idx = torch::searchsorted(cw, at).clamp_max(x.numel() - 1);
  torch::Tensor c = xs.index_select(0, idx).contiguous();
  for (int it = 0; it < iters; ++it) {
    torch::Tensor assign = levels > 1
                               ? torch::bucketize(xs, ((c.narrow(0, 1, levels - 1) +
                                                        c.narrow(0, 0, levels - 1)) / 2)
                                                          .contiguous())
                               : torch::zeros_like(xs, torch::kLong);
    torch::Tensor sums = torch::zeros({levels}, opts).scatter_add_(0, assign, ws * xs);
    torch::Tensor cnt = torch::zeros({levels}, opts).scatter_add_(0, assign, ws);
    torch::Tensor next = torch::where(cnt > 0, sums / cnt.clamp_min(1e-30), c);
    next = std::get<0>(next.sort()).contiguous();
    const double moved = (next - c).abs().max().item<double>();
    c = next;
    if (moved < 1e-7) break;
  }
  return c;
}

torch::Tensor nearest_level(const torch::Tensor& u, const torch::Tensor& codebook) {
  const int64_t l = codebook.size(0);
  torch::Tensor cb = codebook.to(u.device(), torch::kFloat32);
  torch::Tensor mids = ((cb.narrow(0, 1, l - 1) + cb.narrow(0, 0, l - 1)) / 2).contiguous();
  return torch::bucketize(u.to(torch::kFloat32).contiguous(), mids).to(torch::kUInt8);
}

torch::Tensor kvquant_pack(const torch::Tensor& codes, int bits) {
  const int64_t d = codes.size(-1);
  KVB_CHECK(d % 8 == 0, "kvquant_pack: ", d, " codes per row is not a multiple of 8");
  std::vector<int64_t> shape(codes.sizes().begin(), codes.sizes().end());
  shape.back() = d / 8;
  shape.push_back(8);
  auto lo = codes.options().dtype(torch::kLong);
  torch::Tensor word = codes.to(torch::kLong)
                           .reshape(shape)
                           .__lshift__(torch::arange(8, lo) * bits)
                           .sum(-1, /*keepdim=*/true);  // [..., D/8, 1]
  torch::Tensor bytes = word.__rshift__(torch::arange(bits, lo) * 8).bitwise_and(255);
  shape.pop_back();
  shape.back() = d * bits / 8;
  return bytes.to(torch::kUInt8).reshape(shape);
}

torch::Tensor kvquant_unpack(const torch::Tensor& packed, int bits, int64_t d) {
  std::vector<int64_t> shape(packed.sizes().begin(), packed.sizes().end());
  shape.back() = d / 8;
  shape.push_back(bits);
  auto lo = packed.options().dtype(torch::kLong);
  torch::Tensor word = packed.to(torch::kLong)
                           .reshape(shape)
                           .__lshift__(torch::arange(bits, lo) * 8)
                           .sum(-1, /*keepdim=*/true);
  torch::Tensor codes = word.__rshift__(torch::arange(8, lo) * bits).bitwise_and((1 << bits) - 1);
  shape.pop_back();
  shape.back() = d;
  return codes.reshape(shape);  // int64
}

namespace {

constexpr int64_t kSampleTokens = 2048, kMaxSamples = 16, kMaxKmeansPoints = int64_t{1} << 20;

// Every k-th point so that at most kMaxKmeansPoints remain (deterministic).
void thin(torch::Tensor& x, torch::Tensor& w) {
  const int64_t n = x.numel();
  if (n <= kMaxKmeansPoints) return;
  const int64_t step = (n + kMaxKmeansPoints - 1) / kMaxKmeansPoints;
  torch::Tensor i = torch::arange(0, n, step, x.options().dtype(torch::kLong));
  x = x.index_select(0, i);
  w = w.index_select(0, i);
}

// Per-token normalization of values y [..., D] fp32 with n outliers per vector.
struct ValueNorm {
  torch::Tensor idx;          // [..., n] int64: the outliers' channels (undefined when n = 0)
  torch::Tensor zero, scale;  // [..., 1] fp16
  torch::Tensor u;            // [..., D] fp32 in [-1, 1]
  torch::Tensor outlier;      // [..., D] bool (undefined when n = 0)
};

ValueNorm normalize_values(const torch::Tensor& y, int64_t n) {
  ValueNorm r;
  torch::Tensor lo_src = y, hi_src = y;
  if (n > 0) {
    r.idx = std::get<1>(y.abs().topk(n, -1, /*largest=*/true, /*sorted=*/true));
    r.outlier = torch::zeros_like(y, torch::kBool).scatter_(-1, r.idx, true);
    const double inf = std::numeric_limits<double>::infinity();
    lo_src = y.masked_fill(r.outlier, inf);
    hi_src = y.masked_fill(r.outlier, -inf);
  }
  torch::Tensor lo = lo_src.amin(-1, true), hi = hi_src.amax(-1, true);
  r.zero = ((hi + lo) / 2).to(torch::kHalf);
  r.scale = ((hi - lo) / 2).to(torch::kHalf);
  torch::Tensor s = r.scale.to(torch::kFloat32);
  r.u = torch::where(s > 0, (y - r.zero.to(torch::kFloat32)) / s.clamp_min(1e-30),
                     torch::zeros_like(y))
            .clamp(-1, 1);
  return r;
}

// Per-(KV head, channel) mean squared query from q [B, H_q, T, D] (post-RoPE), grouped by KV
// head; averaged over the RoPE pair (c, c +- D/2) for keys held before RoPE.
torch::Tensor query_square(const torch::Tensor& q, int64_t h_kv, bool pre_rope) {
  const int64_t d = q.size(3);
  torch::Tensor s = q.to(torch::kFloat32).square().mean(torch::IntArrayRef{0, 2});  // [H_q, D]
  s = s.view({h_kv, s.size(0) / h_kv, d}).mean(1);                 // [H_kv, D]
  if (pre_rope) s = (s + s.roll(d / 2, 1)) / 2;
  return s;
}

}  // namespace

KVQuantLayerCalibration kvquant_calibrate_layer(const torch::Tensor& keys_in,
                                                const torch::Tensor& values_in,
                                                const torch::Tensor& qsq, int bits,
                                                double outliers) {
  const int64_t levels = int64_t{1} << bits;
  torch::Tensor keys = keys_in.to(torch::kFloat32), values = values_in.to(torch::kFloat32);
  const int64_t n = keys.size(0), d = keys.size(2);
  KVB_CHECK(n >= 1, "kvquant calibration: no tokens");
  KVQuantLayerCalibration c;
  // Keys: per-channel thresholds from order statistics over the calibration tokens.
  torch::Tensor sorted = std::get<0>(keys.permute({1, 2, 0}).sort(-1));  // [H, D, N]
  const int64_t lo_i = static_cast<int64_t>(std::floor(outliers / 2 * static_cast<double>(n - 1)));
  torch::Tensor lo = sorted.select(2, lo_i), hi = sorted.select(2, n - 1 - lo_i);
  c.key_zero = ((hi + lo) / 2).contiguous();
  c.key_scale = ((hi - lo) / 2).clamp_min(1e-6).contiguous();
  torch::Tensor u = (keys - c.key_zero) / c.key_scale;  // [N, H, D]
  torch::Tensor wk = (qsq.to(keys.device(), torch::kFloat32) * c.key_scale.square())
                         .unsqueeze(0)
                         .expand_as(u);
  torch::Tensor inside = u.abs() <= 1;
  torch::Tensor xk = u.masked_select(inside), wkk = wk.masked_select(inside);
  thin(xk, wkk);
  c.key_codebook = weighted_kmeans_1d(xk, wkk, levels);
  // Values: per-token normalization, as the store does it online.
  ValueNorm vn = normalize_values(values, kvquant_outliers_per_vector(outliers, d));
  torch::Tensor wv = vn.scale.to(torch::kFloat32).square().expand_as(vn.u);
  torch::Tensor keep = vn.outlier.defined() ? vn.outlier.logical_not()
                                            : torch::ones_like(vn.u, torch::kBool);
  torch::Tensor xv = vn.u.masked_select(keep), wvv = wv.masked_select(keep);
  thin(xv, wvv);
  c.value_codebook = weighted_kmeans_1d(xv, wvv, levels);
  return c;
}

namespace {

using Calibration = std::vector<KVQuantLayerCalibration>;

struct Config {
  int bits = 4;
  double outliers = 0.01;
  int64_t sink = 1;
  bool pre_rope = true;
  bool offline = true;
};

// Indices [B, H, n] that put the true entries of mask [B, H, n] first, both parts ascending.
torch::Tensor true_first(const torch::Tensor& mask) {
  const int64_t n = mask.size(2);
  torch::Tensor ar = torch::arange(n, mask.options().dtype(torch::kLong));
  return std::get<1>(torch::where(mask, ar, ar + n).sort(2));
}

class KVQuantStore : public SlotStore {
 public:
  KVQuantStore(const ModelShape& shape, std::string spec, Config cfg,
               std::shared_ptr<const Calibration> cal)
      : spec_(std::move(spec)), cfg_(cfg), cal_(std::move(cal)),
        layers_(static_cast<size_t>(shape.n_layers)) {}

  void append(int layer, const KVAppend& a) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    const torch::Tensor& k_in = cfg_.pre_rope ? a.k_pre_rope : a.k;
    KVB_CHECK(k_in.defined(), "kvquant: pre_rope=true needs KVAppend::k_pre_rope");
    const int64_t b = k_in.size(0), h = k_in.size(1), t = k_in.size(2), d = k_in.size(3);
    if (t == 0) return;
    compute_ = a.k.scalar_type();
    L.b = b;
    L.h = h;
    L.d = d;
    torch::Tensor k = k_in.to(torch::kFloat32), v = a.v.to(torch::kFloat32);
    if (!L.cal.key_codebook.defined()) calibrate_layer(L, layer, k, v, a);
    const int64_t nk = n_out(d), dp = d * cfg_.bits / 8;
    auto u8 = k.options().dtype(torch::kUInt8), f16 = k.options().dtype(torch::kHalf),
         i16 = k.options().dtype(torch::kShort);
    reserve_rows(L.kc, L.len, L.len + t, b, h, dp, u8);
    reserve_rows(L.vc, L.len, L.len + t, b, h, dp, u8);
    reserve_rows(L.vz, L.len, L.len + t, b, h, 1, f16);
    reserve_rows(L.vs, L.len, L.len + t, b, h, 1, f16);
    if (nk > 0)
      for (torch::Tensor* x : {&L.ko, &L.vo}) reserve_rows(*x, L.len, L.len + t, b, h, nk, f16);
    if (nk > 0)
      for (torch::Tensor* x : {&L.ki, &L.vi}) reserve_rows(*x, L.len, L.len + t, b, h, nk, i16);
    // Keys: calibrated per-channel normalization, the nk largest |u| as outliers.
    torch::Tensor u = (k - L.cal.key_zero.view({1, h, 1, d})) / L.cal.key_scale.view({1, h, 1, d});
    if (nk > 0) {
      torch::Tensor idx = std::get<1>(u.abs().topk(nk, -1, true, true));
      L.ko.narrow(2, L.len, t).copy_(k.gather(3, idx));
      L.ki.narrow(2, L.len, t).copy_(idx);
    }
    L.kc.narrow(2, L.len, t)
        .copy_(kvquant_pack(nearest_level(u.clamp(-1, 1), L.cal.key_codebook), cfg_.bits));
    // Values: per-token normalization online.
    ValueNorm vn = normalize_values(v, nk);
    if (nk > 0) {
      L.vo.narrow(2, L.len, t).copy_(v.gather(3, vn.idx));
      L.vi.narrow(2, L.len, t).copy_(vn.idx);
    }
    L.vz.narrow(2, L.len, t).copy_(vn.zero);
    L.vs.narrow(2, L.len, t).copy_(vn.scale);
    L.vc.narrow(2, L.len, t).copy_(kvquant_pack(nearest_level(vn.u, L.cal.value_codebook), cfg_.bits));
    // Sinks: the first `sink` tokens appended, in fp16 by token index.
    const int64_t s0 = std::min(cfg_.sink, L.seen), s1 = std::min(cfg_.sink, L.seen + t);
    if (s1 > s0) {
      reserve_rows(L.sk, s0, s1, b, h, d, f16);
      reserve_rows(L.sv, s0, s1, b, h, d, f16);
      L.sk.narrow(2, s0, s1 - s0).copy_(k.narrow(2, 0, s1 - s0));
      L.sv.narrow(2, s0, s1 - s0).copy_(v.narrow(2, 0, s1 - s0));
      if (L.sink_kept.defined()) {  // after drops: the new sinks are held
        torch::Tensor grown = torch::ones({b, h, s1}, L.sink_kept.options());
        grown.narrow(2, 0, s0).copy_(L.sink_kept.narrow(2, 0, s0));
        L.sink_kept = grown;
      }
    }
    L.pos.append(a.pos, b, h);
    L.len += t;
    L.seen += t;
  }

  KVView view(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    KVView r;
    if (L.len == 0) return r;
    const int64_t d = L.d, h = L.h, n = L.len, nk = n_out(d);
    torch::Tensor kcodes = kvquant_unpack(L.kc.narrow(2, 0, n), cfg_.bits, d);
    torch::Tensor vcodes = kvquant_unpack(L.vc.narrow(2, 0, n), cfg_.bits, d);
    torch::Tensor k = L.cal.key_codebook.index({kcodes}) * L.cal.key_scale.view({1, h, 1, d}) +
                      L.cal.key_zero.view({1, h, 1, d});
    torch::Tensor v = L.cal.value_codebook.index({vcodes}) * L.vs.narrow(2, 0, n).to(torch::kFloat32) +
                      L.vz.narrow(2, 0, n).to(torch::kFloat32);
    if (nk > 0) {
      k.scatter_(3, L.ki.narrow(2, 0, n).to(torch::kLong), L.ko.narrow(2, 0, n).to(torch::kFloat32));
      v.scatter_(3, L.vi.narrow(2, 0, n).to(torch::kLong), L.vo.narrow(2, 0, n).to(torch::kFloat32));
    }
    overlay_sinks(L, k, v);
    r.k = compute_ == torch::kFloat32 ? k : k.to(compute_);
    r.v = compute_ == torch::kFloat32 ? v : v.to(compute_);
    r.pos = L.pos.view();
    return r;
  }

  bool view_keys_pre_rope(int) const override { return cfg_.pre_rope; }

  // The fused path (kernels/cpu/quant_attention.h, kvquant_decode_attention): T = 1, fp32, keys
  // stored post-RoPE (pre_rope=false) and no slot dropped yet (the held sinks are then the first
  // slots). Pre-RoPE keys need each slot rotated at its own position before the dot product,
  // which the kernel does not do: those states, and every other case, read the view.
  std::optional<AttendResult> attend(int layer, const torch::Tensor& q,
                                     double scale) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    if (q.defined() && !q.device().is_cpu())
      throw Error(spec_ + ": no kernel for device " + q.device().str() +
                  " (the fused kvquant attention runs on the CPU only)");
    if (cfg_.pre_rope || L.len == 0 || L.sink_kept.defined() || q.size(2) != 1 ||
        q.scalar_type() != torch::kFloat32 || compute_ != torch::kFloat32 ||
        !L.kc.device().is_cpu())
      return std::nullopt;
    const int64_t n = L.len;
    kernels::KVQuantCache c;
    c.bits = cfg_.bits;
    c.key_codebook = L.cal.key_codebook;
    c.value_codebook = L.cal.value_codebook;
    c.key_scale = L.cal.key_scale;
    c.key_zero = L.cal.key_zero;
    c.key_codes = L.kc.narrow(2, 0, n);
    c.value_codes = L.vc.narrow(2, 0, n);
    c.value_scale = L.vs.narrow(2, 0, n);
    c.value_zero = L.vz.narrow(2, 0, n);
    if (n_out(L.d) > 0) {
      c.key_outlier_value = L.ko.narrow(2, 0, n);
      c.key_outlier_index = L.ki.narrow(2, 0, n);
      c.value_outlier_value = L.vo.narrow(2, 0, n);
      c.value_outlier_index = L.vi.narrow(2, 0, n);
    }
    c.sinks = std::min(cfg_.sink, L.seen);
    if (c.sinks > 0) {
      c.sink_keys = L.sk;
      c.sink_values = L.sv;
    }
    kernels::AttentionPart r = kernels::kvquant_decode_attention(q, c, scale);
    return AttendResult{r.out, r.lse};
  }

  int64_t slots(int layer) const override { return layers_.at(static_cast<size_t>(layer)).len; }
  torch::Tensor positions(int layer) const override {
    return layers_.at(static_cast<size_t>(layer)).pos.view();
  }
  int n_layers() const override { return static_cast<int>(layers_.size()); }

  // Ascending idx: the held sinks stay each head's first slots.
  void keep(int layer, const torch::Tensor& idx) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    const int64_t ns = std::min(cfg_.sink, L.seen);
    if (ns > 0) {
      if (!L.sink_kept.defined())
        L.sink_kept = torch::ones({L.b, L.h, ns}, idx.options().dtype(torch::kBool));
      torch::Tensor mask = L.sink_kept.narrow(2, 0, ns);
      torch::Tensor held = mask.sum(-1, true);  // [B, H, 1]: held sinks = the first slots
      torch::Tensor is_sink = idx < held;
      torch::Tensor tok = true_first(mask).gather(2, idx.clamp_max(ns - 1));
      torch::Tensor kept = torch::zeros({L.b, L.h, ns}, idx.options().dtype(torch::kLong));
      kept.scatter_add_(2, tok, is_sink.to(torch::kLong));
      L.sink_kept = kept > 0;
    }
    for (torch::Tensor* x : {&L.kc, &L.vc, &L.vz, &L.vs, &L.ko, &L.vo, &L.ki, &L.vi})
      keep_rows(*x, L.len, idx);
    L.pos.keep(idx);
    L.len = idx.size(2);
  }

  MemoryUse memory(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    MemoryUse m;
    m.tokens_seen = L.seen;
    if (L.seen == 0) return m;
    const int64_t bh = L.b * L.h, d = L.d, nk = n_out(d), rows = bh * L.len;
    const int64_t sinks = L.sink_kept.defined() ? L.sink_kept.sum().item<int64_t>()
                                                : bh * std::min(cfg_.sink, L.seen);
    m.payload_bytes = rows * (2 * d * cfg_.bits / 8 + 2 * nk * 2) + sinks * 2 * d * 2;
    m.metadata_bytes = rows * (2 * nk * 2 + 2 * 2) + table_bytes(L.h, d) + L.pos.bytes() +
                       (L.sink_kept.defined() ? L.sink_kept.numel() : 0);
    m.slots = rows;
    return m;
  }
  using SlotStore::memory;

  std::unique_ptr<SlotStore> clone_store() const override {
    auto c = std::make_unique<KVQuantStore>(*this);
    for (Layer& L : c->layers_) {
      for (torch::Tensor* x :
           {&L.kc, &L.vc, &L.vz, &L.vs, &L.ko, &L.vo, &L.ki, &L.vi, &L.sk, &L.sv, &L.sink_kept})
        *x = clone_rows(*x);
      L.pos = L.pos.clone();
    }
    return c;
  }

  // Codebooks (2 x 2^bits fp32) and key zero/scale (H x D x 2 fp32).
  int64_t table_bytes(int64_t h, int64_t d) const {
    return 2 * (int64_t{1} << cfg_.bits) * 4 + h * d * 2 * 4;
  }

 private:
  struct Layer {
    torch::Tensor kc, vc;      // [B, H, cap, D*bits/8] uint8 codes
    torch::Tensor ko, vo;      // [B, H, cap, n] fp16 outlier values (undefined when n = 0)
    torch::Tensor ki, vi;      // [B, H, cap, n] int16 outlier channels
    torch::Tensor vz, vs;      // [B, H, cap, 1] fp16 value zero and scale
    torch::Tensor sk, sv;      // [B, H, >= held sinks, D] fp16 sink rows, by token index
    torch::Tensor sink_kept;   // [B, H, min(sink, seen)] bool, after the first keep()
    KVQuantLayerCalibration cal;
    SlotPositions pos;
    int64_t len = 0, seen = 0, b = 0, h = 0, d = 0;
  };

  int64_t n_out(int64_t d) const { return kvquant_outliers_per_vector(cfg_.outliers, d); }

  void calibrate_layer(Layer& L, int layer, const torch::Tensor& k, const torch::Tensor& v,
                       const KVAppend& a) const {
    const int64_t h = k.size(1), d = k.size(3);
    if (cfg_.offline) {
      KVB_INPUT_CHECK(cal_, "kvquant(calib=offline): not calibrated; run `kvbench calibrate` or "
                            "calibrate the method first (kvbench run does), or use calib=prompt");
      const KVQuantLayerCalibration& c = cal_->at(static_cast<size_t>(layer));
      KVB_INPUT_CHECK(c.key_zero.size(0) == h && c.key_zero.size(1) == d,
                      "kvquant(calib=offline): calibrated for ", c.key_zero.size(0),
                      " KV heads of ", c.key_zero.size(1), ", the store holds ", h, " of ", d,
                      " (a head-wise selector splits heads: use calib=prompt)");
      auto dev = k.device();
      L.cal = {c.key_zero.to(dev), c.key_scale.to(dev), c.key_codebook.to(dev),
               c.value_codebook.to(dev)};
      return;
    }
    const int64_t n = k.size(0) * k.size(2);
    torch::Tensor qsq = a.q.defined() && a.q.size(1) % h == 0
                            ? query_square(a.q, h, cfg_.pre_rope)
                            : torch::ones({h, d}, k.options());
    L.cal = kvquant_calibrate_layer(k.permute({0, 2, 1, 3}).reshape({n, h, d}),
                                    v.permute({0, 2, 1, 3}).reshape({n, h, d}), qsq, cfg_.bits,
                                    cfg_.outliers);
  }

  // Held sinks are each head's first slots; their rows come from the fp16 sink rows.
  void overlay_sinks(const Layer& L, torch::Tensor& k, torch::Tensor& v) const {
    const int64_t ns = std::min(cfg_.sink, L.seen);
    if (ns == 0) return;
    if (!L.sink_kept.defined()) {
      const int64_t m = std::min(ns, L.len);
      k.narrow(2, 0, m).copy_(L.sk.narrow(2, 0, m));
      v.narrow(2, 0, m).copy_(L.sv.narrow(2, 0, m));
      return;
    }
    const int64_t m = std::min(ns, L.len);
    torch::Tensor mask = L.sink_kept.narrow(2, 0, ns);
    torch::Tensor order = true_first(mask).narrow(2, 0, m);  // row j: the j-th held sink token
    torch::Tensor held = mask.sum(-1, true);                 // [B, H, 1]
    torch::Tensor take = (torch::arange(m, held.options()).view({1, 1, m}) < held).unsqueeze(-1);
    auto e = order.unsqueeze(-1).expand({L.b, L.h, m, L.d});
    torch::Tensor sk = L.sk.narrow(2, 0, ns).gather(2, e).to(torch::kFloat32);
    torch::Tensor sv = L.sv.narrow(2, 0, ns).gather(2, e).to(torch::kFloat32);
    k.narrow(2, 0, m).copy_(torch::where(take, sk, k.narrow(2, 0, m)));
    v.narrow(2, 0, m).copy_(torch::where(take, sv, v.narrow(2, 0, m)));
  }

  std::string spec_;
  Config cfg_;
  std::shared_ptr<const Calibration> cal_;
  torch::ScalarType compute_ = torch::kFloat32;
  std::vector<Layer> layers_;
};

// Records what a calibration run appends (keys as the store quantizes them, values, query
// squares) while serving attention from the exact fp32 cache.
class RecorderState : public KVCacheState {
 public:
  RecorderState(int64_t n_layers, bool pre_rope)
      : pre_rope_(pre_rope), k_(n_layers), v_(n_layers), pos_(n_layers), rec_k_(n_layers),
        rec_v_(n_layers), qsq_(n_layers), qn_(n_layers, 0) {}

  void append(int layer, const KVAppend& a) override {
    auto l = static_cast<size_t>(layer);
    auto cat = [](torch::Tensor& to, const torch::Tensor& x) {
      to = to.defined() ? torch::cat({to, x}, 2) : x;
    };
    cat(k_[l], a.k.to(torch::kFloat32));
    cat(v_[l], a.v.to(torch::kFloat32));
    torch::Tensor p = a.pos.view({1, 1, -1}).expand({a.k.size(0), a.k.size(1), a.pos.size(0)});
    pos_[l] = pos_[l].defined() ? torch::cat({pos_[l], p}, 2) : p.clone();
    const torch::Tensor& kk = pre_rope_ ? a.k_pre_rope : a.k;
    const int64_t h = kk.size(1), d = kk.size(3);
    rec_k_[l].push_back(kk.to(torch::kFloat32).permute({0, 2, 1, 3}).reshape({-1, h, d}).cpu());
    rec_v_[l].push_back(a.v.to(torch::kFloat32).permute({0, 2, 1, 3}).reshape({-1, h, d}).cpu());
    if (a.q.defined() && a.q.size(1) % h == 0) {
      const int64_t t = a.q.size(0) * a.q.size(2);
      torch::Tensor s = query_square(a.q, h, pre_rope_).cpu() * static_cast<double>(t);
      qsq_[l] = qsq_[l].defined() ? qsq_[l] + s : s;
      qn_[l] += t;
    }
  }
  KVView view(int layer) const override {
    auto l = static_cast<size_t>(layer);
    KVView r;
    if (!k_[l].defined()) return r;
    r.k = k_[l];
    r.v = v_[l];
    r.pos = pos_[l];
    return r;
  }
  void reset() {  // between samples: a new sequence, the records kept
    for (auto& t : k_) t = torch::Tensor();
    for (auto& t : v_) t = torch::Tensor();
    for (auto& t : pos_) t = torch::Tensor();
  }
  MemoryUse memory() const override { return {}; }
  MemoryUse memory(int) const override { return {}; }
  std::unique_ptr<KVCacheState> clone() const override {
    KVB_CHECK(false, "kvquant calibration recorder: no clone");
    return nullptr;
  }

  KVQuantLayerCalibration layer(int layer, int bits, double outliers) const {
    auto l = static_cast<size_t>(layer);
    torch::Tensor keys = torch::cat(rec_k_[l], 0), values = torch::cat(rec_v_[l], 0);
    torch::Tensor qsq = qn_[l] > 0 ? qsq_[l] / static_cast<double>(qn_[l])
                                   : torch::ones({keys.size(1), keys.size(2)});
    return kvquant_calibrate_layer(keys, values, qsq, bits, outliers);
  }

 private:
  bool pre_rope_;
  std::vector<torch::Tensor> k_, v_, pos_;
  std::vector<std::vector<torch::Tensor>> rec_k_, rec_v_;  // per layer, [N_i, H, D] fp32 CPU
  std::vector<torch::Tensor> qsq_;                         // per layer [H, D] sums
  std::vector<int64_t> qn_;
};

nlohmann::json tensor_json(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kCPU, torch::kFloat32).contiguous();
  std::vector<double> flat(static_cast<size_t>(c.numel()));
  const float* p = c.data_ptr<float>();
  for (size_t i = 0; i < flat.size(); ++i) flat[i] = p[i];
  return flat;
}

class KVQuantMethod : public StorageMethod {
 public:
  explicit KVQuantMethod(const StageSpec& stage) : StorageMethod(stage) {
    cfg_.bits = static_cast<int>(spec_int(stage, "bits"));
    cfg_.outliers = spec_float(stage, "outliers");
    cfg_.sink = spec_int(stage, "sink");
    cfg_.pre_rope = stage.params.at("pre_rope") == "true";
    cfg_.offline = stage.params.at("calib") == "offline";
  }

  std::unique_ptr<SlotStore> make_store(const ModelShape& shape) const override {
    KVB_INPUT_CHECK(shape.head_dim % 8 == 0, spec(), ": head_dim ", shape.head_dim,
                    " is not a multiple of 8 (codes are packed 8 at a time)");
    KVB_INPUT_CHECK(shape.head_dim <= 32767, spec(), ": head_dim over int16 outlier indices");
    KVB_INPUT_CHECK(!cfg_.offline || cal_,
                    spec(), ": not calibrated (calib=offline): calibrate it first (`kvbench run` "
                    "does, with --calibration-dir; `kvbench calibrate` writes artifacts), or use "
                    "calib=prompt");
    KVB_INPUT_CHECK(!cal_ || static_cast<int64_t>(cal_->size()) == shape.n_layers, spec(),
                    ": calibrated for ", cal_ ? cal_->size() : 0, " layers, the model has ",
                    shape.n_layers);
    return std::make_unique<KVQuantStore>(shape, spec(), cfg_, cal_);
  }

  bool stores_pre_rope_keys() const override { return cfg_.pre_rope; }
  // Held sinks after drops are the kept ones of the first `sink` tokens (data-dependent).
  bool promise_exact_after_any_drops() const override { return false; }

  MemoryUse layer_promise(const ModelShape& shape, const KeptSlots& kept,
                          torch::ScalarType) const override {
    const int64_t h = shape.n_head_kv, d = shape.head_dim, slots = kept.slots;
    const int64_t n = kvquant_outliers_per_vector(cfg_.outliers, d);
    MemoryUse m;
    m.slots = h * slots;
    m.tokens_seen = slots;
    if (kept.tokens == 0) return m;
    const int64_t first = std::min(cfg_.sink, kept.tokens);
    const int64_t sinks = kept.dropped() ? kept.in(0, first) : first;
    m.payload_bytes = h * slots * (2 * d * cfg_.bits / 8 + 2 * n * 2) + h * sinks * 2 * d * 2;
    m.metadata_bytes = h * slots * (2 * n * 2 + 2 * 2) + 2 * (int64_t{1} << cfg_.bits) * 4 +
                       h * d * 2 * 4 + (kept.dropped() ? h * first : 0);
    return m;
  }

  std::shared_ptr<const StorageMethod> calibrated(const CalibrationContext& ctx) const override {
    if (!cfg_.offline) return nullptr;
    KVB_INPUT_CHECK(!ctx.cache_dir.empty(), spec(), ": calibration needs a cache directory");
    KVB_INPUT_CHECK(!ctx.model_id.empty(), spec(), ": calibration needs the model's id");
    KVB_INPUT_CHECK(!ctx.calibration_ids.empty(), spec(),
                    ": calibration needs text (kvbench calibrate --data FILE)");
    const std::string path = (std::filesystem::path(ctx.cache_dir) / "kvquant" /
                              (ctx.model_id + "-" + hex64(fnv1a64(spec())) + "-" +
                               ctx.calibration_hash + ".json"))
                                 .string();
    auto c = std::make_shared<KVQuantMethod>(*this);
    bool computed = false;
    if (auto cal = read_artifact(ctx, path)) {
      c->cal_ = std::move(cal);
    } else {
      c->cal_ = compute(ctx, path);
      computed = true;
    }
    c->artifact_ = CalibrationArtifact{spec(), path, hex64(fnv1a64(read_file(path))), computed};
    return c;
  }
  std::optional<CalibrationArtifact> calibration_artifact() const override { return artifact_; }

  void calibrate(const CalibrationContext& ctx) override {
    auto c = calibrated(ctx);
    if (!c) return;
    const auto* q = dynamic_cast<const KVQuantMethod*>(c.get());
    cal_ = q->cal_;
    artifact_ = q->artifact_;
  }
  std::vector<CalibrationArtifact> calibration_artifacts() const override {
    if (artifact_) return {*artifact_};
    return {};
  }

 private:
  std::shared_ptr<const Calibration> compute(const CalibrationContext& ctx,
                                             const std::string& path) const {
    KVB_INPUT_CHECK(ctx.run, spec(), ": calibration needs a model to run");
    const ModelShape& s = ctx.shape;
    const int64_t per = s.max_position > 0 ? std::min(kSampleTokens, s.max_position)
                                           : kSampleTokens;
    const int64_t total = static_cast<int64_t>(ctx.calibration_ids.size());
    RecorderState rec(s.n_layers, cfg_.pre_rope);
    int64_t samples = 0, used = 0;
    for (int64_t at = 0; at < total && samples < kMaxSamples; at += per, ++samples) {
      const int64_t n = std::min(per, total - at);
      std::vector<int64_t> ids(ctx.calibration_ids.begin() + at,
                               ctx.calibration_ids.begin() + at + n);
      for (const int64_t id : ids)
        KVB_INPUT_CHECK(id >= 0 && id < ctx.vocab_size, spec(), ": calibration token id ", id,
                        " outside the model's vocabulary of ", ctx.vocab_size);
      rec.reset();
      ctx.run(rec, ids, n);
      used += n;
    }
    auto cal = std::make_shared<Calibration>();
    nlohmann::json layers = nlohmann::json::array();
    for (int l = 0; l < static_cast<int>(s.n_layers); ++l) {
      cal->push_back(rec.layer(l, cfg_.bits, cfg_.outliers));
      const KVQuantLayerCalibration& c = cal->back();
      layers.push_back({{"key_codebook", tensor_json(c.key_codebook)},
                        {"value_codebook", tensor_json(c.value_codebook)},
                        {"key_zero", tensor_json(c.key_zero)},
                        {"key_scale", tensor_json(c.key_scale)}});
    }
    nlohmann::json j{{"method", "kvquant"},
                     {"spec", spec()},
                     {"model_id", ctx.model_id},
                     {"calibration_hash", ctx.calibration_hash},
                     {"calibration_source", ctx.calibration_source},
                     {"n_layers", s.n_layers},
                     {"n_head_kv", s.n_head_kv},
                     {"head_dim", s.head_dim},
                     {"bits", cfg_.bits},
                     {"samples", samples},
                     {"tokens", used},
                     {"weights", "keys: E[q_c^2] scale_c^2; values: token scale^2 (no Fisher)"},
                     {"layers", layers}};
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    write_file(path, j.dump(1) + "\n");
    return cal;
  }

  // nullopt: no file, or one for another identity (calibrate again and replace it). A file that
  // does not parse or is malformed: InputError naming it (never used, never silently replaced).
  std::shared_ptr<const Calibration> read_artifact(const CalibrationContext& ctx,
                                                   const std::string& path) const {
    if (!file_exists(path)) return nullptr;
    const ModelShape& s = ctx.shape;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_file(path));
    } catch (const std::exception& e) {
      throw InputError(path + ": damaged calibration artifact (not JSON); delete it to calibrate "
                       "again");
    }
    auto bad = [&](const std::string& why) {
      return InputError(path + ": damaged calibration artifact (" + why +
                        "); delete it to calibrate again");
    };
    try {
      if (!j.is_object()) throw bad("not an object");
      if (j.at("method") != "kvquant" || j.at("spec") != spec() ||
          j.at("model_id") != ctx.model_id || j.at("calibration_hash") != ctx.calibration_hash ||
          j.at("n_layers") != s.n_layers || j.at("n_head_kv") != s.n_head_kv ||
          j.at("head_dim") != s.head_dim)
        return nullptr;  // another identity: calibrate again
      const auto& layers = j.at("layers");
      if (!layers.is_array() || static_cast<int64_t>(layers.size()) != s.n_layers)
        throw bad("layers: expected " + std::to_string(s.n_layers));
      auto cal = std::make_shared<Calibration>();
      const int64_t lv = int64_t{1} << cfg_.bits, hd = s.n_head_kv * s.head_dim;
      auto read = [&](const nlohmann::json& a, int64_t n, const char* name) {
        if (!a.is_array() || static_cast<int64_t>(a.size()) != n)
          throw bad(std::string(name) + ": expected " + std::to_string(n) + " numbers");
        std::vector<float> v;
        for (const auto& x : a) {
          if (!x.is_number() || !std::isfinite(x.get<double>()))
            throw bad(std::string(name) + ": not a finite number");
          v.push_back(static_cast<float>(x.get<double>()));
        }
        return torch::tensor(v, torch::kFloat32);
      };
      for (const auto& L : layers) {
        KVQuantLayerCalibration c;
        c.key_codebook = read(L.at("key_codebook"), lv, "key_codebook");
        c.value_codebook = read(L.at("value_codebook"), lv, "value_codebook");
        c.key_zero = read(L.at("key_zero"), hd, "key_zero").view({s.n_head_kv, s.head_dim});
        c.key_scale = read(L.at("key_scale"), hd, "key_scale").view({s.n_head_kv, s.head_dim});
        if (!(c.key_scale > 0).all().item<bool>()) throw bad("key_scale: not positive");
        for (const torch::Tensor* cb : {&c.key_codebook, &c.value_codebook})
          if (lv > 1 && !(cb->narrow(0, 1, lv - 1) >= cb->narrow(0, 0, lv - 1)).all().item<bool>())
            throw bad("codebook: not ascending");
        cal->push_back(std::move(c));
      }
      return cal;
    } catch (const nlohmann::json::exception& e) {
      throw bad(std::string("fields: ") + e.what());
    }
  }

  Config cfg_;
  std::shared_ptr<const Calibration> cal_;
  std::optional<CalibrationArtifact> artifact_;
};

double view_tolerance(const StageSpec& s) {
  const int64_t bits = spec_int(s, "bits");
  return bits == 2 ? 0.6 : bits == 3 ? 0.3 : 0.15;
}

}  // namespace

MethodEntry kvquant_entry() {
  return {
      .name = "kvquant",
      .family = "quant",
      .help =
          "KVQuant: keys per channel (before RoPE with pre_rope=true, rotated when read) with "
          "offline-calibrated scales, values per token; a non-uniform datatype per layer from "
          "sensitivity-weighted k-means; per vector the top `outliers` fraction in fp16 with "
          "int16 indices; the first `sink` tokens in fp16. calib=offline needs `kvbench "
          "calibrate` (or kvbench run's own calibration); calib=prompt calibrates each layer on "
          "its first chunk.",
      .params = {{"bits", "int", "4", {"2", "3", "4"}, 0, 0, "bits per element (2^bits levels)"},
                 {"outliers", "float", "0.01", {}, 0, 0.5,
                  "fraction of each vector kept in fp16 (ceil(fraction x head_dim) elements)"},
                 {"sink", "int", "1", {}, 0, 1024, "first tokens kept in fp16"},
                 {"pre_rope", "enum", "true", {"true", "false"}, 0, 0,
                  "quantize keys before RoPE (the model rotates them when read)"},
                 {"calib", "enum", "offline", {"offline", "prompt"}, 0, 0,
                  "offline: calibration artifact from calibration text; prompt: each layer's "
                  "first chunk"}},
      .make = StorageFactory([](const StageSpec& s) { return std::make_unique<KVQuantMethod>(s); }),
      .finalize = nullptr,
      // No lossless setting: every element goes through the 2^bits-level datatype (outliers
      // and sinks aside), so no kvquant spec reproduces the full cache's logits.
      .contract = {.examples = {"kvquant(bits=4,calib=prompt,pre_rope=false)",
                                "kvquant(bits=3,calib=prompt)",
                                "kvquant(bits=2,calib=prompt,outliers=0.05,sink=4)"},
                   .view_tolerance = view_tolerance,
                   .lossless = {},
                   .compressing = {"kvquant(bits=2,calib=prompt)"}},
  };
}

}  // namespace kvb
