// `kivi(bits=2|4, group=32, residual=128)`: KIVI (Liu et al. 2024, jy-yuan/KIVI).
//
//   keys   per-channel: a group of `group` consecutive tokens shares one fp16 scale and zero
//          point per channel. New keys wait in a full-precision residual; when it holds
//          `residual` tokens they are quantized together (residual/group groups) and it empties.
//   values per-token: each token's D channels split into groups of min(group, D), each with an
//          fp16 scale and zero. The `residual` most recent values stay in full precision; older
//          ones are quantized as they leave the residual (one per decode step).
// Codes are packed (4 per byte at 2 bits, 2 at 4 bits) in uint8 tensors; the residual is held in
// the compute dtype. After L tokens: floor(L/R)*R keys and max(0, L-R) values are quantized,
// whatever the chunking. view() dequantizes with kernels/cpu/quant_kernels.h each call (no
// dequantized copy is kept between steps).
//
// In a chain (keep(): slots dropped by the selectors in front) nothing is quantized twice: a kept
// slot keeps its stored codes, and a kept key keeps referring to its group's scale and zero
// point. The rule for what is full precision stays KIVI's, in token time (the tokens appended to
// the layer, dropped or not), whatever was dropped:
//   - a key is quantized when the block of R tokens it was appended in is complete (tokens
//     [i*R, (i+1)*R)); until then it is in the residual. The kept keys of a block are quantized
//     together, in the block's groups of `group` tokens; a group whose tokens were partly dropped
//     takes its scale and zero point from the kept ones, a group with none is not stored;
//   - a value is quantized when it is no longer among the R most recent tokens appended.
// So after L tokens exactly the kept tokens of [floor(L/R)*R, L) have full-precision keys and the
// kept tokens of [L-R, L) full-precision values — the newest ones, as in KIVI without eviction
// (when L is a multiple of R every key is quantized, as in KIVI). Heads that dropped different
// slots then hold different numbers of quantized and full-precision slots: per head counts, with
// buffers padded to the longest head (memory() counts the live rows only).
//
// Bookkeeping once something was dropped (before, all of it is implicit): per key group its kept
// count (int32), and which of the current block's keys and the R most recent values are kept (a
// byte each). Positions become explicit as in every store (SlotPositions).
//
// attend() (the fused path): in the plain layout, for one decode query per head (T = 1) in
// fp32, attention is computed straight from the codes by kernels/cpu/kivi_attention.h; the
// ragged layout, T > 1 and other dtypes take the dequantized view. The store runs on the CPU
// only: a query or keys on another device are refused naming the method and the device.
#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "common/check.h"
#include "kernels/cpu/kivi_attention.h"
#include "kernels/cpu/quant_kernels.h"
#include "methods/registry.h"
#ifdef KVB_HAVE_CUDA_KERNELS
#include "kernels/cuda/dispatch.h"
#endif

namespace kvb {
namespace {

// x as float32 with contiguous rows (no copy when it already is).
torch::Tensor rows_f32(const torch::Tensor& x) {
  torch::Tensor f = x.to(torch::kFloat32);
  if (f.stride(3) == 1 && (f.size(2) <= 1 || f.stride(2) == f.size(3))) return f;
  return f.contiguous();
}

int64_t max_of(const torch::Tensor& t) { return t.numel() ? t.max().item<int64_t>() : 0; }
int64_t sum_of(const torch::Tensor& t) { return t.numel() ? t.sum().item<int64_t>() : 0; }

// Indices [B, H, n] that put the true entries of mask [B, H, n] first, both parts ascending.
torch::Tensor true_first(const torch::Tensor& mask) {
  const int64_t n = mask.size(2);
  torch::Tensor ar = torch::arange(n, mask.options().dtype(torch::kLong));
  return std::get<1>(torch::where(mask, ar, ar + n).sort(2));
}

// x [B, H, n, X] gathered along dim 2 by idx [B, H, m].
torch::Tensor gather_rows(const torch::Tensor& x, const torch::Tensor& idx) {
  return x.gather(2, idx.unsqueeze(-1).expand({idx.size(0), idx.size(1), idx.size(2), x.size(3)}));
}

// buf[b, h, off[b, h] + i] = src[b, h, i] for every i < n (rows past a head's live count are
// padding, so the whole of src is written). off [B, H] int64 on the CPU; buf holds max(off) + n.
void write_at(torch::Tensor& buf, const torch::Tensor& off, const torch::Tensor& src) {
  const int64_t n = src.size(2);
  if (n == 0) return;
  const int64_t lo = off.min().item<int64_t>(), hi = off.max().item<int64_t>();
  if (lo == hi) {
    buf.narrow(2, lo, n).copy_(src);
    return;
  }
  torch::Tensor idx = off.to(buf.device()).view({off.size(0), off.size(1), 1}) +
                      torch::arange(n, buf.options().dtype(torch::kLong));
  buf.scatter_(2, idx.unsqueeze(-1).expand(src.sizes()), src);
}

// out [B, H, S, D]: per head the first nq[b, h] slots from q (rows 0..nq-1), the rest from r
// (rows 0..S-nq-1). q or r may be undefined when no head takes a slot from it.
torch::Tensor assemble(const torch::Tensor& q, const torch::Tensor& nq, const torch::Tensor& r,
                       int64_t s) {
  const int64_t lo = nq.min().item<int64_t>(), hi = nq.max().item<int64_t>();
  if (hi == 0) return r.narrow(2, 0, s);
  if (lo == s) return q.narrow(2, 0, s);
  if (lo == hi) return torch::cat({q.narrow(2, 0, lo), r.narrow(2, 0, s - lo)}, 2);
  const int64_t b = nq.size(0), h = nq.size(1);
  torch::Tensor j = torch::arange(s, q.options().dtype(torch::kLong)).view({1, 1, s});
  torch::Tensor n = nq.to(q.device()).view({b, h, 1});
  torch::Tensor from_q = (j < n).unsqueeze(-1);
  torch::Tensor qi = j.expand({b, h, s}).clamp_max(q.size(2) - 1);
  torch::Tensor ri = (j - n).clamp(0, r.size(2) - 1);
  return torch::where(from_q, gather_rows(q, qi), gather_rows(r, ri));
}

class KiviStore : public SlotStore {
 public:
  KiviStore(const ModelShape& shape, std::string spec, int bits, int64_t group,
            int64_t value_group, int64_t residual)
      : spec_(std::move(spec)),
        bits_(bits),
        g_(group),
        gv_(value_group),
        r_(residual),
        layers_(static_cast<size_t>(shape.n_layers)) {}

  void append(int layer, const KVAppend& a) override {
    require_cpu(a.k);
    Layer& L = layers_.at(static_cast<size_t>(layer));
    L.b = a.k.size(0);
    L.h = a.k.size(1);
    L.d = a.k.size(3);
    compute_ = a.k.scalar_type();
    if (L.ragged) {
      append_keys_ragged(L, a.k);
      append_values(L, a.v);
    } else {
      append_keys(L, a.k);
      append_values(L, a.v);
    }
    L.pos.append(a.pos, L.b, L.h);
    L.seen += a.k.size(2);
    L.slots += a.k.size(2);
  }

  KVView view(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    KVView v = L.ragged ? dense_f32_ragged(L) : dense_f32(L);
    if (v.k.defined() && compute_ != torch::kFloat32) {
      v.k = v.k.to(compute_);
      v.v = v.v.to(compute_);
    }
    return v;
  }

  std::optional<AttendResult> attend(int layer, const torch::Tensor& q,
                                     double scale) const override {
    if (q.defined() && q.device().is_cuda()) return attend_cuda(layer, q, scale);
    require_cpu(q);
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    if (L.ragged || L.nqk + L.nrk == 0 || q.size(2) != 1 || q.scalar_type() != torch::kFloat32 ||
        compute_ != torch::kFloat32)
      return std::nullopt;
    kernels::KiviCache c;
    c.bits = bits_;
    c.group = g_;
    c.value_group = gv_;
    if (L.nqk > 0) {
      c.key_codes = L.kq.narrow(2, 0, L.nqk);
      c.key_scale = L.ks.narrow(2, 0, L.nqk / g_);
      c.key_zero = L.kz.narrow(2, 0, L.nqk / g_);
    }
    if (L.nrk > 0) c.key_residual = L.kr.narrow(2, 0, L.nrk);
    if (L.nqv > 0) {
      c.value_codes = L.vq.narrow(2, 0, L.nqv);
      c.value_scale = L.vs.narrow(2, 0, L.nqv);
      c.value_zero = L.vz.narrow(2, 0, L.nqv);
    }
    if (L.nrv > 0) c.value_residual = L.vr.narrow(2, L.v0, L.nrv);
    kernels::AttentionPart r = kernels::kivi_decode_attention(q, c, scale);
    return AttendResult{r.out, r.lse};
  }

  int64_t slots(int layer) const override { return layers_.at(static_cast<size_t>(layer)).slots; }
  torch::Tensor positions(int layer) const override {
    return layers_.at(static_cast<size_t>(layer)).pos.view();
  }
  int n_layers() const override { return static_cast<int>(layers_.size()); }

  // Drops the slots not in idx; no kept slot is quantized again (see the top of the file).
  void keep(int layer, const torch::Tensor& idx) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    if (!L.ragged) make_ragged(L);
    keep_keys(L, idx);
    keep_values(L, idx);
    L.pos.keep(idx);
    L.slots = idx.size(2);
  }

  MemoryUse memory(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    MemoryUse m;
    m.tokens_seen = L.seen;
    const int64_t bh = L.b * L.h, dp = L.d * bits_ / 8;
    const int64_t es = static_cast<int64_t>(c10::elementSize(compute_));
    m.slots = bh * L.slots;
    if (!L.ragged) {
      m.payload_bytes = bh * ((L.nqk + L.nqv) * dp + (L.nrk + L.nrv) * L.d * es);
      m.metadata_bytes =
          bh * (2 * (L.nqk / g_) * L.d * 2 + 2 * L.nqv * (L.d / gv_) * 2) + L.pos.bytes();
      return m;
    }
    const int64_t qk = sum_of(L.qk), qv = sum_of(L.qv), groups = sum_of(L.gk);
    m.payload_bytes = (qk + qv) * dp + (2 * bh * L.slots - qk - qv) * L.d * es;
    // Per key group its scale, zero (fp16, D each) and kept count (int32); per quantized value
    // its scales and zeros; the kept flags of the current key block and of the value window.
    m.metadata_bytes = groups * (2 * L.d * 2 + 4) + 2 * qv * (L.d / gv_) * 2 +
                       bh * (L.seen % r_ + L.nrv) + L.pos.bytes();
    return m;
  }
  using SlotStore::memory;

  std::unique_ptr<SlotStore> clone_store() const override {
    auto c = std::make_unique<KiviStore>(*this);
    for (Layer& L : c->layers_) {
      for (torch::Tensor* t :
           {&L.kq, &L.ks, &L.kz, &L.kr, &L.vq, &L.vs, &L.vz, &L.vr, &L.kc, &L.ka, &L.va, &L.qk,
            &L.gk, &L.qv})
        *t = clone_rows(*t);
      L.pos = L.pos.clone();
    }
    return c;
  }

 private:
  struct Layer {
    torch::Tensor kq;      // [B, H_kv, capacity, D*bits/8] uint8: quantized keys
    torch::Tensor ks, kz;  // [B, H_kv, capacity/group, D] fp16: per-channel scale, zero
    torch::Tensor kr;      // [B, H_kv, R, D] compute dtype: key residual, by token in the block
    torch::Tensor vq;      // [B, H_kv, capacity, D*bits/8] uint8: quantized values
    torch::Tensor vs, vz;  // [B, H_kv, capacity, D/gv] fp16: per-token scale, zero
    // [B, H_kv, capacity, D] compute dtype: value residual, the last nrv tokens at [v0, v0+nrv)
    torch::Tensor vr;
    // Plain (nothing dropped yet): every head holds nqk quantized keys (nqk/group groups), the
    // nrk = seen % R keys of the current block, nqv quantized values, the nrv = min(R, seen)
    // latest values. nrv and v0 stay the value window's size and offset once ragged.
    int64_t nqk = 0, nrk = 0, nqv = 0, nrv = 0, v0 = 0, seen = 0, slots = 0;
    int64_t b = 0, h = 0, d = 0;
    // Ragged (after the first keep()): per head [B, H] int64 on the CPU, quantized keys qk, key
    // groups gk and quantized values qv (a head's full-precision slots are the rest of `slots`);
    // kc [B, H, capacity/group, 1] int32: kept keys per group (the first gk live); ka [B, H, R]
    // bool: kept keys of the current block (by token); va [B, H, capacity] bool: kept values of
    // the window (by token, indexed as vr).
    bool ragged = false;
    torch::Tensor qk, gk, qv, kc, ka, va;
    SlotPositions pos;
  };

  // ---- plain layout (KIVI as published) --------------------------------------------------------

  void quantize_keys(Layer& L, const torch::Tensor& x) {  // x [B, H, m, D], m % R == 0
    const int64_t m = x.size(2);
    auto u8 = x.options().dtype(torch::kUInt8), f16 = x.options().dtype(torch::kHalf);
    reserve_rows(L.kq, L.nqk, L.nqk + m, L.b, L.h, L.d * bits_ / 8, u8);
    reserve_rows(L.ks, L.nqk / g_, (L.nqk + m) / g_, L.b, L.h, L.d, f16);
    reserve_rows(L.kz, L.nqk / g_, (L.nqk + m) / g_, L.b, L.h, L.d, f16);
    kernels::quantize_cols(rows_f32(x), bits_, g_, L.kq.narrow(2, L.nqk, m),
                           L.ks.narrow(2, L.nqk / g_, m / g_), L.kz.narrow(2, L.nqk / g_, m / g_));
    L.nqk += m;
  }

  // The key residual grows with the keys it holds (doubling, at most R rows), not to R at once:
  // a spec may name R = 2^24 tokens, which at 8 heads of 128 would be 64 GiB per layer up front
  // (fuzz_spec timed out cloning kivi(residual=9096760)'s empty residual). Once full it is R rows.
  void grow_key_block(Layer& L, int64_t used, int64_t need, const torch::TensorOptions& o) {
    const int64_t cap = L.kr.defined() ? L.kr.size(2) : 0;
    if (cap >= need) return;
    const int64_t c = std::min(r_, std::max({need, 2 * cap, int64_t{64}}));
    torch::Tensor grown = torch::empty({L.b, L.h, c, L.d}, o);
    if (used > 0) grown.narrow(2, 0, used).copy_(L.kr.narrow(2, 0, used));
    L.kr = grown;
    if (L.ragged) {  // the kept flags of the block grow with it
      torch::Tensor ka = torch::ones({L.b, L.h, c}, L.ka.options());
      if (used > 0) ka.narrow(2, 0, used).copy_(L.ka.narrow(2, 0, used));
      L.ka = ka;
    }
  }

  // Keys enter the residual; each time it holds R tokens they are quantized and it empties.
  void append_keys(Layer& L, const torch::Tensor& k) {  // k [B, H, T, D]
    const int64_t t = k.size(2);
    int64_t i = 0;
    while (i < t) {
      if (L.nrk == 0 && t - i >= r_) {  // whole residual blocks straight from the input
        const int64_t m = (t - i) / r_ * r_;
        quantize_keys(L, k.narrow(2, i, m));
        i += m;
        continue;
      }
      const int64_t n = std::min(t - i, r_ - L.nrk);
      grow_key_block(L, L.nrk, L.nrk + n, k.options().dtype(compute_));
      L.kr.narrow(2, L.nrk, n).copy_(k.narrow(2, i, n));
      L.nrk += n;
      i += n;
      if (L.nrk == r_) {
        quantize_keys(L, L.kr);
        L.nrk = 0;
      }
    }
  }

  // Values enter the residual; all but the R most recent are quantized per token (in the ragged
  // layout: the kept ones among them, appended to each head's quantized values).
  void append_values(Layer& L, const torch::Tensor& v) {  // v [B, H, T, D]
    const int64_t t = v.size(2);
    if (t == 0) return;
    if (!L.ragged && t > r_) {
      append_values_long(L, v);
      return;
    }
    const int64_t cap = L.vr.defined() ? L.vr.size(2) : 0;
    if (L.v0 + L.nrv + t > cap) {
      // Grows by doubling up to 2R (then the window slides in place), never to 2R at once: R
      // may be 2^24 tokens (see grow_key_block).
      const int64_t new_cap =
          std::max<int64_t>(L.nrv + t, std::min<int64_t>(2 * r_, std::max<int64_t>(64, 2 * cap)));
      torch::Tensor buf =
          new_cap <= cap ? L.vr
                         : torch::empty({L.b, L.h, new_cap, L.d}, v.options().dtype(compute_));
      if (L.nrv > 0) buf.narrow(2, 0, L.nrv).copy_(L.vr.narrow(2, L.v0, L.nrv).clone());
      L.vr = buf;
      if (L.ragged) move_window(L, new_cap <= cap ? cap : new_cap);
      L.v0 = 0;
    }
    L.vr.narrow(2, L.v0 + L.nrv, t).copy_(v);
    if (L.ragged) L.va.narrow(2, L.v0 + L.nrv, t).fill_(true);
    L.nrv += t;
    const int64_t excess = L.nrv - r_;
    if (excess > 0) {
      auto u8 = v.options().dtype(torch::kUInt8), f16 = v.options().dtype(torch::kHalf);
      if (!L.ragged) {
        reserve_rows(L.vq, L.nqv, L.nqv + excess, L.b, L.h, L.d * bits_ / 8, u8);
        reserve_rows(L.vs, L.nqv, L.nqv + excess, L.b, L.h, L.d / gv_, f16);
        reserve_rows(L.vz, L.nqv, L.nqv + excess, L.b, L.h, L.d / gv_, f16);
        kernels::quantize_rows(rows_f32(L.vr.narrow(2, L.v0, excess)), bits_, gv_,
                               L.vq.narrow(2, L.nqv, excess), L.vs.narrow(2, L.nqv, excess),
                               L.vz.narrow(2, L.nqv, excess));
        L.nqv += excess;
      } else {
        torch::Tensor codes = torch::empty({L.b, L.h, excess, L.d * bits_ / 8}, u8);
        torch::Tensor sc = torch::empty({L.b, L.h, excess, L.d / gv_}, f16);
        torch::Tensor zr = torch::empty({L.b, L.h, excess, L.d / gv_}, f16);
        kernels::quantize_rows(rows_f32(L.vr.narrow(2, L.v0, excess)), bits_, gv_, codes, sc, zr);
        torch::Tensor kept = L.va.narrow(2, L.v0, excess);
        if (!kept.all().item<bool>()) {
          torch::Tensor order = true_first(kept);
          codes = gather_rows(codes, order);
          sc = gather_rows(sc, order);
          zr = gather_rows(zr, order);
        }
        const int64_t hi = max_of(L.qv);
        reserve_rows(L.vq, hi, hi + excess, L.b, L.h, L.d * bits_ / 8, u8);
        reserve_rows(L.vs, hi, hi + excess, L.b, L.h, L.d / gv_, f16);
        reserve_rows(L.vz, hi, hi + excess, L.b, L.h, L.d / gv_, f16);
        write_at(L.vq, L.qv, codes);
        write_at(L.vs, L.qv, sc);
        write_at(L.vz, L.qv, zr);
        L.qv = L.qv + kept.sum(-1).to(torch::kCPU, torch::kLong);
      }
      L.v0 += excess;
      L.nrv -= excess;
    }
    if (L.vr.size(2) > 2 * r_) {  // a long chunk grew the buffer: give the slack back
      torch::Tensor buf = torch::empty({L.b, L.h, 2 * r_, L.d}, L.vr.options());
      buf.narrow(2, 0, L.nrv).copy_(L.vr.narrow(2, L.v0, L.nrv));
      L.vr = buf;
      if (L.ragged) move_window(L, 2 * r_);
      L.v0 = 0;
    }
  }

  // Plain layout, a chunk longer than the window (a prompt): the window's values and the chunk's
  // first T - R are quantized where they lie (the chunk's straight from the input, not copied
  // through the window first), and the chunk's last R become the window. The same codes as the
  // general path above, without a copy of the whole chunk.
  void append_values_long(Layer& L, const torch::Tensor& v) {  // v [B, H, T, D], T > R
    const int64_t t = v.size(2), m = t - r_, excess = L.nrv + m;
    auto u8 = v.options().dtype(torch::kUInt8), f16 = v.options().dtype(torch::kHalf);
    reserve_rows(L.vq, L.nqv, L.nqv + excess, L.b, L.h, L.d * bits_ / 8, u8);
    reserve_rows(L.vs, L.nqv, L.nqv + excess, L.b, L.h, L.d / gv_, f16);
    reserve_rows(L.vz, L.nqv, L.nqv + excess, L.b, L.h, L.d / gv_, f16);
    auto quantize = [&](const torch::Tensor& x, int64_t at) {  // x [B, H, n, D], compute dtype
      const int64_t n = x.size(2);
      kernels::quantize_rows(rows_f32(x), bits_, gv_, L.vq.narrow(2, at, n), L.vs.narrow(2, at, n),
                             L.vz.narrow(2, at, n));
    };
    if (L.nrv > 0) quantize(L.vr.narrow(2, L.v0, L.nrv), L.nqv);
    quantize(v.narrow(2, 0, m).to(compute_), L.nqv + L.nrv);
    L.nqv += excess;
    // The window in a buffer of at least R rows (2R when one is made, as the general path leaves).
    if (!L.vr.defined() || L.vr.size(2) < r_)
      L.vr = torch::empty({L.b, L.h, 2 * r_, L.d}, v.options().dtype(compute_));
    L.vr.narrow(2, 0, r_).copy_(v.narrow(2, m, r_));
    L.v0 = 0;
    L.nrv = r_;
  }

  // The value window's kept flags follow vr to a buffer of `cap` rows starting at 0.
  void move_window(Layer& L, int64_t cap) const {
    torch::Tensor va = torch::ones({L.b, L.h, cap}, L.va.options());
    if (L.nrv > 0) va.narrow(2, 0, L.nrv).copy_(L.va.narrow(2, L.v0, L.nrv));
    L.va = va;
  }

  // Dequantized keys and values [B, H, S, D] float32 (quantized part, then the residual).
  KVView dense_f32(const Layer& L) const {
    KVView v;
    const int64_t s = L.nqk + L.nrk;
    if (s == 0) return v;
    auto f32 = L.pos.view().options().dtype(torch::kFloat32);
    v.k = torch::empty({L.b, L.h, s, L.d}, f32);
    v.v = torch::empty({L.b, L.h, s, L.d}, f32);
    if (L.nqk > 0)
      kernels::dequantize_cols(L.kq.narrow(2, 0, L.nqk), L.ks.narrow(2, 0, L.nqk / g_),
                               L.kz.narrow(2, 0, L.nqk / g_), bits_, g_, v.k.narrow(2, 0, L.nqk));
    if (L.nrk > 0) v.k.narrow(2, L.nqk, L.nrk).copy_(L.kr.narrow(2, 0, L.nrk));
    if (L.nqv > 0)
      kernels::dequantize_rows(L.vq.narrow(2, 0, L.nqv), L.vs.narrow(2, 0, L.nqv),
                               L.vz.narrow(2, 0, L.nqv), bits_, gv_, v.v.narrow(2, 0, L.nqv));
    if (L.nrv > 0) v.v.narrow(2, L.nqv, L.nrv).copy_(L.vr.narrow(2, L.v0, L.nrv));
    v.pos = L.pos.view();
    return v;
  }

  // ---- ragged layout (after the first keep()) -------------------------------------------------

  void make_ragged(Layer& L) const {
    auto cpu = torch::TensorOptions().dtype(torch::kLong);
    L.qk = torch::full({L.b, L.h}, L.nqk, cpu);
    L.gk = torch::full({L.b, L.h}, L.nqk / g_, cpu);
    L.qv = torch::full({L.b, L.h}, L.nqv, cpu);
    auto dev = L.pos.view().options();
    if (L.ks.defined()) {
      L.kc = torch::zeros({L.b, L.h, L.ks.size(2), 1}, dev.dtype(torch::kInt));
      L.kc.narrow(2, 0, L.nqk / g_).fill_(static_cast<int>(g_));
    }
    // As large as the residual buffers (grown with them), not R or 2R at once.
    L.ka = torch::ones({L.b, L.h, L.kr.defined() ? L.kr.size(2) : 0}, dev.dtype(torch::kBool));
    L.va = torch::ones({L.b, L.h, L.vr.defined() ? L.vr.size(2) : 0}, dev.dtype(torch::kBool));
    L.ragged = true;
  }

  // Per quantized key slot j < q its group's index [B, H, q] (from the groups' kept counts).
  torch::Tensor key_groups(const Layer& L, int64_t q) const {
    const int64_t g = max_of(L.gk);
    torch::Tensor cnt = L.kc.narrow(2, 0, g).squeeze(-1).to(torch::kLong);  // [B, H, G]
    torch::Tensor live = torch::arange(g, cnt.options()).view({1, 1, g}) <
                         L.gk.to(cnt.device()).view({L.b, L.h, 1});
    torch::Tensor ends = torch::where(live, cnt, torch::zeros_like(cnt)).cumsum(2).contiguous();
    torch::Tensor j = torch::arange(q, cnt.options()).view({1, 1, q}).expand({L.b, L.h, q});
    return torch::searchsorted(ends, j.contiguous(), /*out_int32=*/false, /*right=*/true)
        .clamp_max(g - 1);
  }

  // Appends quantized keys: codes [B, H, n, D*bits/8] (each head's first add_q[b, h] rows kept),
  // scale/zero [B, H, ng, D] and counts [B, H, ng, 1] int32 of groups (the first add_g live).
  void push_keys(Layer& L, const torch::Tensor& codes, const torch::Tensor& sc,
                 const torch::Tensor& zr, const torch::Tensor& cnt, const torch::Tensor& add_q,
                 const torch::Tensor& add_g) {
    const int64_t n = codes.size(2), ng = sc.size(2), hq = max_of(L.qk), hg = max_of(L.gk);
    reserve_rows(L.kq, hq, hq + n, L.b, L.h, codes.size(3), codes.options());
    reserve_rows(L.ks, hg, hg + ng, L.b, L.h, L.d, sc.options());
    reserve_rows(L.kz, hg, hg + ng, L.b, L.h, L.d, sc.options());
    reserve_rows(L.kc, hg, hg + ng, L.b, L.h, 1, cnt.options());
    write_at(L.kq, L.qk, codes);
    write_at(L.ks, L.gk, sc);
    write_at(L.kz, L.gk, zr);
    write_at(L.kc, L.gk, cnt);
    L.qk = L.qk + add_q;
    L.gk = L.gk + add_g;
  }

  // Quantizes the kept keys of the complete block in kr (flags ka), in the block's groups.
  void flush_keys(Layer& L) {
    torch::Tensor x = rows_f32(L.kr);
    const torch::Tensor& kept = L.ka;
    const int64_t ng = r_ / g_;
    const bool all = kept.all().item<bool>();
    torch::Tensor grouped = kept.view({L.b, L.h, ng, g_});
    if (!all) {  // a dropped key takes a kept key of its group's place (same min and max)
      torch::Tensor first = grouped.to(torch::kInt).argmax(-1);  // [B, H, ng]
      torch::Tensor ar = torch::arange(r_, first.options().dtype(torch::kLong));
      torch::Tensor fill = ar - ar.remainder(g_) +
                           first.unsqueeze(-1).expand({L.b, L.h, ng, g_}).reshape({L.b, L.h, r_});
      x = gather_rows(x, torch::where(kept, ar, fill));
    }
    auto u8 = x.options().dtype(torch::kUInt8), f16 = x.options().dtype(torch::kHalf);
    torch::Tensor codes = torch::empty({L.b, L.h, r_, L.d * bits_ / 8}, u8);
    torch::Tensor sc = torch::empty({L.b, L.h, ng, L.d}, f16), zr = torch::empty_like(sc);
    kernels::quantize_cols(x, bits_, g_, codes, sc, zr);
    torch::Tensor cnt = grouped.sum(-1);  // [B, H, ng] int64
    if (!all) {
      codes = gather_rows(codes, true_first(kept));
      torch::Tensor order = true_first(cnt > 0);
      sc = gather_rows(sc, order);
      zr = gather_rows(zr, order);
      cnt = cnt.gather(2, order);
    }
    push_keys(L, codes, sc, zr, cnt.to(torch::kInt).unsqueeze(-1),
              kept.sum(-1).to(torch::kCPU, torch::kLong),
              (cnt > 0).sum(-1).to(torch::kCPU, torch::kLong));
    L.ka.fill_(true);
  }

  // As append_keys, by token time: the block's keys (kept or not) fill kr; complete blocks are
  // quantized (flush_keys), whole blocks of the input straight away.
  void append_keys_ragged(Layer& L, const torch::Tensor& k) {  // k [B, H, T, D]
    const int64_t t = k.size(2);
    int64_t i = 0, m = L.seen % r_;
    while (i < t) {
      if (m == 0 && t - i >= r_) {
        const int64_t n = (t - i) / r_ * r_;
        torch::Tensor x = rows_f32(k.narrow(2, i, n));
        auto u8 = x.options().dtype(torch::kUInt8), f16 = x.options().dtype(torch::kHalf);
        torch::Tensor codes = torch::empty({L.b, L.h, n, L.d * bits_ / 8}, u8);
        torch::Tensor sc = torch::empty({L.b, L.h, n / g_, L.d}, f16), zr = torch::empty_like(sc);
        kernels::quantize_cols(x, bits_, g_, codes, sc, zr);
        auto cpu = torch::TensorOptions().dtype(torch::kLong);
        push_keys(L, codes, sc, zr,
                  torch::full({L.b, L.h, n / g_, 1}, static_cast<int>(g_),
                              x.options().dtype(torch::kInt)),
                  torch::full({L.b, L.h}, n, cpu), torch::full({L.b, L.h}, n / g_, cpu));
        i += n;
        continue;
      }
      const int64_t n = std::min(t - i, r_ - m);
      grow_key_block(L, m, m + n, k.options().dtype(compute_));
      L.kr.narrow(2, m, n).copy_(k.narrow(2, i, n));
      L.ka.narrow(2, m, n).fill_(true);
      m += n;
      i += n;
      if (m == r_) {
        flush_keys(L);
        m = 0;
      }
    }
  }

  void keep_keys(Layer& L, const torch::Tensor& idx) {
    const int64_t n = idx.size(2), q = max_of(L.qk), m = L.seen % r_;
    torch::Tensor nq = L.qk.to(idx.device()).view({L.b, L.h, 1});
    torch::Tensor is_q = idx < nq;  // [B, H, n]
    if (q > 0) {
      torch::Tensor qi = idx.clamp_max(q - 1);
      torch::Tensor gid = key_groups(L, q).gather(2, qi);  // each kept slot's group
      const int64_t g = max_of(L.gk);
      L.kq.narrow(2, 0, std::min(n, q))
          .copy_(gather_rows(L.kq.narrow(2, 0, q), qi).narrow(2, 0, std::min(n, q)));
      torch::Tensor cnt = torch::zeros({L.b, L.h, g}, idx.options().dtype(torch::kLong));
      cnt.scatter_add_(2, gid, is_q.to(torch::kLong));
      torch::Tensor order = true_first(cnt > 0);  // live groups first, in order
      L.ks.narrow(2, 0, g).copy_(gather_rows(L.ks.narrow(2, 0, g), order));
      L.kz.narrow(2, 0, g).copy_(gather_rows(L.kz.narrow(2, 0, g), order));
      L.kc.narrow(2, 0, g).copy_(cnt.gather(2, order).to(torch::kInt).unsqueeze(-1));
      L.gk = (cnt > 0).sum(-1).to(torch::kCPU, torch::kLong);
    }
    if (m > 0) {  // the kept keys of the current block, by token
      torch::Tensor tok = true_first(L.ka.narrow(2, 0, m)).gather(2, (idx - nq).clamp(0, m - 1));
      torch::Tensor kept = torch::zeros({L.b, L.h, m}, idx.options().dtype(torch::kLong));
      kept.scatter_add_(2, tok, (~is_q).to(torch::kLong));
      L.ka.narrow(2, 0, m).copy_(kept > 0);
    }
    L.qk = is_q.sum(-1).to(torch::kCPU, torch::kLong);
  }

  void keep_values(Layer& L, const torch::Tensor& idx) {
    const int64_t n = idx.size(2), q = max_of(L.qv), w = L.nrv;
    torch::Tensor nq = L.qv.to(idx.device()).view({L.b, L.h, 1});
    torch::Tensor is_q = idx < nq;
    if (q > 0) {
      torch::Tensor qi = idx.clamp_max(q - 1);
      for (torch::Tensor* t : {&L.vq, &L.vs, &L.vz})
        t->narrow(2, 0, std::min(n, q))
            .copy_(gather_rows(t->narrow(2, 0, q), qi).narrow(2, 0, std::min(n, q)));
    }
    if (w > 0) {  // the kept values of the window, by token
      torch::Tensor win = L.va.narrow(2, L.v0, w);
      torch::Tensor tok = true_first(win).gather(2, (idx - nq).clamp(0, w - 1));
      torch::Tensor kept = torch::zeros({L.b, L.h, w}, idx.options().dtype(torch::kLong));
      kept.scatter_add_(2, tok, (~is_q).to(torch::kLong));
      win.copy_(kept > 0);
    }
    L.qv = is_q.sum(-1).to(torch::kCPU, torch::kLong);
  }

  KVView dense_f32_ragged(const Layer& L) const {
    KVView v;
    const int64_t s = L.slots;
    if (s == 0) return v;
    auto f32 = L.pos.view().options().dtype(torch::kFloat32);
    torch::Tensor kq, kr, vq, vr;
    if (const int64_t q = max_of(L.qk); q > 0) {  // each slot with its group's scale and zero
      torch::Tensor gid = key_groups(L, q);
      const int64_t g = max_of(L.gk);
      kq = torch::empty({L.b, L.h, q, L.d}, f32);
      kernels::dequantize_cols(L.kq.narrow(2, 0, q), gather_rows(L.ks.narrow(2, 0, g), gid),
                               gather_rows(L.kz.narrow(2, 0, g), gid), bits_, 1, kq);
    }
    if (const int64_t m = L.seen % r_; m > 0)
      kr = gather_rows(L.kr.narrow(2, 0, m), true_first(L.ka.narrow(2, 0, m))).to(torch::kFloat32);
    if (const int64_t q = max_of(L.qv); q > 0) {
      vq = torch::empty({L.b, L.h, q, L.d}, f32);
      kernels::dequantize_rows(L.vq.narrow(2, 0, q), L.vs.narrow(2, 0, q), L.vz.narrow(2, 0, q),
                               bits_, gv_, vq);
    }
    if (L.nrv > 0)
      vr = gather_rows(L.vr.narrow(2, L.v0, L.nrv), true_first(L.va.narrow(2, L.v0, L.nrv)))
               .to(torch::kFloat32);
    v.k = assemble(kq, L.qk, kr, s);
    v.v = assemble(vq, L.qv, vr, s);
    v.pos = L.pos.view();
    return v;
  }

  // Dispatch by device: a CUDA query over a plain-layout cache held on that same device runs
  // the CUDA kernel (kernels/cuda/dispatch.h, on the legacy default stream); anything else on a
  // GPU is refused in one line, never read from the wrong memory. (append() still quantizes on
  // the CPU only, so today a store never holds device tensors.)
  std::optional<AttendResult> attend_cuda(int layer, const torch::Tensor& q, double scale) const {
#ifdef KVB_HAVE_CUDA_KERNELS
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    const std::vector<const torch::Tensor*> parts = {&L.kq, &L.ks, &L.kz, &L.kr,
                                                     &L.vq, &L.vs, &L.vz, &L.vr};
    const bool on_device = std::all_of(parts.begin(), parts.end(), [&](const torch::Tensor* t) {
      return !t->defined() || t->device() == q.device();
    });
    if (on_device && L.nqk + L.nrk == 0) return std::nullopt;  // as on the CPU
    // One decode query per head, as the CPU fused path: the kernel applies no causal mask
    // within a chunk of T > 1 queries.
    if (on_device && !L.ragged && q.dim() == 4 && q.size(2) == 1 &&
        q.scalar_type() == torch::kFloat32 && compute_ == torch::kFloat32) {
      auto rows = [](const torch::Tensor& t) {
        return t.defined() ? cuda::DeviceRows{t.data_ptr(), t.stride(0), t.stride(1)}
                           : cuda::DeviceRows{};
      };
      cuda::KiviCacheView c;
      c.bits = bits_;
      c.group = g_;
      c.value_group = gv_;
      c.batch = L.b;
      c.kv_heads = L.h;
      c.head_dim = L.d;
      c.n_quant_keys = L.nqk;
      c.n_residual_keys = L.nrk;
      c.n_quant_values = L.nqv;
      c.n_residual_values = L.nrv;
      c.key_codes = rows(L.kq);  // rows from 0; value residual rows from v0
      c.key_scale = rows(L.ks);
      c.key_zero = rows(L.kz);
      c.key_residual = rows(L.kr);
      c.value_codes = rows(L.vq);
      c.value_scale = rows(L.vs);
      c.value_zero = rows(L.vz);
      c.value_residual = L.nrv > 0 ? rows(L.vr.narrow(2, L.v0, L.nrv)) : cuda::DeviceRows{};
      torch::Tensor qc = q.contiguous();
      cuda::DecodeQuery dq;
      dq.q = qc.data_ptr<float>();
      dq.q_heads = q.size(1);
      dq.rows = q.size(2);
      dq.scale = scale;
      dq.device = q.device().index();
      torch::Tensor out = torch::empty(q.sizes(), q.options());
      torch::Tensor lse = torch::empty({q.size(0), q.size(1), q.size(2)}, q.options());
      dq.out = out.data_ptr<float>();
      dq.lse = lse.data_ptr<float>();
      try {
        const size_t ws = cuda::kivi_decode_workspace_bytes(c, dq);
        torch::Tensor work =
            torch::empty({static_cast<int64_t>(ws)}, q.options().dtype(torch::kUInt8));
        cuda::kivi_decode_attention(c, dq, work.data_ptr(), ws);
      } catch (const std::exception& e) {
        throw Error(spec_ + ": " + e.what());
      }
      return AttendResult{out, lse};
    }
    constexpr const char* why = "KIVI's CUDA attention needs one fp32 decode query per head "
                                "over a plain-layout fp32 cache on the query's device";
#else
    constexpr const char* why = "this build has no CUDA kernels; KIVI runs on the CPU";
#endif
    throw Error(spec_ + ": no kernel for device " + q.device().str() + " (" + why + ")");
  }

  // Codes, scales and residuals live in host memory and every kernel here reads it.
  void require_cpu(const torch::Tensor& t) const {
    if (t.defined() && !t.device().is_cpu())
      throw Error(spec_ + ": no kernel for device " + t.device().str() +
                  " (KIVI's quantization and fused attention run on the CPU only)");
  }

  std::string spec_;
  int bits_;
  int64_t g_, gv_, r_;
  torch::ScalarType compute_ = torch::kFloat32;
  std::vector<Layer> layers_;
};

class KiviMethod : public StorageMethod {
 public:
  explicit KiviMethod(const StageSpec& stage)
      : StorageMethod(stage), bits_(static_cast<int>(spec_int(stage, "bits"))),
        group_(spec_int(stage, "group")), residual_(spec_int(stage, "residual")) {}

  std::unique_ptr<SlotStore> make_store(const ModelShape& shape) const override {
    return std::make_unique<KiviStore>(shape, spec(), bits_, group_, value_group(shape.head_dim),
                                       residual_);
  }
  bool promise_exact_after_any_drops() const override { return false; }

  // Without drops, exact: floor(S/R)*R keys and max(0, S-R) values quantized. With drops (a
  // chain), by KIVI's rule in token time (top of the file): the full-precision keys are the kept
  // tokens of [floor(L/R)*R, L), the full-precision values those of [L-R, L), the key groups the
  // blocks of `group` tokens below floor(L/R)*R holding a kept key — each counted by the
  // selectors' promise of what they keep where (KeptSlots). Exact where that is exact (StreamingLLM
  // alone; any selector that keeps the R most recent tokens, such as H2O with recent >= R, for the
  // payload); else an upper bound of payload and of total bytes (a dropped full-precision slot
  // leaves a quantized one in its stead, cheaper).
  MemoryUse layer_promise(const ModelShape& shape, const KeptSlots& kept,
                          torch::ScalarType compute) const override {
    const int64_t h = shape.n_head_kv, d = shape.head_dim, gv = value_group(d);
    const int64_t es = static_cast<int64_t>(c10::elementSize(compute));
    const int64_t slots = kept.slots, dp = d * bits_ / 8;
    MemoryUse m;
    m.slots = h * slots;
    m.tokens_seen = slots;
    if (!kept.dropped()) {
      const int64_t nqk = slots / residual_ * residual_, nrk = slots - nqk;
      const int64_t nqv = std::max<int64_t>(0, slots - residual_), nrv = slots - nqv;
      m.payload_bytes = h * ((nqk + nqv) * dp + (nrk + nrv) * d * es);
      m.metadata_bytes = h * (2 * (nqk / group_) * d * 2 + 2 * nqv * (d / gv) * 2);
      return m;
    }
    const int64_t l = kept.tokens, lq = l / residual_ * residual_, w = std::min(residual_, l);
    if (!kept.kept_in) {
      // Counts only (a chain of several selectors, whose stages act in each other's stead): which
      // tokens were kept is unknown, so payload and metadata are bounded apart. Payload: every
      // kept key and value in full precision (d * es >= d * bits / 8 always). Metadata: every
      // kept value quantized, with its scales, and every key group touched. fuzz_spec found
      // streaming(sink=0,window=3)+h2o(budget=5)+kivi(bits=4,group=2,residual=6) holding twice
      // the payload the count-based split promised.
      m.payload_bytes = h * 2 * slots * d * es;
      m.metadata_bytes = h * (kept.blocks_touched(lq, group_) * (2 * d * 2 + 4) +
                              2 * slots * (d / gv) * 2 + (l - lq) + w);
      return m;
    }
    const int64_t nrk = kept.in(lq, l);
    // Payload: the most full-precision keys and values (a full-precision row is never smaller
    // than its codes). Metadata: as many quantized values as that leaves, unless a quantized
    // value with its scales costs more than a full-precision one (a tiny group in bf16/fp16),
    // then every kept value quantized. Either way payload and payload + metadata are bounds
    // (fuzz_spec found snapkv(budget=8,window=2)+kivi(bits=4,group=2,residual=4) in bf16 over
    // the payload promise when the split was taken from the total's worst case alone; and
    // streaming(sink=0,window=3)+kivi(bits=4,group=2,residual=4), whose promise is exact, over
    // the metadata it held when that worst case was applied to exactly known tokens too).
    const bool fp_costs_more = d * es >= dp + 4 * (d / gv);
    const int64_t nrv = kept.in(l - w, l);
    const int64_t nqk = slots - nrk, nqv = slots - nrv;
    // With the kept tokens known exactly (StreamingLLM's rule), nqv is what is held.
    const int64_t nqv_meta = fp_costs_more || kept.kept_exact ? nqv : slots;
    const int64_t groups = kept.blocks_touched(lq, group_);
    m.payload_bytes = h * ((nqk + nqv) * dp + (nrk + nrv) * d * es);
    m.metadata_bytes =
        h * (groups * (2 * d * 2 + 4) + 2 * nqv_meta * (d / gv) * 2 + (l - lq) + w);
    return m;
  }

  // The value group really used, when the head is narrower than `group`.
  StageSpec effective_stage(const ModelShape& shape) const override {
    StageSpec s = stage();
    if (value_group(shape.head_dim) != group_)
      s.params["value_group"] = std::to_string(value_group(shape.head_dim));
    return s;
  }

 private:
  // min(group, D); throws if it does not divide D.
  int64_t value_group(int64_t head_dim) const {
    const int64_t g = std::min(group_, head_dim);
    KVB_INPUT_CHECK(head_dim % g == 0 && g % (8 / bits_) == 0, spec(), ": head_dim ", head_dim,
                    " is not a multiple of the value group (", g, ")");
    return g;
  }

  int bits_;
  int64_t group_, residual_;
};

}  // namespace

MethodEntry kivi_entry() {
  return {
      .name = "kivi",
      .family = "quant",
      .help =
          "KIVI: keys quantized per channel over groups of `group` tokens, values per token "
          "over groups of `group` channels, asymmetric with fp16 scale/zero; the most recent "
          "tokens stay in full precision (keys until `residual` accumulate, values the last "
          "`residual`).",
      .params = {{"bits", "int", "2", {"2", "4"}, 0, 0, "bits per element"},
                 {"group",
                  "int",
                  "32",
                  {},
                  1,
                  kMaxSpecGroup,
                  "tokens per key group; channels per value group"},
                 {"residual",
                  "int",
                  "128",
                  {},
                  1,
                  kMaxSpecTokens,
                  "full-precision recent tokens (multiple of group)"}},
      .make = StorageFactory([](const StageSpec& s) { return std::make_unique<KiviMethod>(s); }),
      .finalize =
          [](const std::string& text, StageSpec& s) {
            if (spec_int(s, "residual") % spec_int(s, "group") != 0)
              stage_fail(text, s, "residual must be a multiple of group");
          },
      .contract = {.examples = {"kivi", "kivi(bits=4,group=16,residual=64)"},
                   .view_tolerance =
                       [](const StageSpec& s) { return spec_int(s, "bits") == 2 ? 0.6 : 0.15; },
                   .lossless = {"kivi(residual=64)", "kivi(bits=4,group=16,residual=48)"},
                   .compressing = {"kivi(bits=2,group=8,residual=8)"}},
  };
}

}  // namespace kvb
