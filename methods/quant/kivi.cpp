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
// In a chain, keep() re-packs the kept slots into the layout KIVI has for that many tokens: kept
// values keep their codes' values (per-token re-quantization of a dequantized row is exact up to
// fp16 rounding); kept keys that were already quantized are quantized again in new groups.
#include <algorithm>

#include "common/check.h"
#include "kernels/cpu/quant_kernels.h"
#include "methods/registry.h"

namespace kvb {
namespace {

// x as float32 with contiguous rows (no copy when it already is).
torch::Tensor rows_f32(const torch::Tensor& x) {
  torch::Tensor f = x.to(torch::kFloat32);
  if (f.stride(3) == 1 && (f.size(2) <= 1 || f.stride(2) == f.size(3))) return f;
  return f.contiguous();
}

class KiviStore : public SlotStore {
 public:
  KiviStore(const ModelShape& shape, int bits, int64_t group, int64_t value_group, int64_t residual)
      : bits_(bits),
        g_(group),
        gv_(value_group),
        r_(residual),
        layers_(static_cast<size_t>(shape.n_layers)) {}

  void append(int layer, const KVAppend& a) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    L.b = a.k.size(0);
    L.h = a.k.size(1);
    L.d = a.k.size(3);
    compute_ = a.k.scalar_type();
    append_keys(L, a.k);
    append_values(L, a.v);
    L.pos.append(a.pos, L.b, L.h);
    L.seen += a.k.size(2);
  }

  KVView view(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    KVView v = dense_f32(L);
    if (v.k.defined() && compute_ != torch::kFloat32) {
      v.k = v.k.to(compute_);
      v.v = v.v.to(compute_);
    }
    return v;
  }

  int64_t slots(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    return L.nqk + L.nrk;
  }
  torch::Tensor positions(int layer) const override {
    return layers_.at(static_cast<size_t>(layer)).pos.view();
  }
  int n_layers() const override { return static_cast<int>(layers_.size()); }

  void keep(int layer, const torch::Tensor& idx) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    KVView v = dense_f32(L);
    const int64_t n = idx.size(2);
    torch::Tensor e = idx.unsqueeze(-1).expand({L.b, L.h, n, L.d});
    torch::Tensor k = v.k.gather(2, e), val = v.v.gather(2, e);
    torch::Tensor pos = L.pos.view().gather(2, idx);
    L.nqk = L.nrk = L.nqv = L.nrv = L.v0 = 0;
    append_keys(L, k);
    append_values(L, val);
    L.pos.set(pos);
  }

  MemoryUse memory(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    MemoryUse m;
    m.tokens_seen = L.seen;
    const int64_t bh = L.b * L.h, dp = L.d * bits_ / 8;
    const int64_t es = static_cast<int64_t>(c10::elementSize(compute_));
    m.payload_bytes = bh * ((L.nqk + L.nqv) * dp + (L.nrk + L.nrv) * L.d * es);
    m.metadata_bytes =
        bh * (2 * (L.nqk / g_) * L.d * 2 + 2 * L.nqv * (L.d / std::max<int64_t>(gv_, 1)) * 2) +
        L.pos.bytes();
    m.slots = bh * (L.nqk + L.nrk);
    return m;
  }
  using SlotStore::memory;

  std::unique_ptr<SlotStore> clone_store() const override {
    auto c = std::make_unique<KiviStore>(*this);
    for (Layer& L : c->layers_) {
      for (torch::Tensor* t : {&L.kq, &L.ks, &L.kz, &L.kr, &L.vq, &L.vs, &L.vz, &L.vr})
        *t = clone_rows(*t);
      L.pos = L.pos.clone();
    }
    return c;
  }

 private:
  struct Layer {
    torch::Tensor kq;      // [B, H_kv, capacity, D*bits/8] uint8: quantized keys
    torch::Tensor ks, kz;  // [B, H_kv, capacity/group, D] fp16: per-channel scale, zero
    torch::Tensor kr;      // [B, H_kv, R, D] compute dtype: key residual
    torch::Tensor vq;      // [B, H_kv, capacity, D*bits/8] uint8: quantized values
    torch::Tensor vs, vz;  // [B, H_kv, capacity, D/gv] fp16: per-token scale, zero
    // [B, H_kv, capacity, D] compute dtype: value residual, live at [v0, v0+nrv)
    torch::Tensor vr;
    int64_t nqk = 0, nrk = 0, nqv = 0, nrv = 0, v0 = 0, seen = 0;
    int64_t b = 0, h = 0, d = 0;
    SlotPositions pos;
  };

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
      if (!L.kr.defined()) L.kr = torch::empty({L.b, L.h, r_, L.d}, k.options().dtype(compute_));
      const int64_t n = std::min(t - i, r_ - L.nrk);
      L.kr.narrow(2, L.nrk, n).copy_(k.narrow(2, i, n));
      L.nrk += n;
      i += n;
      if (L.nrk == r_) {
        quantize_keys(L, L.kr);
        L.nrk = 0;
      }
    }
  }

  // Values enter the residual; all but the R most recent are quantized per token.
  void append_values(Layer& L, const torch::Tensor& v) {  // v [B, H, T, D]
    const int64_t t = v.size(2);
    if (t == 0) return;
    const int64_t cap = L.vr.defined() ? L.vr.size(2) : 0;
    if (L.v0 + L.nrv + t > cap) {
      const int64_t new_cap = std::max<int64_t>(2 * r_, L.nrv + t);
      torch::Tensor buf = new_cap <= cap
                              ? L.vr
                              : torch::empty({L.b, L.h, new_cap, L.d}, v.options().dtype(compute_));
      if (L.nrv > 0) buf.narrow(2, 0, L.nrv).copy_(L.vr.narrow(2, L.v0, L.nrv).clone());
      L.vr = buf;
      L.v0 = 0;
    }
    L.vr.narrow(2, L.v0 + L.nrv, t).copy_(v);
    L.nrv += t;
    const int64_t excess = L.nrv - r_;
    if (excess > 0) {
      auto u8 = v.options().dtype(torch::kUInt8), f16 = v.options().dtype(torch::kHalf);
      reserve_rows(L.vq, L.nqv, L.nqv + excess, L.b, L.h, L.d * bits_ / 8, u8);
      reserve_rows(L.vs, L.nqv, L.nqv + excess, L.b, L.h, L.d / gv_, f16);
      reserve_rows(L.vz, L.nqv, L.nqv + excess, L.b, L.h, L.d / gv_, f16);
      kernels::quantize_rows(rows_f32(L.vr.narrow(2, L.v0, excess)), bits_, gv_,
                             L.vq.narrow(2, L.nqv, excess), L.vs.narrow(2, L.nqv, excess),
                             L.vz.narrow(2, L.nqv, excess));
      L.nqv += excess;
      L.v0 += excess;
      L.nrv -= excess;
    }
    if (L.vr.size(2) > 2 * r_) {  // a long chunk grew the buffer: give the slack back
      torch::Tensor buf = torch::empty({L.b, L.h, 2 * r_, L.d}, L.vr.options());
      buf.narrow(2, 0, L.nrv).copy_(L.vr.narrow(2, L.v0, L.nrv));
      L.vr = buf;
      L.v0 = 0;
    }
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
    return std::make_unique<KiviStore>(shape, bits_, group_, value_group(shape.head_dim),
                                       residual_);
  }

  MemoryUse layer_promise(const ModelShape& shape, int64_t slots,
                          torch::ScalarType compute) const override {
    const int64_t h = shape.n_head_kv, d = shape.head_dim, gv = value_group(d);
    const int64_t es = static_cast<int64_t>(c10::elementSize(compute));
    const int64_t nqk = slots / residual_ * residual_, nrk = slots - nqk;
    const int64_t nqv = std::max<int64_t>(0, slots - residual_), nrv = slots - nqv;
    MemoryUse m;
    m.payload_bytes = h * ((nqk + nqv) * d * bits_ / 8 + (nrk + nrv) * d * es);
    m.metadata_bytes = h * (2 * (nqk / group_) * d * 2 + 2 * nqv * (d / gv) * 2);
    m.slots = h * slots;
    m.tokens_seen = slots;
    return m;
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
      .help = "KIVI: keys quantized per channel over groups of `group` tokens, values per token "
              "over groups of `group` channels, asymmetric with fp16 scale/zero; the most recent "
              "tokens stay in full precision (keys until `residual` accumulate, values the last "
              "`residual`).",
      .params = {{"bits", "int", "2", {"2", "4"}, 0, 0, "bits per element"},
                 {"group", "int", "32", {}, 1, 0, "tokens per key group; channels per value group"},
                 {"residual", "int", "128", {}, 1, 0,
                  "full-precision recent tokens (multiple of group)"}},
      .make = StorageFactory([](const StageSpec& s) { return std::make_unique<KiviMethod>(s); }),
      .finalize =
          [](const std::string& text, StageSpec& s) {
            if (spec_int(s, "residual") % spec_int(s, "group") != 0)
              stage_fail(text, s, "residual must be a multiple of group");
          },
      .contract = {.examples = {"kivi", "kivi(bits=4,group=16,residual=64)"},
                   .view_tolerance = [](const StageSpec& s) {
                     return spec_int(s, "bits") == 2 ? 0.6 : 0.15;
                   },
                   .lossless = {"kivi(residual=64)", "kivi(bits=4,group=16,residual=48)"},
                   .compressing = {"kivi(bits=2,group=8,residual=8)"}},
  };
}

}  // namespace kvb
