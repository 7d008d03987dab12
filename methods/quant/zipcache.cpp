// `zipcache(hi=4, lo=2, salient=0.4, residual=128)`: ZipCache (He et al. 2024, NeurIPS).
//
// Saliency is the normalized attention score: the attention a token received, summed over the
// queries that saw it, divided by how many queries saw it (the lower-triangular attention matrix
// otherwise favours early tokens). The queries are the appended chunks' own (ZipCache's probe
// tokens, all of them here: methods/quant/mixed_store.h computes softmax(q.k/sqrt(D)) from
// KVAppend::q, so the stage works alone and behind selectors, where a storage stage gets no
// observe()); per KV head summed over its query heads.
//
// Storage (MixedStore): new tokens wait in a full-precision buffer; when it holds `residual`
// slots its oldest floor(n/R)*R are quantized, R at a time: in each block of R the
// round(salient*R) tokens of highest normalized score get `hi` bits, the rest `lo` bits
// (ZipCache's streaming decode compresses every 100 new tokens; here the prompt is compressed
// the same way, R at a time, so what is held follows the token count alone, whatever the
// chunking). Channel-separable token-wise quantization: keys are divided per channel by
// c = sqrt(max_t |K[t, :]|) (per KV head, fp16, from the first keys quantized, then kept), then
// quantized per token (one fp16 scale and zero over the D channels); values per token likewise
// without c.
//
// Bytes per KV head, after L tokens (nq = floor(L/R)*R quantized, nh = nq/R*round(salient*R) of
// them at hi bits, nf = L - nq full precision): payload 2*(nh*D*hi/8 + (nq-nh)*D*lo/8 +
// nf*D*es); metadata 2*nq*4 (scale + zero per row, K and V) + L (class byte per slot) + 2*D if
// nq > 0 (c) + 8*nf (score and query count of the buffered tokens, float32). Exact alone; after
// a chain's drops an upper bound (which slots were hi depends on the data).
//
// Deviations: every query is a probe (ZipCache samples 10%: a cost saving); the prompt is
// quantized in blocks of R with per-block saliency ranks (ZipCache ranks the whole prompt
// once); c is fixed from the first block (ZipCache recomputes it per quantization call).
#include <cmath>

#include "common/check.h"
#include "methods/quant/mixed_store.h"
#include "methods/registry.h"

namespace kvb {
namespace {

class ZipCachePolicy : public MixedPolicy {
 public:
  ZipCachePolicy(int64_t residual, int64_t hi_per_block) : r_(residual), hi_(hi_per_block) {}

  torch::Tensor classify(const torch::Tensor& cls, const torch::Tensor& score) const override {
    const int64_t s = cls.size(2);
    const int64_t nfp = (cls[0][0] == kMixedFp).sum().item<int64_t>();
    const int64_t blocks = nfp / r_;
    if (blocks == 0) return cls;
    const int64_t b = cls.size(0), h = cls.size(1), first = s - nfp;
    torch::Tensor out = cls.clone();
    torch::Tensor sc = score.narrow(2, first, blocks * r_).reshape({b, h, blocks, r_});
    torch::Tensor code = torch::full({b, h, blocks, r_}, kMixedLo, cls.options());
    if (hi_ > 0) {
      torch::Tensor top = std::get<1>(sc.topk(hi_, -1));
      code.scatter_(-1, top, kMixedHi);
    }
    out.narrow(2, first, blocks * r_).copy_(code.reshape({b, h, blocks * r_}));
    return out;
  }

 private:
  int64_t r_, hi_;
};

class ZipCacheMethod : public StorageMethod {
 public:
  explicit ZipCacheMethod(const StageSpec& stage)
      : StorageMethod(stage), hi_(static_cast<int>(spec_int(stage, "hi"))),
        lo_(static_cast<int>(spec_int(stage, "lo"))), r_(spec_int(stage, "residual")),
        hi_per_block_(std::llround(spec_float(stage, "salient") * static_cast<double>(r_))) {}

  std::unique_ptr<SlotStore> make_store(const ModelShape& shape) const override {
    check_shape(shape.head_dim);
    MixedConfig c{.hi_bits = hi_,
                  .lo_bits = lo_,
                  .hi_group = shape.head_dim,
                  .lo_group = shape.head_dim,
                  .key_channel_norm = true,
                  .scores_fp_only = true};
    return std::make_unique<MixedStore>(shape, c,
                                        std::make_shared<ZipCachePolicy>(r_, hi_per_block_));
  }

  bool promise_exact_after_any_drops() const override { return false; }
  bool promise_exact_for_known_slots() const override { return false; }

  MemoryUse layer_promise(const ModelShape& shape, const KeptSlots& kept,
                          torch::ScalarType compute) const override {
    const int64_t h = shape.n_head_kv, d = shape.head_dim, s = kept.slots;
    const int64_t es = static_cast<int64_t>(c10::elementSize(compute));
    MemoryUse m;
    m.slots = h * s;
    m.tokens_seen = s;
    if (kept.dropped()) {  // bound: every slot in its costliest form
      const int64_t row = std::max<int64_t>(d * es, d * hi_ / 8);
      m.payload_bytes = h * 2 * s * row;
      m.metadata_bytes = h * (2 * s * 4 + s + 8 * s + 2 * d);
      return m;
    }
    const int64_t nq = s / r_ * r_, nh = nq / r_ * hi_per_block_, nf = s - nq;
    m.payload_bytes = h * 2 * (nh * d * hi_ / 8 + (nq - nh) * d * lo_ / 8 + nf * d * es);
    m.metadata_bytes = h * (2 * nq * 4 + s + (nq > 0 ? 2 * d : 0) + 8 * nf);
    return m;
  }

 private:
  void check_shape(int64_t d) const {
    KVB_INPUT_CHECK(d % (8 / lo_) == 0 && d % (8 / hi_) == 0, spec(), ": head_dim ", d,
                    " does not pack into whole bytes");
  }
  int hi_, lo_;
  int64_t r_, hi_per_block_;
};

}  // namespace

MethodEntry zipcache_entry() {
  return {
      .name = "zipcache",
      .family = "quant",
      .help =
          "ZipCache: salient tokens (normalized attention: attention received / queries that "
          "saw the token, from the chunks' own queries) at `hi` bits, the rest at `lo` bits; "
          "keys normalized per channel then quantized per token, values per token; the newest "
          "tokens wait in a full-precision buffer and are quantized `residual` at a time.",
      .params = {{"hi", "int", "4", {"2", "4", "8"}, 0, 0, "bits of salient tokens"},
                 {"lo", "int", "2", {"2", "4", "8"}, 0, 0, "bits of the other tokens"},
                 {"salient", "float", "0.4", {}, 0, 1, "fraction of each block kept at hi bits"},
                 {"residual",
                  "int",
                  "128",
                  {},
                  1,
                  kMaxSpecTokens,
                  "full-precision buffer, quantized this many tokens at a time"}},
      .make =
          StorageFactory([](const StageSpec& s) { return std::make_unique<ZipCacheMethod>(s); }),
      .finalize =
          [](const std::string& text, StageSpec& s) {
            if (spec_int(s, "lo") > spec_int(s, "hi")) stage_fail(text, s, "lo must not exceed hi");
          },
      .contract = {.examples = {"zipcache", "zipcache(hi=8,lo=4,residual=16,salient=0.25)"},
                   .view_tolerance =
                       [](const StageSpec& s) { return spec_int(s, "lo") == 2 ? 0.7 : 0.2; },
                   .lossless = {"zipcache(residual=64)"},
                   .compressing = {"zipcache(residual=8,salient=0.5)"}},
  };
}

}  // namespace kvb
