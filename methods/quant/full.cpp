#include "methods/quant/full.h"

#include <vector>

#include "common/check.h"
#include "common/dtype.h"
#include "kernels/cpu/kivi_attention.h"
#include "methods/registry.h"

namespace kvb {
namespace {

// Per layer: k, v [B, H_kv, capacity, D] in dtype; the first `len` slots are live.
class FullStore : public SlotStore {
 public:
  FullStore(const ModelShape& shape, torch::ScalarType dtype)
      : dtype_(dtype), layers_(static_cast<size_t>(shape.n_layers)) {}

  void append(int layer, const KVAppend& a) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    const int64_t b = a.k.size(0), h = a.k.size(1), t = a.k.size(2), d = a.k.size(3);
    if (t == 0) return;
    auto opts = a.k.options().dtype(dtype_);
    reserve_rows(L.k, L.len, L.len + t, b, h, d, opts);
    reserve_rows(L.v, L.len, L.len + t, b, h, d, opts);
    L.k.narrow(2, L.len, t).copy_(a.k);
    L.v.narrow(2, L.len, t).copy_(a.v);
    L.pos.append(a.pos, b, h);
    L.len += t;
    L.seen += t;
  }

  KVView view(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    KVView v;
    if (L.len == 0) return v;
    v.k = L.k.narrow(2, 0, L.len);
    v.v = L.v.narrow(2, 0, L.len);
    v.pos = L.pos.view();
    return v;
  }

  // Fused decode attention (one query per head, fp32 on the CPU): kernels/cpu/kivi_attention.h
  // over a cache that is all full-precision "residual", which reads each key and value once,
  // split over slot blocks and threads, where the dense path's matmul first packs a copy of K^T.
  // Other shapes, dtypes and devices: nullopt (the dense view).
  std::optional<AttendResult> attend(int layer, const torch::Tensor& q,
                                     double scale) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    if (L.len == 0 || !q.defined() || q.dim() != 4 || q.size(2) != 1 ||
        q.scalar_type() != torch::kFloat32 || dtype_ != torch::kFloat32 || !q.device().is_cpu() ||
        !L.k.device().is_cpu())
      return std::nullopt;
    kernels::KiviCache c;
    c.key_residual = L.k.narrow(2, 0, L.len);
    c.value_residual = L.v.narrow(2, 0, L.len);
    kernels::AttentionPart r = kernels::kivi_decode_attention(q, c, scale);
    return AttendResult{r.out, r.lse};
  }

  int64_t slots(int layer) const override { return layers_.at(static_cast<size_t>(layer)).len; }
  torch::Tensor positions(int layer) const override {
    return layers_.at(static_cast<size_t>(layer)).pos.view();
  }
  int n_layers() const override { return static_cast<int>(layers_.size()); }

  void keep(int layer, const torch::Tensor& idx) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    keep_slots({&L.k, &L.v}, L.pos, L.len, idx);
  }

  bool can_drop_swap() const override { return true; }
  void drop_swap(int layer, const torch::Tensor& slot) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    drop_swap_slots({&L.k, &L.v}, L.pos, L.len, slot);
  }

  MemoryUse memory(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    MemoryUse m;
    m.tokens_seen = L.seen;
    if (L.len == 0) return m;
    const int64_t b = L.k.size(0), h = L.k.size(1), d = L.k.size(3);
    m.payload_bytes = 2 * b * h * L.len * d * static_cast<int64_t>(L.k.element_size());
    m.metadata_bytes = L.pos.bytes();
    m.slots = b * h * L.len;
    return m;
  }
  using SlotStore::memory;

  std::unique_ptr<SlotStore> clone_store() const override {
    auto c = std::make_unique<FullStore>(*this);
    for (Layer& L : c->layers_) {
      L.k = clone_rows(L.k);
      L.v = clone_rows(L.v);
      L.pos = L.pos.clone();
    }
    return c;
  }

 private:
  struct Layer {
    torch::Tensor k, v;  // [B, H_kv, capacity, D] dtype
    SlotPositions pos;
    int64_t len = 0, seen = 0;
  };
  torch::ScalarType dtype_;
  std::vector<Layer> layers_;
};

double view_tolerance(const StageSpec& s) {
  const std::string& dtype = s.params.at("dtype");
  return dtype == "bf16" ? 1e-2 : dtype == "fp16" ? 1e-3 : 0.0;
}

}  // namespace

FullMethod::FullMethod(torch::ScalarType dtype)
    : FullMethod(StageSpec{"full", {{"dtype", dtype_name(dtype)}}}) {}

FullMethod::FullMethod(const StageSpec& stage)
    : StorageMethod(stage), dtype_(parse_dtype(stage.params.at("dtype"))) {}

std::unique_ptr<SlotStore> FullMethod::make_store(const ModelShape& shape) const {
  return std::make_unique<FullStore>(shape, dtype_);
}

MemoryUse FullMethod::layer_promise(const ModelShape& shape, const KeptSlots& kept,
                                    torch::ScalarType) const {
  const int64_t slots = kept.slots;
  MemoryUse m;
  const int64_t es = static_cast<int64_t>(c10::elementSize(dtype_));
  m.payload_bytes = 2 * shape.n_head_kv * slots * shape.head_dim * es;
  m.slots = shape.n_head_kv * slots;
  m.tokens_seen = slots;
  return m;
}

MethodEntry full_entry() {
  return {
      .name = "full",
      .family = "baseline",
      .help = "Uncompressed cache: keys and values stored densely in the given dtype (by "
              "default the run's compute dtype).",
      .params = {{"dtype",
                  "enum",
                  "auto",
                  {"fp32", "fp16", "bf16"},
                  0,
                  0,
                  "storage dtype (auto: the run's compute dtype)",
                  /*auto_is_compute_dtype=*/true}},
      .make = StorageFactory([](const StageSpec& s) { return std::make_unique<FullMethod>(s); }),
      .finalize = nullptr,
      .contract = {.examples = {"full", "full(dtype=fp16)", "full(dtype=bf16)"},
                   .view_tolerance = view_tolerance,
                   .lossless = {"full"},
                   .compressing = {}},
  };
}

}  // namespace kvb
