// `int(bits=8|4|2, group=64)`: per-token asymmetric integer quantization (FlexGen style) of keys
// and values alike. Each token's D channels split into groups of `group` consecutive channels
// (min(group, D) when the head is narrower: effective_spec() records the group used), each with an
// fp16 scale and zero point; codes are packed 8/bits per byte. Every slot is a row of its own
// (codes, scales, zeros), so a chain's keep() and drop_swap() move rows: a kept slot's codes
// never change.
//
// attend() (the fused path): for one decode query per head (T = 1) in fp32, attention is
// computed straight from the codes by kernels/cpu/quant_attention.h (int_decode_attention);
// T > 1 and other dtypes take the dequantized view. A query on another device is refused naming
// the method and the device (the store's codes live in host memory).
#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "common/check.h"
#include "kernels/cpu/quant_attention.h"
#include "kernels/cpu/quant_kernels.h"
#include "methods/registry.h"

namespace kvb {
namespace {

// Per layer: codes [B, H_kv, capacity, D*bits/8] uint8 and scale/zero [B, H_kv, capacity, D/g]
// fp16 for keys and for values; slots live in the first `len` rows.
class IntStore : public SlotStore {
 public:
  IntStore(const ModelShape& shape, std::string spec, int bits, int64_t group)
      : spec_(std::move(spec)), bits_(bits), group_(group),
        layers_(static_cast<size_t>(shape.n_layers)) {}

  void append(int layer, const KVAppend& a) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    const int64_t b = a.k.size(0), h = a.k.size(1), t = a.k.size(2), d = a.k.size(3);
    compute_ = a.k.scalar_type();
    auto u8 = a.k.options().dtype(torch::kUInt8), f16 = a.k.options().dtype(torch::kHalf);
    for (Side* s : {&L.k, &L.v}) {
      reserve_rows(s->codes, L.len, L.len + t, b, h, d * bits_ / 8, u8);
      reserve_rows(s->scale, L.len, L.len + t, b, h, d / group_, f16);
      reserve_rows(s->zero, L.len, L.len + t, b, h, d / group_, f16);
    }
    quantize(L.k, a.k, L.len, t);
    quantize(L.v, a.v, L.len, t);
    L.pos.append(a.pos, b, h);
    L.len += t;
    L.seen += t;
  }

  KVView view(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    KVView v;
    if (L.len == 0) return v;
    v.k = dequantize(L.k, L.len);
    v.v = dequantize(L.v, L.len);
    v.pos = L.pos.view();
    return v;
  }

  std::optional<AttendResult> attend(int layer, const torch::Tensor& q,
                                     double scale) const override {
    if (q.defined() && !q.device().is_cpu())
      throw Error(spec_ + ": no kernel for device " + q.device().str() +
                  " (the fused int attention runs on the CPU only)");
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    if (L.len == 0 || q.size(2) != 1 || q.scalar_type() != torch::kFloat32 ||
        compute_ != torch::kFloat32 || !L.k.codes.device().is_cpu())
      return std::nullopt;
    kernels::IntCache c;
    c.bits = bits_;
    c.group = group_;
    c.key_codes = L.k.codes.narrow(2, 0, L.len);
    c.key_scale = L.k.scale.narrow(2, 0, L.len);
    c.key_zero = L.k.zero.narrow(2, 0, L.len);
    c.value_codes = L.v.codes.narrow(2, 0, L.len);
    c.value_scale = L.v.scale.narrow(2, 0, L.len);
    c.value_zero = L.v.zero.narrow(2, 0, L.len);
    kernels::AttentionPart r = kernels::int_decode_attention(q, c, scale);
    return AttendResult{r.out, r.lse};
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
    if (L.len == 0) return m;
    const int64_t b = L.k.codes.size(0), h = L.k.codes.size(1);
    m.payload_bytes = 2 * b * h * L.len * L.k.codes.size(3);
    m.metadata_bytes = 2 * 2 * b * h * L.len * L.k.scale.size(3) * 2 + L.pos.bytes();
    m.slots = b * h * L.len;
    return m;
  }
  using SlotStore::memory;

  std::unique_ptr<SlotStore> clone_store() const override {
    auto c = std::make_unique<IntStore>(*this);
    for (Layer& L : c->layers_) {
      for (Side* s : {&L.k, &L.v})
        for (torch::Tensor* t : {&s->codes, &s->scale, &s->zero}) *t = clone_rows(*t);
      L.pos = L.pos.clone();
    }
    return c;
  }

 private:
  struct Side {
    torch::Tensor codes;        // [B, H_kv, capacity, D*bits/8] uint8
    torch::Tensor scale, zero;  // [B, H_kv, capacity, D/group] fp16
  };
  struct Layer {
    Side k, v;
    SlotPositions pos;
    int64_t len = 0, seen = 0;
  };

  void quantize(Side& s, const torch::Tensor& x, int64_t at, int64_t t) {  // x [B, H, T, D]
    kernels::quantize_rows(x.to(torch::kFloat32).contiguous(), bits_, group_,
                           s.codes.narrow(2, at, t), s.scale.narrow(2, at, t),
                           s.zero.narrow(2, at, t));
  }

  torch::Tensor dequantize(const Side& s, int64_t len) const {
    const int64_t d = s.codes.size(3) * 8 / bits_;
    torch::Tensor out = torch::empty({s.codes.size(0), s.codes.size(1), len, d},
                                     s.codes.options().dtype(torch::kFloat32));
    kernels::dequantize_rows(s.codes.narrow(2, 0, len), s.scale.narrow(2, 0, len),
                             s.zero.narrow(2, 0, len), bits_, group_, out);
    return compute_ == torch::kFloat32 ? out : out.to(compute_);
  }

  std::string spec_;
  int bits_;
  int64_t group_;
  torch::ScalarType compute_ = torch::kFloat32;
  std::vector<Layer> layers_;
};

class IntMethod : public StorageMethod {
 public:
  explicit IntMethod(const StageSpec& stage)
      : StorageMethod(stage), bits_(static_cast<int>(spec_int(stage, "bits"))),
        group_(spec_int(stage, "group")) {}

  std::unique_ptr<SlotStore> make_store(const ModelShape& shape) const override {
    return std::make_unique<IntStore>(shape, spec(), bits_, group_for(shape.head_dim));
  }

  MemoryUse layer_promise(const ModelShape& shape, const KeptSlots& kept,
                          torch::ScalarType) const override {
    const int64_t h = shape.n_head_kv, d = shape.head_dim, g = group_for(d), slots = kept.slots;
    MemoryUse m;
    m.payload_bytes = 2 * h * slots * d * bits_ / 8;
    m.metadata_bytes = 2 * 2 * h * slots * (d / g) * 2;  // K and V, scale and zero, fp16
    m.slots = h * slots;
    m.tokens_seen = slots;
    return m;
  }

  // The group really used: min(group, head_dim).
  StageSpec effective_stage(const ModelShape& shape) const override {
    StageSpec s = stage();
    s.params["group"] = std::to_string(group_for(shape.head_dim));
    return s;
  }

 private:
  // The effective group: min(group, D); throws if it does not divide D.
  int64_t group_for(int64_t head_dim) const {
    const int64_t g = std::min(group_, head_dim);
    KVB_INPUT_CHECK(head_dim % g == 0 && g % (8 / bits_) == 0, spec(), ": head_dim ", head_dim,
                    " is not a multiple of the group (", g, ")");
    return g;
  }

  int bits_;
  int64_t group_;
};

double view_tolerance(const StageSpec& s) {
  const int64_t bits = spec_int(s, "bits");
  return bits == 2 ? 0.6 : bits == 4 ? 0.15 : 0.01;
}

}  // namespace

MethodEntry int_entry() {
  return {
      .name = "int",
      .family = "quant",
      .help =
          "Per-token asymmetric integer quantization of keys and values (FlexGen): groups of "
          "`group` channels along the head dim, fp16 scale and zero point per group, packed "
          "codes.",
      .params =
          {{"bits", "int", "4", {"2", "4", "8"}, 0, 0, "bits per element"},
           {"group", "int", "64", {}, 1, kMaxSpecGroup, "channels per group (capped at head_dim)"}},
      .make = StorageFactory([](const StageSpec& s) { return std::make_unique<IntMethod>(s); }),
      .finalize = nullptr,
      .contract = {.examples = {"int(bits=8)", "int(bits=4,group=32)", "int(bits=2)"},
                   .view_tolerance = view_tolerance,
                   .lossless = {},
                   .compressing = {"int(bits=4)"}},
  };
}

}  // namespace kvb
