// `gear(bits=4|2, rank=4, sparsity=0.02, buffer=64, group=64)`: GEAR (Kang et al. 2024,
// opengear-project/GEAR): X ~ D + L + S per block of tokens, for keys and values alike:
//   S  sparse outliers: in every token row the floor(sparsity*D) entries of largest magnitude,
//      kept in fp16 with their channel index (uint8 when D <= 256, else int16);
//   D  uniform quantization of X - S (outliers zeroed): GEAR's per-token group-wise variant
//      (asymmetric, `bits`, groups of `group` channels with fp16 scale and zero), so every token
//      is a row of its own (not GEAR-KIVI's per-channel key groups);
//   L  rank-r approximation of the quantization residual X - S - D (outlier entries zeroed) of
//      each block of `buffer` tokens per KV head: A [buffer, r] and B [D, r] in fp16 from a
//      truncated SVD (GEAR uses power iteration, an approximation of the same factors).
// GEAR streams: new tokens wait in a full-precision buffer (compute dtype, like KIVI's residual)
// and are compressed `buffer` at a time when it fills. After L tokens nq = floor(L/nb)*nb tokens
// are compressed in nq/nb blocks and L - nq wait, whatever the chunking. Reading reconstructs
// D + A B^T with the outliers written back.
//
// Bytes per KV head (r = min(rank, buffer, D), k = floor(sparsity*D), X = D*bits/8, ib the index
// bytes): payload 2*(nq*(X + 2r + 2k) + nq/nb*2*D*r + (L-nq)*D*es) — codes, low-rank factors and
// outlier values; metadata 2*nq*((D/group)*4 + k*ib) — scales, zeros, outlier indices. Exact
// alone. In a chain, dropped slots take their rows away (a block's B stays while the store
// lives); heads that kept different numbers of compressed rows are evened out by turning the
// extra compressed rows of the longer heads back into full-precision rows (their reconstructed
// values), and each compressed row then carries its block index (int32): an upper bound.
#include <cmath>

#include "common/check.h"
#include "kernels/cpu/quant_kernels.h"
#include "methods/quant/mixed_store.h"
#include "methods/registry.h"

namespace kvb {
namespace {

int64_t nbytes(const torch::Tensor& t) {
  return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0;
}

struct GearParams {
  int bits;
  int64_t rank, k, nb, group;
  torch::ScalarType index_dtype;
};

class GearStore : public SlotStore {
 public:
  GearStore(const ModelShape& shape, GearParams p)
      : p_(p), layers_(static_cast<size_t>(shape.n_layers)) {}

  void append(int layer, const KVAppend& a) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    const int64_t t = a.k.size(2);
    compute_ = a.k.scalar_type();
    L.b = a.k.size(0);
    L.h = a.k.size(1);
    L.d = a.k.size(3);
    if (t == 0) return;
    for (int side = 0; side < 2; ++side) {
      const torch::Tensor& x = side == 0 ? a.k : a.v;
      L.s[side].fp = L.nfp ? torch::cat({L.s[side].fp, x.to(compute_)}, 2) : x.to(compute_);
    }
    L.nfp += t;
    if (L.nfp >= p_.nb) {
      const int64_t m = L.nfp / p_.nb * p_.nb, mb = m / p_.nb;
      for (int side = 0; side < 2; ++side) {
        Side& S = L.s[side];
        compress(L, S, S.fp.narrow(2, 0, m).to(torch::kFloat32).contiguous());
        S.fp = L.nfp > m ? S.fp.narrow(2, m, L.nfp - m).contiguous() : torch::Tensor();
      }
      if (L.blk.defined()) {
        torch::Tensor ids = (torch::arange(m, L.blk.options().dtype(torch::kLong)) / p_.nb +
                             L.nblk)
                                .to(torch::kInt)
                                .view({1, 1, m})
                                .expand({L.b, L.h, m});
        L.blk = torch::cat({L.blk, ids}, 2);
      }
      L.nblk += mb;
      L.nq += m;
      L.nfp -= m;
    }
    L.pos.append(a.pos, L.b, L.h);
    L.seen += t;
  }

  KVView view(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    KVView v;
    if (L.nq + L.nfp == 0) return v;
    v.k = dense(L, 0).to(compute_);
    v.v = dense(L, 1).to(compute_);
    v.pos = L.pos.view();
    return v;
  }

  int64_t slots(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    return L.nq + L.nfp;
  }
  torch::Tensor positions(int layer) const override {
    return layers_.at(static_cast<size_t>(layer)).pos.view();
  }
  int n_layers() const override { return static_cast<int>(layers_.size()); }

  // Ascending indices (the compressed rows stay a prefix). See the top of the file.
  void keep(int layer, const torch::Tensor& idx) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    const int64_t n = idx.size(2);
    if (n > 1)
      KVB_CHECK((idx.narrow(2, 1, n - 1) > idx.narrow(2, 0, n - 1)).all().item<bool>(),
                "gear: keep() needs ascending indices");
    const int64_t nq = n ? (idx < L.nq).sum(-1).min().item<int64_t>() : 0;
    torch::Tensor qi = idx.narrow(2, 0, nq);
    torch::Tensor rest = idx.narrow(2, nq, n - nq);
    if (!L.blk.defined() && L.nq > 0)
      L.blk = (torch::arange(L.nq, idx.options()) / p_.nb)
                  .to(torch::kInt)
                  .view({1, 1, L.nq})
                  .expand({L.b, L.h, L.nq})
                  .contiguous();
    for (int side = 0; side < 2; ++side) {
      Side& S = L.s[side];
      torch::Tensor fp;
      if (n - nq > 0) {  // full-precision rows: buffered ones, or compressed rows turned back
        torch::Tensor all = S.fp.defined() ? S.fp : torch::Tensor();
        if ((rest < L.nq).any().item<bool>()) {
          torch::Tensor q = dense_q(L, S).to(compute_);
          all = all.defined() ? torch::cat({q, all}, 2) : q;
          fp = gather_slot_rows(all, rest);
        } else {
          fp = gather_slot_rows(all, rest - L.nq);
        }
      }
      if (L.nq > 0)
        for (torch::Tensor* t : {&S.codes, &S.scale, &S.zero, &S.a, &S.ov, &S.oi})
          if (t->defined()) *t = gather_slot_rows(*t, qi);
      S.fp = fp;
    }
    if (L.blk.defined()) L.blk = L.blk.gather(2, qi).contiguous();
    L.nq = nq;
    L.nfp = n - nq;
    L.pos.keep(idx);
  }

  MemoryUse memory(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    MemoryUse m;
    m.tokens_seen = L.seen;
    m.slots = L.b * L.h * (L.nq + L.nfp);
    for (int side = 0; side < 2; ++side) {
      const Side& S = L.s[side];
      if (L.nq > 0) {
        m.payload_bytes += nbytes(S.codes) + nbytes(S.a) + nbytes(S.ov);
        m.metadata_bytes += nbytes(S.scale) + nbytes(S.zero) + nbytes(S.oi);
      }
      if (L.nblk > 0) m.payload_bytes += nbytes(S.bm);
      if (L.nfp > 0) m.payload_bytes += nbytes(S.fp);
    }
    m.metadata_bytes += nbytes(L.blk) + L.pos.bytes();
    return m;
  }
  using SlotStore::memory;

  std::unique_ptr<SlotStore> clone_store() const override {
    auto c = std::make_unique<GearStore>(*this);
    for (Layer& L : c->layers_) {
      for (Side& S : L.s)
        for (torch::Tensor* t : {&S.codes, &S.scale, &S.zero, &S.a, &S.ov, &S.oi, &S.bm, &S.fp})
          if (t->defined()) *t = t->clone();
      if (L.blk.defined()) L.blk = L.blk.clone();
      L.pos = L.pos.clone();
    }
    return c;
  }

 private:
  struct Side {
    torch::Tensor codes;        // [B, H, nq, D*bits/8] uint8
    torch::Tensor scale, zero;  // [B, H, nq, D/group] fp16
    torch::Tensor a;            // [B, H, nq, r] fp16: each row's low-rank coefficients
    torch::Tensor ov, oi;       // [B, H, nq, k] fp16 outlier values, uint8/int16 channels
    torch::Tensor bm;           // [B, H, nblk, D, r] fp16: each block's low-rank basis
    torch::Tensor fp;           // [B, H, nfp, D] compute dtype: the buffer
  };
  struct Layer {
    Side s[2];  // keys, values
    torch::Tensor blk;  // [B, H, nq] int32 block of each compressed row, once slots were dropped
    SlotPositions pos;
    int64_t nq = 0, nfp = 0, nblk = 0, seen = 0, b = 0, h = 0, d = 0;
  };

  static torch::Tensor cat2(const torch::Tensor& a, const torch::Tensor& b) {
    return a.defined() ? torch::cat({a, b}, 2) : b;
  }

  // x [B, H, m, D] float32, m a multiple of the block: appends m compressed rows, m/nb blocks.
  void compress(const Layer& L, Side& S, const torch::Tensor& x) const {
    const int64_t m = x.size(2), mb = m / p_.nb, d = L.d;
    auto o = x.options();
    torch::Tensor xs = x, oidx;
    if (p_.k > 0) {
      oidx = std::get<1>(x.abs().topk(p_.k, -1));  // [B, H, m, k]
      S.ov = cat2(S.ov, x.gather(-1, oidx).to(torch::kHalf));
      S.oi = cat2(S.oi, oidx.to(p_.index_dtype));
      xs = x.scatter(-1, oidx, 0.0);
    }
    torch::Tensor codes = torch::empty({L.b, L.h, m, d * p_.bits / 8}, o.dtype(torch::kUInt8));
    torch::Tensor sc = torch::empty({L.b, L.h, m, d / p_.group}, o.dtype(torch::kHalf));
    torch::Tensor zr = torch::empty_like(sc);
    kernels::quantize_rows(xs.contiguous(), p_.bits, p_.group, codes, sc, zr);
    S.codes = cat2(S.codes, codes);
    S.scale = cat2(S.scale, sc);
    S.zero = cat2(S.zero, zr);
    if (p_.rank > 0) {
      torch::Tensor dq = torch::empty({L.b, L.h, m, d}, o);
      kernels::dequantize_rows(codes, sc, zr, p_.bits, p_.group, dq);
      torch::Tensor e = xs - dq;
      if (p_.k > 0) e = e.scatter(-1, oidx, 0.0);
      auto [u, sv, vh] = at::linalg_svd(e.view({L.b, L.h, mb, p_.nb, d}), false);
      torch::Tensor a = u.narrow(-1, 0, p_.rank) * sv.narrow(-1, 0, p_.rank).unsqueeze(-2);
      S.a = cat2(S.a, a.reshape({L.b, L.h, m, p_.rank}).to(torch::kHalf));
      S.bm = cat2(S.bm, vh.narrow(-2, 0, p_.rank).transpose(-1, -2).to(torch::kHalf).contiguous());
    }
  }

  // The compressed rows reconstructed: [B, H, nq, D] float32.
  torch::Tensor dense_q(const Layer& L, const Side& S) const {
    const int64_t nq = L.nq, d = L.d;
    const torch::Tensor& any = S.codes.defined() ? S.codes : S.fp;
    torch::Tensor out = torch::empty({L.b, L.h, nq, d}, any.options().dtype(torch::kFloat32));
    if (nq == 0) return out;
    kernels::dequantize_rows(S.codes, S.scale, S.zero, p_.bits, p_.group, out);
    if (p_.rank > 0) {
      const int64_t r = p_.rank;
      torch::Tensor a = S.a.to(torch::kFloat32), bm = S.bm.to(torch::kFloat32);
      if (!L.blk.defined()) {
        const int64_t nblk = nq / p_.nb;
        out += torch::matmul(a.view({L.b, L.h, nblk, p_.nb, r}), bm.transpose(-1, -2))
                   .reshape({L.b, L.h, nq, d});
      } else {
        torch::Tensor flat = bm.reshape({L.b, L.h, bm.size(2), d * r});
        torch::Tensor sel = gather_slot_rows(flat, L.blk.to(torch::kLong)).view({L.b, L.h, nq, d, r});
        out += torch::matmul(sel, a.unsqueeze(-1)).squeeze(-1);
      }
    }
    if (p_.k > 0)
      out.scatter_(-1, S.oi.to(torch::kLong), S.ov.to(torch::kFloat32));
    return out;
  }

  torch::Tensor dense(const Layer& L, int side) const {
    const Side& S = L.s[side];
    torch::Tensor q = dense_q(L, S);
    if (L.nfp == 0) return q;
    return torch::cat({q, S.fp.to(torch::kFloat32)}, 2);
  }

  GearParams p_;
  torch::ScalarType compute_ = torch::kFloat32;
  std::vector<Layer> layers_;
};

class GearMethod : public StorageMethod {
 public:
  explicit GearMethod(const StageSpec& stage)
      : StorageMethod(stage), bits_(static_cast<int>(spec_int(stage, "bits"))),
        rank_(spec_int(stage, "rank")), nb_(spec_int(stage, "buffer")),
        group_(spec_int(stage, "group")), sparsity_(spec_float(stage, "sparsity")) {}

  std::unique_ptr<SlotStore> make_store(const ModelShape& shape) const override {
    return std::make_unique<GearStore>(shape, params(shape.head_dim));
  }

  bool promise_exact_after_any_drops() const override { return false; }
  bool promise_exact_for_known_slots() const override { return false; }

  MemoryUse layer_promise(const ModelShape& shape, const KeptSlots& kept,
                          torch::ScalarType compute) const override {
    const GearParams p = params(shape.head_dim);
    const int64_t h = shape.n_head_kv, d = shape.head_dim, s = kept.slots;
    const int64_t es = static_cast<int64_t>(c10::elementSize(compute));
    const int64_t ib = static_cast<int64_t>(c10::elementSize(p.index_dtype));
    const int64_t qrow = d * p.bits / 8 + 2 * p.rank + 2 * p.k;
    const int64_t qmeta = (d / p.group) * 4 + p.k * ib, basis = 2 * d * p.rank;
    MemoryUse m;
    m.slots = h * s;
    m.tokens_seen = s;
    if (kept.dropped()) {  // bound: see the top of the file
      m.payload_bytes = h * 2 * (s * std::max(qrow, d * es) + kept.tokens / p.nb * basis);
      m.metadata_bytes = h * (2 * s * qmeta + 4 * s);
      return m;
    }
    const int64_t nq = s / p.nb * p.nb, nf = s - nq;
    m.payload_bytes = h * 2 * (nq * qrow + nq / p.nb * basis + nf * d * es);
    m.metadata_bytes = h * 2 * nq * qmeta;
    return m;
  }

  // The group and rank really used (capped at D, and the rank at the block).
  StageSpec effective_stage(const ModelShape& shape) const override {
    const GearParams p = params(shape.head_dim);
    StageSpec s = stage();
    s.params["group"] = std::to_string(p.group);
    s.params["rank"] = std::to_string(p.rank);
    return s;
  }

 private:
  GearParams params(int64_t d) const {
    GearParams p;
    p.bits = bits_;
    p.nb = nb_;
    p.group = std::min(group_, d);
    KVB_INPUT_CHECK(d % p.group == 0 && p.group % (8 / bits_) == 0, spec(), ": head_dim ", d,
                    " is not a multiple of the group (", p.group, ")");
    p.rank = std::min({rank_, nb_, d});
    p.k = static_cast<int64_t>(std::floor(sparsity_ * static_cast<double>(d) + 1e-9));
    p.index_dtype = d <= 256 ? torch::kUInt8 : torch::kShort;
    return p;
  }

  int bits_;
  int64_t rank_, nb_, group_;
  double sparsity_;
};

}  // namespace

MethodEntry gear_entry() {
  return {
      .name = "gear",
      .family = "quant",
      .help =
          "GEAR: per token, the largest `sparsity` fraction of entries kept in fp16 with "
          "indices, the rest quantized (per-token groups of `group` channels), and a rank-`rank` "
          "SVD of each `buffer`-token block's quantization residual; new tokens wait in a "
          "full-precision buffer of `buffer` tokens.",
      .params = {{"bits", "int", "4", {"2", "4"}, 0, 0, "bits per element"},
                 {"rank", "int", "4", {}, 0, 4096, "rank of the residual per block and KV head"},
                 {"sparsity", "float", "0.02", {}, 0, 0.5, "fraction of each row kept as outliers"},
                 {"buffer", "int", "64", {}, 1, 65536, "tokens per compressed block"},
                 {"group", "int", "64", {}, 1, kMaxSpecGroup, "channels per group (capped at D)"}},
      .make = StorageFactory([](const StageSpec& s) { return std::make_unique<GearMethod>(s); }),
      .finalize = nullptr,
      .contract = {.examples = {"gear", "gear(bits=2,buffer=16,rank=2,sparsity=0.1)"},
                   .view_tolerance =
                       [](const StageSpec& s) { return spec_int(s, "bits") == 2 ? 0.6 : 0.15; },
                   .lossless = {"gear(buffer=64)"},
                   .compressing = {"gear(buffer=8,bits=2)"}},
  };
}

}  // namespace kvb
