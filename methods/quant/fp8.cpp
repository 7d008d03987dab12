// `fp8(format=e4m3|e5m2, scale=tensor|head)`: an FP8 KV cache as vLLM and TensorRT-LLM keep it.
// Keys and values are divided by a scale and stored as one fp8 byte per element (OCP E4M3 or
// E5M2, round to nearest even, saturating: kernels/cpu/fp8_codec.h, written by hand because
// libtorch 1.13 has no float8 dtype); view() decodes and multiplies back.
//
// Scales (float32): per layer, one for keys and one for values (scale=tensor, vLLM's per-tensor
// k_scale / v_scale) or one per KV head (scale=head), per batch row. They are calibrated once,
// from the first chunk appended to the layer, and fixed after (vLLM's calculate_kv_scales on the
// first forward pass): scale = amax / 200 for keys and amax / 100 for values (vLLM's
// K_SCALE_CONSTANT and V_SCALE_CONSTANT), so later tokens up to 448/200 = 2.24x (keys) or 4.48x
// (values) the first chunk's largest magnitude fit E4M3 before saturating (E5M2: 287x / 573x); an
// all-zero first chunk gives scale 1 (vLLM's default). Dynamic per-append scales are not used:
// each chunk would need scales of its own (bytes that depend on the chunking) or re-encoding.
// In decode mode (chunk = 1) the first chunk is the first token alone.
//
// Bytes: payload 2 x slots x head_dim (K and V, 1 byte each); metadata 2 x (1 or H_kv) x 4 per
// layer once the layer has seen a token (the scales), plus explicit positions. Every slot is a
// row of its own, so a chain's keep() and drop_swap() move rows and never re-encode.
#include <algorithm>

#include "common/check.h"
#include "kernels/cpu/fp8_codec.h"
#include "methods/registry.h"

namespace kvb {
namespace {

using kernels::Fp8Format;

constexpr double kKeyRange = 200.0, kValueRange = 100.0;  // vLLM's K/V_SCALE_CONSTANT

class Fp8Store : public SlotStore {
 public:
  Fp8Store(const ModelShape& shape, Fp8Format format, bool per_head)
      : format_(format), per_head_(per_head), layers_(static_cast<size_t>(shape.n_layers)) {}

  void append(int layer, const KVAppend& a) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    const int64_t b = a.k.size(0), h = a.k.size(1), t = a.k.size(2), d = a.k.size(3);
    if (t == 0) return;
    compute_ = a.k.scalar_type();
    if (!L.k.scale.defined()) {
      L.k.scale = calibrate(a.k, kKeyRange);
      L.v.scale = calibrate(a.v, kValueRange);
    }
    auto u8 = a.k.options().dtype(torch::kUInt8);
    for (Side* s : {&L.k, &L.v}) reserve_rows(s->codes, L.len, L.len + t, b, h, d, u8);
    encode(L.k, a.k, L.len);
    encode(L.v, a.v, L.len);
    L.pos.append(a.pos, b, h);
    L.len += t;
    L.seen += t;
  }

  KVView view(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    KVView v;
    if (L.len == 0) return v;
    v.k = decode(L.k, L.len);
    v.v = decode(L.v, L.len);
    v.pos = L.pos.view();
    return v;
  }

  int64_t slots(int layer) const override { return layers_.at(static_cast<size_t>(layer)).len; }
  torch::Tensor positions(int layer) const override {
    return layers_.at(static_cast<size_t>(layer)).pos.view();
  }
  int n_layers() const override { return static_cast<int>(layers_.size()); }

  void keep(int layer, const torch::Tensor& idx) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    keep_slots({&L.k.codes, &L.v.codes}, L.pos, L.len, idx);
  }

  bool can_drop_swap() const override { return true; }
  void drop_swap(int layer, const torch::Tensor& slot) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    drop_swap_slots({&L.k.codes, &L.v.codes}, L.pos, L.len, slot);
  }

  MemoryUse memory(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    MemoryUse m;
    m.tokens_seen = L.seen;
    if (L.k.scale.defined()) m.metadata_bytes += 2 * L.k.scale.numel() * 4;
    if (L.len == 0) return m;
    const int64_t b = L.k.codes.size(0), h = L.k.codes.size(1), d = L.k.codes.size(3);
    m.payload_bytes = 2 * b * h * L.len * d;
    m.metadata_bytes += L.pos.bytes();
    m.slots = b * h * L.len;
    return m;
  }
  using SlotStore::memory;

  std::unique_ptr<SlotStore> clone_store() const override {
    auto c = std::make_unique<Fp8Store>(*this);
    for (Layer& L : c->layers_) {
      for (Side* s : {&L.k, &L.v}) s->codes = clone_rows(s->codes);  // scales are never written
      L.pos = L.pos.clone();
    }
    return c;
  }

 private:
  struct Side {
    torch::Tensor codes;  // [B, H_kv, capacity, D] uint8 fp8 codes
    torch::Tensor scale;  // [B, 1] or [B, H_kv] float32, set by the first append
  };
  struct Layer {
    Side k, v;
    SlotPositions pos;
    int64_t len = 0, seen = 0;
  };

  // amax / range per batch row (and head); 1 where the chunk is all zeros (or not finite).
  // max |x| = max(-min, max): two vectorized reductions, no temporary |x| (NaN propagates as in
  // abs().amax(); torch::aminmax was 30x slower here).
  torch::Tensor calibrate(const torch::Tensor& x, double range) const {  // x [B, H, T, D]
    const torch::Tensor xf = x.to(torch::kFloat32);
    torch::Tensor amax = torch::maximum(-xf.amin({2, 3}), xf.amax({2, 3}));  // [B, H]
    if (!per_head_) amax = amax.amax(1, /*keepdim=*/true);               // [B, 1]
    torch::Tensor s = amax / range;
    return torch::where((amax > 0) & torch::isfinite(amax), s, torch::ones_like(s)).contiguous();
  }

  // codes = fp8(x / scale), written straight into the buffer's rows (one pass, no temporaries).
  void encode(Side& s, const torch::Tensor& x, int64_t at) {  // x [B, H, T, D]
    kernels::fp8_encode_scaled(x.to(torch::kFloat32).contiguous(), s.scale, format_,
                               s.codes.narrow(2, at, x.size(2)));
  }

  torch::Tensor decode(const Side& s, int64_t len) const {  // fp8 value * scale
    torch::Tensor out = torch::empty({s.codes.size(0), s.codes.size(1), len, s.codes.size(3)},
                                     s.codes.options().dtype(torch::kFloat32));
    kernels::fp8_decode_scaled(s.codes.narrow(2, 0, len), s.scale, format_, out);
    return compute_ == torch::kFloat32 ? out : out.to(compute_);
  }

  Fp8Format format_;
  bool per_head_;
  torch::ScalarType compute_ = torch::kFloat32;
  std::vector<Layer> layers_;
};

class Fp8Method : public StorageMethod {
 public:
  explicit Fp8Method(const StageSpec& stage)
      : StorageMethod(stage),
        format_(stage.params.at("format") == "e5m2" ? Fp8Format::kE5M2 : Fp8Format::kE4M3),
        per_head_(stage.params.at("scale") == "head") {}

  std::unique_ptr<SlotStore> make_store(const ModelShape& shape) const override {
    return std::make_unique<Fp8Store>(shape, format_, per_head_);
  }

  MemoryUse layer_promise(const ModelShape& shape, const KeptSlots& kept,
                          torch::ScalarType) const override {
    const int64_t h = shape.n_head_kv, slots = kept.slots;
    MemoryUse m;
    m.payload_bytes = 2 * h * slots * shape.head_dim;
    m.metadata_bytes = kept.tokens > 0 ? 2 * (per_head_ ? h : 1) * 4 : 0;
    m.slots = h * slots;
    m.tokens_seen = slots;
    return m;
  }

  // Bytes follow the kept count, plus scales fixed per store: a head-wise chain's one-head stores
  // each hold their own, which the per-slot promise of such chains cannot express; declaring the
  // promise a bound after drops keeps those chains honest (plain chains hold it exactly).
  bool promise_exact_after_any_drops() const override { return false; }

 private:
  Fp8Format format_;
  bool per_head_;
};

double view_tolerance(const StageSpec& s) {
  // Mean |error| of unit-variance data: E4M3 keeps 3 mantissa bits (relative error <= 2^-4),
  // E5M2 2 bits (<= 2^-3).
  return s.params.at("format") == "e5m2" ? 0.08 : 0.04;
}

}  // namespace

MethodEntry fp8_entry() {
  return {
      .name = "fp8",
      .family = "quant",
      .help =
          "FP8 KV cache (vLLM / TensorRT-LLM): keys and values scaled and stored as OCP E4M3 or "
          "E5M2 bytes (round to nearest even, saturating); float32 scales per layer or per KV "
          "head, calibrated once from the first chunk (amax/200 keys, amax/100 values).",
      .params = {{"format", "enum", "e4m3", {"e4m3", "e5m2"}, 0, 0, "fp8 format"},
                 {"scale",
                  "enum",
                  "tensor",
                  {"tensor", "head"},
                  0,
                  0,
                  "one scale per layer (tensor) or per KV head (head), for keys and for values"}},
      .make = StorageFactory([](const StageSpec& s) { return std::make_unique<Fp8Method>(s); }),
      .finalize = nullptr,
      .contract = {.examples = {"fp8", "fp8(format=e5m2)", "fp8(scale=head)"},
                   .view_tolerance = view_tolerance,
                   .lossless = {},
                   .compressing = {"fp8", "fp8(format=e5m2,scale=head)"}},
  };
}

}  // namespace kvb
