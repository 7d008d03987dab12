// `qserve(bits=4|8, alpha=0.5)`: QServe's KV4 (Lin et al. 2024, mit-han-lab/omniserve) with
// SmoothAttention.
//
//   SmoothAttention: per layer, KV head and channel c, lambda_c = max|K_c|^alpha (alpha = 0.5).
//     QServe folds it into the projections offline: queries times lambda, keys divided by lambda,
//     so q.k is unchanged and the keys' outlier channels shrink before quantization. In our seam
//     the model's queries are not ours to change, so the store divides the keys by lambda before
//     quantizing and multiplies the dequantized keys by lambda in view(): the scores the model
//     computes, q . (lambda * deq(K / lambda)), equal QServe's (q * lambda) . deq(K / lambda).
//     lambda comes from the first chunk appended to the layer (the largest |key| per channel over
//     its tokens and batch rows), is rounded to fp16 and fixed after (QServe calibrates offline on
//     a calibration set; in decode mode, chunk = 1, our first chunk is the first token alone). A
//     channel that is all zeros in that chunk gets lambda 1.
//   KV4 layout: keys (after smoothing) and values are quantized per token and per KV head,
//     asymmetric, one fp16 scale and zero point per (token, head) over its head_dim channels
//     (QServe's per-head dynamic KV quantization), codes packed 2 per byte (bits=8: 1 per byte,
//     QServe's KV8).
//
// Bytes: payload 2 x slots x head_dim x bits/8 per KV head; metadata per slot 2 (K, V) x 2 (scale,
// zero) x 2 bytes, plus per layer H_kv x head_dim x 2 (lambda, fp16) once the layer has seen a
// token (QServe holds lambda inside its weights; we hold it, so we count it), plus explicit
// positions. Rows move with keep()/drop_swap(); nothing is re-quantized.
#include <algorithm>
#include <cmath>

#include "common/check.h"
#include "kernels/cpu/quant_kernels.h"
#include "methods/registry.h"

namespace kvb {
namespace {

class QServeStore : public SlotStore {
 public:
  QServeStore(const ModelShape& shape, int bits, double alpha)
      : bits_(bits), alpha_(alpha), layers_(static_cast<size_t>(shape.n_layers)) {}

  void append(int layer, const KVAppend& a) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    const int64_t b = a.k.size(0), h = a.k.size(1), t = a.k.size(2), d = a.k.size(3);
    if (t == 0) return;
    compute_ = a.k.scalar_type();
    if (!L.lambda.defined()) L.lambda = smoothing(a.k);
    auto u8 = a.k.options().dtype(torch::kUInt8), f16 = a.k.options().dtype(torch::kHalf);
    for (Side* s : {&L.k, &L.v}) {
      reserve_rows(s->codes, L.len, L.len + t, b, h, d * bits_ / 8, u8);
      reserve_rows(s->scale, L.len, L.len + t, b, h, 1, f16);
      reserve_rows(s->zero, L.len, L.len + t, b, h, 1, f16);
    }
    quantize(L.k, a.k.to(torch::kFloat32), L.len, &L.lambda);  // keys / lambda
    quantize(L.v, a.v.to(torch::kFloat32), L.len);
    L.pos.append(a.pos, b, h);
    L.len += t;
    L.seen += t;
  }

  KVView view(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    KVView v;
    if (L.len == 0) return v;
    v.k = out(dequantize(L.k, L.len).mul_(lambda4(L)));
    v.v = out(dequantize(L.v, L.len));
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
    keep_slots({&L.k.codes, &L.k.scale, &L.k.zero, &L.v.codes, &L.v.scale, &L.v.zero}, L.pos,
               L.len, idx);
  }

  bool can_drop_swap() const override { return true; }
  void drop_swap(int layer, const torch::Tensor& slot) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    drop_swap_slots({&L.k.codes, &L.k.scale, &L.k.zero, &L.v.codes, &L.v.scale, &L.v.zero},
                    L.pos, L.len, slot);
  }

  MemoryUse memory(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    MemoryUse m;
    m.tokens_seen = L.seen;
    if (L.lambda.defined()) m.metadata_bytes += L.lambda.numel() * 2;
    if (L.len == 0) return m;
    const int64_t b = L.k.codes.size(0), h = L.k.codes.size(1);
    m.payload_bytes = 2 * b * h * L.len * L.k.codes.size(3);
    m.metadata_bytes += 2 * 2 * b * h * L.len * 2 + L.pos.bytes();
    m.slots = b * h * L.len;
    return m;
  }
  using SlotStore::memory;

  std::unique_ptr<SlotStore> clone_store() const override {
    auto c = std::make_unique<QServeStore>(*this);
    for (Layer& L : c->layers_) {
      for (Side* s : {&L.k, &L.v})
        for (torch::Tensor* t : {&s->codes, &s->scale, &s->zero}) *t = clone_rows(*t);
      L.pos = L.pos.clone();  // lambda is never written after the first append
    }
    return c;
  }

 private:
  struct Side {
    torch::Tensor codes;        // [B, H_kv, capacity, D*bits/8] uint8
    torch::Tensor scale, zero;  // [B, H_kv, capacity, 1] fp16
  };
  struct Layer {
    Side k, v;
    torch::Tensor lambda;  // [H_kv, D] fp16, SmoothAttention's per-channel key scale
    SlotPositions pos;
    int64_t len = 0, seen = 0;
  };

  // lambda = max|K_c|^alpha over the chunk's tokens and batch rows, fp16; 1 for all-zero channels.
  // max |K| per channel in one pass (kernels::channel_absmax: no |K| temporary).
  torch::Tensor smoothing(const torch::Tensor& k) const {  // k [B, H, T, D]
    torch::Tensor amax = kernels::channel_absmax(k.to(torch::kFloat32));  // [H, D]
    torch::Tensor lam = amax.pow(alpha_).clamp(std::ldexp(1.0, -14), 65504.0);
    lam = torch::where((amax > 0) & torch::isfinite(amax), lam, torch::ones_like(lam));
    return lam.to(torch::kHalf).contiguous();
  }

  static torch::Tensor lambda4(const Layer& L) {  // [1, H, 1, D] float32
    return L.lambda.to(torch::kFloat32).unsqueeze(1).unsqueeze(0);
  }

  // x / lambda (keys: lambda [H, D] fp16, the division fused into the kernel) or x, quantized.
  void quantize(Side& s, const torch::Tensor& x, int64_t at,
                const torch::Tensor* lambda = nullptr) {  // x [B, H, T, D] float32
    const int64_t t = x.size(2);
    if (lambda)
      kernels::quantize_rows_div(x.contiguous(), lambda->to(torch::kFloat32), bits_, x.size(3),
                                 s.codes.narrow(2, at, t), s.scale.narrow(2, at, t),
                                 s.zero.narrow(2, at, t));
    else
      kernels::quantize_rows(x.contiguous(), bits_, x.size(3), s.codes.narrow(2, at, t),
                             s.scale.narrow(2, at, t), s.zero.narrow(2, at, t));
  }

  torch::Tensor dequantize(const Side& s, int64_t len) const {
    const int64_t d = s.codes.size(3) * 8 / bits_;
    torch::Tensor o = torch::empty({s.codes.size(0), s.codes.size(1), len, d},
                                   s.codes.options().dtype(torch::kFloat32));
    kernels::dequantize_rows(s.codes.narrow(2, 0, len), s.scale.narrow(2, 0, len),
                             s.zero.narrow(2, 0, len), bits_, d, o);
    return o;
  }

  torch::Tensor out(const torch::Tensor& x) const {
    return compute_ == torch::kFloat32 ? x : x.to(compute_);
  }

  int bits_;
  double alpha_;
  torch::ScalarType compute_ = torch::kFloat32;
  std::vector<Layer> layers_;
};

class QServeMethod : public StorageMethod {
 public:
  explicit QServeMethod(const StageSpec& stage)
      : StorageMethod(stage),
        bits_(static_cast<int>(spec_int(stage, "bits"))),
        alpha_(spec_float(stage, "alpha")) {}

  std::unique_ptr<SlotStore> make_store(const ModelShape& shape) const override {
    check_shape(shape);
    return std::make_unique<QServeStore>(shape, bits_, alpha_);
  }

  MemoryUse layer_promise(const ModelShape& shape, const KeptSlots& kept,
                          torch::ScalarType) const override {
    check_shape(shape);
    const int64_t h = shape.n_head_kv, d = shape.head_dim, slots = kept.slots;
    MemoryUse m;
    m.payload_bytes = 2 * h * slots * d * bits_ / 8;
    m.metadata_bytes = 2 * 2 * h * slots * 2 + (kept.tokens > 0 ? h * d * 2 : 0);
    m.slots = h * slots;
    m.tokens_seen = slots;
    return m;
  }

  // lambda is held per store (see Fp8Method: head-wise chains' one-head stores each hold theirs).
  bool promise_exact_after_any_drops() const override { return false; }

 private:
  void check_shape(const ModelShape& shape) const {
    KVB_INPUT_CHECK(shape.head_dim % (8 / bits_) == 0, spec(), ": head_dim ", shape.head_dim,
                    " is not a multiple of ", 8 / bits_, " (codes per byte)");
  }

  int bits_;
  double alpha_;
};

double view_tolerance(const StageSpec& s) { return spec_int(s, "bits") == 4 ? 0.15 : 0.01; }

}  // namespace

MethodEntry qserve_entry() {
  return {
      .name = "qserve",
      .family = "quant",
      .help =
          "QServe KV4 with SmoothAttention: keys divided per channel by lambda = max|K|^alpha "
          "(from the first chunk; multiplied back when viewed, which equals QServe's folding of "
          "lambda into the queries), keys and values quantized per token and KV head, "
          "asymmetric, fp16 scale and zero point.",
      .params = {{"bits", "int", "4", {"4", "8"}, 0, 0, "bits per element (4: KV4, 8: KV8)"},
                 {"alpha", "float", "0.5", {}, 0, 1, "SmoothAttention exponent (0: no smoothing)"}},
      .make = StorageFactory([](const StageSpec& s) { return std::make_unique<QServeMethod>(s); }),
      .finalize = nullptr,
      .contract = {.examples = {"qserve", "qserve(bits=8)", "qserve(alpha=0)"},
                   .view_tolerance = view_tolerance,
                   .lossless = {},
                   .compressing = {"qserve"}},
  };
}

}  // namespace kvb
