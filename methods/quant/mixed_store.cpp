#include "methods/quant/mixed_store.h"

#include <cmath>
#include <limits>

#include "common/check.h"
#include "kernels/cpu/quant_kernels.h"

namespace kvb {

torch::Tensor true_first_idx(const torch::Tensor& mask) {
  const int64_t n = mask.size(2);
  torch::Tensor ar = torch::arange(n, mask.options().dtype(torch::kLong));
  return std::get<1>(torch::where(mask, ar, ar + n).sort(2));
}

torch::Tensor gather_slot_rows(const torch::Tensor& x, const torch::Tensor& idx) {
  return x.gather(2, idx.unsqueeze(-1).expand({idx.size(0), idx.size(1), idx.size(2), x.size(3)}));
}

void probe_attention(const torch::Tensor& keys, const torch::Tensor& q, int64_t held,
                     torch::Tensor& acc, torch::Tensor& cnt) {
  const int64_t b = keys.size(0), h = keys.size(1), n = keys.size(2), d = keys.size(3);
  const int64_t t = n - held;
  auto f32 = keys.options().dtype(torch::kFloat32);
  if (!q.defined() || t <= 0) {
    acc = torch::zeros({b, h, n}, f32);
    cnt = torch::ones({b, h, n}, f32);
    return;
  }
  const int64_t g = q.size(1) / h;
  torch::Tensor qf = q.to(torch::kFloat32).reshape({b, h, g * t, d});
  torch::Tensor logits = torch::matmul(qf, keys.transpose(2, 3)) / std::sqrt(static_cast<double>(d));
  torch::Tensor col = torch::arange(n, f32.dtype(torch::kLong)).view({1, n});
  torch::Tensor row = torch::arange(t, f32.dtype(torch::kLong)).view({t, 1});
  torch::Tensor masked = (col - held) > row;  // [T, N]: a chunk token after the query
  logits = logits.view({b, h, g, t, n})
               .masked_fill(masked.view({1, 1, 1, t, n}), -std::numeric_limits<float>::infinity());
  acc = torch::softmax(logits, -1).sum({2, 3});
  torch::Tensor seen = (~masked).sum(0).to(torch::kFloat32) * static_cast<double>(g);  // [N]
  cnt = seen.view({1, 1, n}).expand({b, h, n}).contiguous();
}

namespace {

int64_t bytes_of(const torch::Tensor& t) {
  return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0;
}

}  // namespace

MixedStore::MixedStore(const ModelShape& shape, MixedConfig cfg,
                       std::shared_ptr<const MixedPolicy> policy)
    : cfg_(cfg), policy_(std::move(policy)), layers_(static_cast<size_t>(shape.n_layers)) {}

void MixedStore::quantize_pool(const Layer& L, int side, int bits, int64_t group,
                               const torch::Tensor& x, Pool& out) const {  // x [B, H, n, D] f32
  const int64_t n = x.size(2);
  if (bits == 0) {
    out.codes = x.to(compute_).contiguous();
    out.scale = out.zero = torch::Tensor();
    return;
  }
  torch::Tensor y = x;
  if (side == 0 && cfg_.key_channel_norm && L.norm.defined()) y = x / L.norm.to(torch::kFloat32);
  y = y.contiguous();
  auto o = x.options();
  out.codes = torch::empty({L.b, L.h, n, L.d * bits / 8}, o.dtype(torch::kUInt8));
  out.scale = torch::empty({L.b, L.h, n, L.d / group}, o.dtype(torch::kHalf));
  out.zero = torch::empty_like(out.scale);
  if (n > 0) kernels::quantize_rows(y, bits, group, out.codes, out.scale, out.zero);
}

torch::Tensor MixedStore::dequantize_pool(const Layer& L, int side, int bits, int64_t group,
                                          const Pool& p) const {
  if (bits == 0) return p.codes.to(torch::kFloat32);
  torch::Tensor out = torch::empty({L.b, L.h, p.codes.size(2), L.d},
                                   p.codes.options().dtype(torch::kFloat32));
  if (p.codes.size(2) > 0)
    kernels::dequantize_rows(p.codes, p.scale, p.zero, bits, group, out);
  if (side == 0 && cfg_.key_channel_norm && L.norm.defined()) out = out * L.norm.to(torch::kFloat32);
  return out;
}

torch::Tensor MixedStore::dense(const Layer& L, int side) const {
  auto f32 = L.cls.options().dtype(torch::kFloat32);
  torch::Tensor out = torch::empty({L.b, L.h, L.s, L.d}, f32);
  if (L.s == 0) return out;
  auto place = [&](int8_t c, int64_t n, const torch::Tensor& rows) {
    if (n == 0) return;
    torch::Tensor idx = true_first_idx(L.cls == c).narrow(2, 0, n);
    out.scatter_(2, idx.unsqueeze(-1).expand({L.b, L.h, n, L.d}), rows);
  };
  if (L.nhi > 0)
    place(kMixedHi, L.nhi, dequantize_pool(L, side, cfg_.hi_bits, cfg_.hi_group, L.hi[side]));
  if (L.nlo > 0)
    place(kMixedLo, L.nlo, dequantize_pool(L, side, cfg_.lo_bits, cfg_.lo_group, L.lo[side]));
  if (L.nfp > 0) out.narrow(2, L.s - L.nfp, L.nfp).copy_(L.fp[side]);  // fp: the suffix
  return out;
}

// Scores over all S slots: held ones as they are, the rest 0.
torch::Tensor MixedStore::full_scores(const Layer& L, const torch::Tensor& t) const {
  if (!cfg_.scores_fp_only || !t.defined()) return t;
  torch::Tensor out = torch::zeros({L.b, L.h, L.s}, t.options());
  if (L.nfp > 0) out.narrow(2, L.s - L.nfp, L.nfp).copy_(t);
  return out;
}

// New slots j take old slot src[b, h, j] (old classes old_cls, pools as held) with class
// ncls[b, h, j]; dense_old: the old slots dequantized (float32, [0] keys, [1] values).
void MixedStore::rebuild(Layer& L, const torch::Tensor& src, const torch::Tensor& old_cls,
                         const torch::Tensor& ncls, const torch::Tensor* dense_old) {
  const int64_t s = ncls.size(2);
  torch::Tensor per_head_hi = (ncls == kMixedHi).sum(-1), per_head_fp = (ncls == kMixedFp).sum(-1);
  const int64_t nhi = s ? per_head_hi.max().item<int64_t>() : 0;
  const int64_t nfp = s ? per_head_fp.max().item<int64_t>() : 0;
  KVB_CHECK(s == 0 || (per_head_hi.min().item<int64_t>() == nhi &&
                       per_head_fp.min().item<int64_t>() == nfp),
            "mixed store: heads hold different class counts");
  const int64_t nlo = s - nhi - nfp;
  for (int side = 0; side < 2; ++side) {
    for (int8_t c : {kMixedHi, kMixedLo}) {
      const int64_t n_new = c == kMixedHi ? nhi : nlo, n_old = c == kMixedHi ? L.nhi : L.nlo;
      const int bits = c == kMixedHi ? cfg_.hi_bits : cfg_.lo_bits;
      const int64_t group = c == kMixedHi ? cfg_.hi_group : cfg_.lo_group;
      Pool& pool = c == kMixedHi ? L.hi[side] : L.lo[side];
      Pool fresh;
      if (n_new == 0) {
        quantize_pool(L, side, bits, group,
                      torch::empty({L.b, L.h, 0, L.d}, dense_old[side].options()), fresh);
        pool = fresh;
        continue;
      }
      torch::Tensor idx = true_first_idx(ncls == c).narrow(2, 0, n_new);
      torch::Tensor osl = src.gather(2, idx);
      torch::Tensor was = old_cls.gather(2, osl) == c;
      const bool all_kept = was.all().item<bool>();
      if (!all_kept || n_old == 0) quantize_pool(L, side, bits, group,
                                                 gather_slot_rows(dense_old[side], osl), fresh);
      if (n_old > 0 && (all_kept || was.any().item<bool>())) {
        torch::Tensor rank = ((old_cls == c).cumsum(2) - 1).gather(2, osl).clamp(0, n_old - 1);
        Pool kept;
        kept.codes = gather_slot_rows(pool.codes, rank);
        if (pool.scale.defined()) {
          kept.scale = gather_slot_rows(pool.scale, rank);
          kept.zero = gather_slot_rows(pool.zero, rank);
        }
        if (all_kept) {
          fresh = kept;
        } else {
          torch::Tensor w = was.unsqueeze(-1);
          fresh.codes = torch::where(w, kept.codes, fresh.codes);
          if (fresh.scale.defined()) {
            fresh.scale = torch::where(w, kept.scale, fresh.scale);
            fresh.zero = torch::where(w, kept.zero, fresh.zero);
          }
        }
      }
      pool = fresh;
    }
    L.fp[side] = nfp > 0 ? gather_slot_rows(dense_old[side], src.narrow(2, s - nfp, nfp))
                               .to(compute_)
                         : torch::Tensor();
  }
  L.cls = ncls.to(torch::kInt8).contiguous();
  L.s = s;
  L.nhi = nhi;
  L.nlo = nlo;
  L.nfp = nfp;
}

void MixedStore::append(int layer, const KVAppend& a) {
  Layer& L = layers_.at(static_cast<size_t>(layer));
  const int64_t t = a.k.size(2);
  compute_ = a.k.scalar_type();
  L.b = a.k.size(0);
  L.h = a.k.size(1);
  L.d = a.k.size(3);
  if (t == 0) return;
  auto dev = a.k.options();
  if (!L.cls.defined()) L.cls = torch::empty({L.b, L.h, 0}, dev.dtype(torch::kInt8));
  const int64_t s0 = L.s;
  torch::Tensor dk = dense(L, 0), dv = dense(L, 1);
  torch::Tensor keys[2] = {torch::cat({dk, a.k.to(torch::kFloat32)}, 2),
                           torch::cat({dv, a.v.to(torch::kFloat32)}, 2)};
  torch::Tensor add, seen;
  probe_attention(keys[0], a.q, s0, add, seen);
  torch::Tensor acc = full_scores(L, L.acc), cnt = full_scores(L, L.cnt);
  auto f32 = dev.dtype(torch::kFloat32);
  acc = (acc.defined() ? torch::cat({acc, torch::zeros({L.b, L.h, t}, f32)}, 2)
                       : torch::zeros({L.b, L.h, s0 + t}, f32)) +
        add;
  if (cfg_.scores_fp_only)
    cnt = (cnt.defined() ? torch::cat({cnt, torch::zeros({L.b, L.h, t}, f32)}, 2)
                         : torch::zeros({L.b, L.h, s0 + t}, f32)) +
          seen;
  torch::Tensor old_cls =
      torch::cat({L.cls, torch::full({L.b, L.h, t}, kMixedFp, dev.dtype(torch::kInt8))}, 2);
  // The appended rows are fp slots of the old layout (their pool is dense_old itself).
  L.s = s0 + t;
  L.nfp += t;
  torch::Tensor score = cfg_.scores_fp_only ? acc / cnt.clamp_min(1) : acc;
  torch::Tensor ncls = policy_->classify(old_cls, score);
  if (cfg_.key_channel_norm && !L.norm.defined() && (ncls != kMixedFp).any().item<bool>()) {
    // ZipCache's c_i = sqrt(max_t |K[t, i]|) over the first keys quantized (per head); kept for
    // every later key (token-wise ranges adapt per token; c only balances the channels).
    torch::Tensor m = torch::where((ncls != kMixedFp).unsqueeze(-1), keys[0].abs(),
                                   torch::zeros_like(keys[0]))
                          .amax(2, true)
                          .sqrt();
    torch::Tensor c = m.to(torch::kHalf);
    L.norm = torch::where(c.to(torch::kFloat32) > 0, c, torch::ones_like(c));
  }
  torch::Tensor src = torch::arange(L.s, dev.dtype(torch::kLong)).view({1, 1, L.s}).expand(
      {L.b, L.h, L.s});
  // Pools of the old layout: the appended fp rows are read from keys[], not from L.fp.
  L.cls = old_cls;
  rebuild(L, src, old_cls, ncls, keys);
  if (cfg_.scores_fp_only) {
    L.acc = acc.narrow(2, L.s - L.nfp, L.nfp).contiguous();
    L.cnt = cnt.narrow(2, L.s - L.nfp, L.nfp).contiguous();
  } else {
    L.acc = acc.contiguous();
  }
  L.pos.append(a.pos, L.b, L.h);
  L.seen += t;
}

KVView MixedStore::view(int layer) const {
  const Layer& L = layers_.at(static_cast<size_t>(layer));
  KVView v;
  if (L.s == 0) return v;
  v.k = dense(L, 0);
  v.v = dense(L, 1);
  if (compute_ != torch::kFloat32) {
    v.k = v.k.to(compute_);
    v.v = v.v.to(compute_);
  }
  v.pos = L.pos.view();
  return v;
}

int64_t MixedStore::slots(int layer) const { return layers_.at(static_cast<size_t>(layer)).s; }

torch::Tensor MixedStore::positions(int layer) const {
  return layers_.at(static_cast<size_t>(layer)).pos.view();
}

void MixedStore::keep(int layer, const torch::Tensor& idx) {
  Layer& L = layers_.at(static_cast<size_t>(layer));
  const int64_t n = idx.size(2);
  if (n > 1)
    KVB_CHECK((idx.narrow(2, 1, n - 1) > idx.narrow(2, 0, n - 1)).all().item<bool>(),
              "mixed store: keep() needs ascending indices");
  torch::Tensor dk = dense(L, 0), dv = dense(L, 1);
  torch::Tensor keys[2] = {dk, dv};
  torch::Tensor acc = full_scores(L, L.acc), cnt = full_scores(L, L.cnt);
  torch::Tensor kc = L.cls.gather(2, idx);
  // Rebalance: quantized prefix of the longest head's length, hi count of the smallest head's.
  const int64_t nq = n ? (kc != kMixedFp).sum(-1).max().item<int64_t>() : 0;
  const int64_t nhi = n ? (kc == kMixedHi).sum(-1).min().item<int64_t>() : 0;
  torch::Tensor ar = torch::arange(n, idx.options()).view({1, 1, n});
  torch::Tensor is_hi = kc == kMixedHi;
  torch::Tensor keep_hi = is_hi.logical_and(is_hi.to(torch::kLong).cumsum(2) <= nhi);
  torch::Tensor ncls = torch::where(
      ar < nq,
      torch::where(keep_hi, torch::full_like(kc, kMixedHi), torch::full_like(kc, kMixedLo)),
      torch::full_like(kc, kMixedFp));
  rebuild(L, idx, L.cls, ncls, keys);
  if (cfg_.scores_fp_only) {
    L.acc = L.nfp ? acc.gather(2, idx.narrow(2, n - L.nfp, L.nfp)).contiguous() : torch::Tensor();
    L.cnt = L.nfp ? cnt.gather(2, idx.narrow(2, n - L.nfp, L.nfp)).contiguous() : torch::Tensor();
  } else if (acc.defined()) {
    L.acc = acc.gather(2, idx).contiguous();
  }
  L.pos.keep(idx);
}

MemoryUse MixedStore::memory(int layer) const {
  const Layer& L = layers_.at(static_cast<size_t>(layer));
  MemoryUse m;
  m.tokens_seen = L.seen;
  m.slots = L.b * L.h * L.s;
  if (L.s == 0) return m;
  for (int side = 0; side < 2; ++side) {
    m.payload_bytes += bytes_of(L.hi[side].codes) + bytes_of(L.lo[side].codes) +
                       (L.nfp ? bytes_of(L.fp[side]) : 0);
    m.metadata_bytes += bytes_of(L.hi[side].scale) + bytes_of(L.hi[side].zero) +
                        bytes_of(L.lo[side].scale) + bytes_of(L.lo[side].zero);
  }
  m.metadata_bytes += bytes_of(L.cls) + bytes_of(L.norm) + bytes_of(L.acc) + bytes_of(L.cnt) +
                      L.pos.bytes();
  return m;
}

std::unique_ptr<SlotStore> MixedStore::clone_store() const {
  auto c = std::make_unique<MixedStore>(*this);
  for (Layer& L : c->layers_) {
    for (int side = 0; side < 2; ++side) {
      for (Pool* p : {&L.hi[side], &L.lo[side]})
        for (torch::Tensor* t : {&p->codes, &p->scale, &p->zero})
          if (t->defined()) *t = t->clone();
      if (L.fp[side].defined()) L.fp[side] = L.fp[side].clone();
    }
    for (torch::Tensor* t : {&L.cls, &L.acc, &L.cnt, &L.norm})
      if (t->defined()) *t = t->clone();
    L.pos = L.pos.clone();
  }
  return c;
}

}  // namespace kvb
