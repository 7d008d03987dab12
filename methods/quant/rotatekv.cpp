// `rotatekv(bits=2|4|8, group=64, sink=4, pre_rope=true)`: RotateKV (Su et al., IJCAI 2025,
// ZunhaiSu/RotateKV).
//
//   rotation   every key and value is turned by the orthonormal fast Walsh–Hadamard transform
//              over its head_dim channels (kernels/cpu/hadamard.h; head_dim must be a power of
//              2, others are refused), which spreads a channel outlier over all channels;
//   reordering keys' rotated channels are then permuted, per layer and KV head, in ascending
//              order of their mean |value| over the first chunk appended to the layer (its
//              non-sink tokens when it has any), so that each quantization group holds channels
//              of like magnitude (the paper's outlier-aware reordering, which sorts per-channel
//              statistics of calibration keys; ours come from the first chunk, and in decode mode
//              (chunk = 1) from the first token alone). Values are rotated, not reordered (the
//              paper's value rotation);
//   quantization per token, groups of `group` consecutive (rotated, reordered) channels,
//              asymmetric, fp16 scale and zero point, packed codes (kernels/cpu/quant_kernels.h,
//              as `int`): at equal bits and group the same bytes per token as int;
//   sinks      the first `sink` tokens appended keep their keys and values in the compute dtype,
//              unrotated (exact in view()).
// view() dequantizes, undoes the permutation and applies the transform again (it is its own
// inverse).
//
// Keys before RoPE (pre_rope=true, the paper's pre-RoPE rotation): the store takes
// KVAppend::k_pre_rope and view() gives keys before RoPE (KVCacheState::view_keys_pre_rope: the
// model rotates each slot at its source position), so RoPE cannot re-mix the channels the
// reordering sorted. pre_rope=false (the ablation) rotates post-RoPE keys.
//
// Deviations from the paper: (1) the model applies RoPE to the de-rotated keys when it reads them
// (the paper keeps keys rotated and folds the transform into the projections). (2) The
// rotation is per KV head, not grouped across heads: a chain's selectors keep different tokens
// per KV head, so a transform mixing heads could not be inverted for a slot. (3) Sinks are the
// first tokens, not tokens found by massive activations (the store never sees hidden states).
//
// Bytes per layer: payload 2 x slots x head_dim x bits/8 per KV head (every slot has a code row,
// sink tokens included) + 2 x min(sink, tokens) x head_dim x compute-dtype bytes per KV head (the
// sink rows, held whether or not a chain keeps their slots); metadata 2 (K, V) x 2 (scale, zero)
// x 2 bytes per group per slot, + H_kv x head_dim x 2 (the key permutation, int16, once the layer
// has seen a token) + min(sink, tokens) x 8 (the sinks' positions), + explicit positions. The
// transform holds nothing (no random signs).
#include <algorithm>

#include "common/check.h"
#include "kernels/cpu/hadamard.h"
#include "kernels/cpu/quant_kernels.h"
#include "methods/registry.h"

namespace kvb {
namespace {

class RotateStore : public SlotStore {
 public:
  RotateStore(const ModelShape& shape, int bits, int64_t group, int64_t sink, bool pre_rope)
      : bits_(bits),
        group_(group),
        sink_(sink),
        pre_rope_(pre_rope),
        layers_(static_cast<size_t>(shape.n_layers)) {}

  bool view_keys_pre_rope(int) const override { return pre_rope_; }

  void append(int layer, const KVAppend& a) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    KVB_CHECK(!pre_rope_ || a.k_pre_rope.defined(),
              "rotatekv: pre_rope=true needs KVAppend::k_pre_rope");
    const torch::Tensor& key = pre_rope_ ? a.k_pre_rope : a.k;  // [B, H, T, D]
    const int64_t b = key.size(0), h = key.size(1), t = key.size(2), d = key.size(3);
    if (t == 0) return;
    compute_ = key.scalar_type();
    // Sinks: the first `sink` tokens appended, kept as given.
    const int64_t m = std::min(t, std::max<int64_t>(0, sink_ - L.seen));
    if (m > 0) {
      auto opts = key.options();
      reserve_rows(L.sink_k, L.n_sink, L.n_sink + m, b, h, d, opts);
      reserve_rows(L.sink_v, L.n_sink, L.n_sink + m, b, h, d, opts);
      L.sink_k.narrow(2, L.n_sink, m).copy_(key.narrow(2, 0, m));
      L.sink_v.narrow(2, L.n_sink, m).copy_(a.v.narrow(2, 0, m));
      torch::Tensor p = a.pos.narrow(0, 0, m).to(torch::kCPU, torch::kLong);
      for (int64_t i = 0; i < m; ++i) L.sink_pos.push_back(p[i].item<int64_t>());
      L.n_sink += m;
      L.sink_lookup = torch::Tensor();
    }
    torch::Tensor rk = kernels::fwht(key), rv = kernels::fwht(a.v);  // [B, H, T, D] float32
    if (!L.perm.defined()) {
      const torch::Tensor stat_rows = m < t ? rk.narrow(2, m, t - m) : rk;
      const torch::Tensor stat = stat_rows.abs().mean(std::vector<int64_t>{0, 2});  // [H, D]
      L.perm = std::get<1>(torch::sort(stat, /*stable=*/true, /*dim=*/1, /*descending=*/false))
                   .to(torch::kShort)
                   .contiguous();
    }
    auto u8 = key.options().dtype(torch::kUInt8), f16 = key.options().dtype(torch::kHalf);
    for (Side* s : {&L.k, &L.v}) {
      reserve_rows(s->codes, L.len, L.len + t, b, h, d * bits_ / 8, u8);
      reserve_rows(s->scale, L.len, L.len + t, b, h, d / group_, f16);
      reserve_rows(s->zero, L.len, L.len + t, b, h, d / group_, f16);
    }
    quantize(L.k, rk.gather(3, perm_index(L, rk.sizes())), L.len);
    quantize(L.v, rv, L.len);
    L.pos.append(a.pos, b, h);
    L.len += t;
    L.seen += t;
  }

  KVView view(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    KVView v;
    if (L.len == 0) return v;
    torch::Tensor kp = dequantize(L.k, L.len);  // rotated, reordered
    torch::Tensor kr = torch::empty_like(kp).scatter_(3, perm_index(L, kp.sizes()), kp);
    v.k = out(kernels::fwht(kr));
    v.v = out(kernels::fwht(dequantize(L.v, L.len)));
    v.pos = L.pos.view();
    if (L.n_sink > 0) put_sinks(L, v);
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
    if (L.perm.defined()) m.metadata_bytes += L.perm.numel() * 2;
    if (L.n_sink > 0) {
      const int64_t b = L.sink_k.size(0), h = L.sink_k.size(1), d = L.sink_k.size(3);
      m.payload_bytes += 2 * b * h * L.n_sink * d * static_cast<int64_t>(L.sink_k.element_size());
      m.metadata_bytes += L.n_sink * 8;
    }
    if (L.len == 0) return m;
    const int64_t b = L.k.codes.size(0), h = L.k.codes.size(1);
    m.payload_bytes += 2 * b * h * L.len * L.k.codes.size(3);
    m.metadata_bytes += 2 * 2 * b * h * L.len * L.k.scale.size(3) * 2 + L.pos.bytes();
    m.slots = b * h * L.len;
    return m;
  }
  using SlotStore::memory;

  std::unique_ptr<SlotStore> clone_store() const override {
    auto c = std::make_unique<RotateStore>(*this);
    for (Layer& L : c->layers_) {
      for (Side* s : {&L.k, &L.v})
        for (torch::Tensor* t : {&s->codes, &s->scale, &s->zero}) *t = clone_rows(*t);
      L.sink_k = clone_rows(L.sink_k);  // written by appends while sinks remain
      L.sink_v = clone_rows(L.sink_v);
      L.pos = L.pos.clone();  // perm and sink_lookup are never written in place
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
    torch::Tensor perm;                 // [H_kv, D] int16: rotated key channel at each stored place
    torch::Tensor sink_k, sink_v;       // [B, H_kv, capacity, D] compute dtype, rows 0..n_sink-1
    std::vector<int64_t> sink_pos;      // their positions, in append order
    mutable torch::Tensor sink_lookup;  // [2, n_sink] int64: sorted positions, their sink rows
    int64_t n_sink = 0;
    SlotPositions pos;
    int64_t len = 0, seen = 0;
  };

  static torch::Tensor perm_index(const Layer& L, torch::IntArrayRef sizes) {  // [B, H, N, D]
    return L.perm.to(torch::kLong).view({1, sizes[1], 1, sizes[3]}).expand(sizes);
  }

  // Slots holding a sink's position take the sink's full-precision rows.
  void put_sinks(const Layer& L, KVView& v) const {
    if (!L.sink_lookup.defined()) {
      torch::Tensor p = torch::tensor(L.sink_pos, torch::kLong);
      auto [sorted, order] = p.sort();
      L.sink_lookup = torch::stack({sorted, order});
    }
    const torch::Device dev = v.pos.device();
    const torch::Tensor sorted = L.sink_lookup[0].to(dev), order = L.sink_lookup[1].to(dev);
    const torch::Tensor pos = v.pos.contiguous();  // [B, H, S]
    const torch::Tensor at = torch::searchsorted(sorted, pos).clamp_max(L.n_sink - 1);
    const torch::Tensor hit = sorted.index_select(0, at.flatten()).view(at.sizes()) == pos;
    if (!hit.any().item<bool>()) return;
    const torch::Tensor row = order.index_select(0, at.flatten()).view(at.sizes());
    const torch::Tensor rows = row.unsqueeze(-1).expand(v.k.sizes());
    const torch::Tensor mask = hit.unsqueeze(-1);
    v.k = torch::where(mask, L.sink_k.narrow(2, 0, L.n_sink).gather(2, rows).to(v.k.dtype()), v.k);
    v.v = torch::where(mask, L.sink_v.narrow(2, 0, L.n_sink).gather(2, rows).to(v.v.dtype()), v.v);
  }

  void quantize(Side& s, const torch::Tensor& x, int64_t at) {  // x [B, H, T, D] float32
    const int64_t t = x.size(2);
    kernels::quantize_rows(x.contiguous(), bits_, group_, s.codes.narrow(2, at, t),
                           s.scale.narrow(2, at, t), s.zero.narrow(2, at, t));
  }

  torch::Tensor dequantize(const Side& s, int64_t len) const {
    const int64_t d = s.codes.size(3) * 8 / bits_;
    torch::Tensor o = torch::empty({s.codes.size(0), s.codes.size(1), len, d},
                                   s.codes.options().dtype(torch::kFloat32));
    kernels::dequantize_rows(s.codes.narrow(2, 0, len), s.scale.narrow(2, 0, len),
                             s.zero.narrow(2, 0, len), bits_, group_, o);
    return o;
  }

  torch::Tensor out(const torch::Tensor& x) const {
    return compute_ == torch::kFloat32 ? x : x.to(compute_);
  }

  int bits_;
  int64_t group_, sink_;
  bool pre_rope_;
  torch::ScalarType compute_ = torch::kFloat32;
  std::vector<Layer> layers_;
};

class RotateMethod : public StorageMethod {
 public:
  explicit RotateMethod(const StageSpec& stage)
      : StorageMethod(stage),
        bits_(static_cast<int>(spec_int(stage, "bits"))),
        group_(spec_int(stage, "group")),
        sink_(spec_int(stage, "sink")),
        pre_rope_(stage.params.at("pre_rope") == "true") {}

  bool stores_pre_rope_keys() const override { return pre_rope_; }

  std::unique_ptr<SlotStore> make_store(const ModelShape& shape) const override {
    return std::make_unique<RotateStore>(shape, bits_, group_for(shape.head_dim), sink_, pre_rope_);
  }

  MemoryUse layer_promise(const ModelShape& shape, const KeptSlots& kept,
                          torch::ScalarType compute) const override {
    const int64_t h = shape.n_head_kv, d = shape.head_dim, g = group_for(d), slots = kept.slots;
    const int64_t sinks = std::min(sink_, kept.tokens);
    const int64_t es = static_cast<int64_t>(c10::elementSize(compute));
    MemoryUse m;
    m.payload_bytes = 2 * h * slots * d * bits_ / 8 + 2 * h * sinks * d * es;
    m.metadata_bytes =
        2 * 2 * h * slots * (d / g) * 2 + (kept.tokens > 0 ? h * d * 2 : 0) + sinks * 8;
    m.slots = h * slots;
    m.tokens_seen = slots;
    return m;
  }

  // The sink rows and the permutation are held per store whatever a chain drops (see
  // Fp8Method: head-wise chains' one-head stores each hold their own).
  bool promise_exact_after_any_drops() const override { return false; }

  StageSpec effective_stage(const ModelShape& shape) const override {
    StageSpec s = stage();
    s.params["group"] = std::to_string(group_for(shape.head_dim));
    return s;
  }

 private:
  // The effective group: min(group, D); throws unless D is a power of 2 that it divides.
  int64_t group_for(int64_t head_dim) const {
    KVB_INPUT_CHECK(kernels::is_pow2(head_dim), spec(), ": head_dim ", head_dim,
                    " is not a power of 2 (the fast Walsh-Hadamard transform needs one)");
    const int64_t g = std::min(group_, head_dim);
    KVB_INPUT_CHECK(head_dim % g == 0 && g % (8 / bits_) == 0, spec(), ": head_dim ", head_dim,
                    " is not a multiple of the group (", g, ")");
    return g;
  }

  int bits_;
  int64_t group_, sink_;
  bool pre_rope_;
};

double view_tolerance(const StageSpec& s) {
  const int64_t bits = spec_int(s, "bits");
  return bits == 2 ? 0.6 : bits == 4 ? 0.15 : 0.01;
}

}  // namespace

MethodEntry rotatekv_entry() {
  return {
      .name = "rotatekv",
      .family = "quant",
      .help =
          "RotateKV: keys and values rotated per KV head by the fast Walsh-Hadamard transform, "
          "key channels reordered by magnitude (from the first chunk), per-token group "
          "quantization with fp16 scale and zero point, the first `sink` tokens kept in full "
          "precision. Keys are stored before RoPE (pre_rope=true; the model rotates them when "
          "read) or after it (pre_rope=false).",
      .params =
          {{"bits", "int", "2", {"2", "4", "8"}, 0, 0, "bits per element"},
           {"group", "int", "64", {}, 1, kMaxSpecGroup, "channels per group (capped at head_dim)"},
           {"sink", "int", "4", {}, 0, 1024, "first tokens kept in full precision"},
           {"pre_rope",
            "enum",
            "true",
            {"true", "false"},
            0,
            0,
            "rotate and store keys before RoPE (false: after it, the ablation)"}},
      .make = StorageFactory([](const StageSpec& s) { return std::make_unique<RotateMethod>(s); }),
      .finalize = nullptr,
      // The first example stores post-RoPE keys: every selector composes with it (Quest's page
      // bounds need post-RoPE keys).
      .contract = {.examples = {"rotatekv(pre_rope=false)", "rotatekv",
                                "rotatekv(bits=4,group=32,sink=0)", "rotatekv(sink=40)"},
                   .view_tolerance = view_tolerance,
                   .lossless = {},
                   .compressing = {"rotatekv", "rotatekv(pre_rope=false)"}},
  };
}

}  // namespace kvb
