#include "methods/quant/full.h"

#include <vector>

#include "harness/common/check.h"

namespace kvb {
namespace {

const char* dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat16: return "fp16";
    case torch::kBFloat16: return "bf16";
    default: return "fp32";
  }
}

// Keys and values held densely in a growing buffer per layer. Capacity doubles, so appending a
// decode step is amortised O(1) and view() is a narrow() of the buffer (no copy).
class FullState : public KVCacheState {
 public:
  FullState(const ModelShape& shape, torch::ScalarType dtype) : shape_(shape), dtype_(dtype) {
    layers_.resize(static_cast<size_t>(shape.n_layers));
  }

  void append(int layer, const KVAppend& a) override {
    Layer& L = layers_.at(static_cast<size_t>(layer));
    const int64_t t = a.k.size(2);
    if (!L.k.defined() || L.len + t > L.k.size(2)) grow(L, a, L.len + t);
    L.k.narrow(2, L.len, t).copy_(a.k);
    L.v.narrow(2, L.len, t).copy_(a.v);
    L.pos.narrow(0, L.len, t).copy_(a.pos);
    L.len += t;
  }

  KVView view(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    KVView v;
    if (L.len == 0) return v;
    v.k = L.k.narrow(2, 0, L.len);
    v.v = L.v.narrow(2, 0, L.len);
    v.pos = L.pos.narrow(0, 0, L.len).view({1, 1, L.len}).expand({L.k.size(0), L.k.size(1), L.len});
    return v;
  }

  MemoryUse memory(int layer) const override {
    const Layer& L = layers_.at(static_cast<size_t>(layer));
    MemoryUse m;
    if (L.len == 0) return m;
    const int64_t b = L.k.size(0), h = L.k.size(1), d = L.k.size(3);
    m.payload_bytes = 2 * b * h * L.len * d * static_cast<int64_t>(L.k.element_size());
    m.metadata_bytes = 0;  // positions are implicit (contiguous 0..len-1 within a window)
    m.tokens_seen = L.len;
    m.slots = b * h * L.len;
    return m;
  }

  MemoryUse memory() const override {
    return sum_layer_memory(static_cast<int>(layers_.size()), [this](int l) { return memory(l); });
  }

  std::unique_ptr<KVCacheState> clone() const override {
    auto s = std::make_unique<FullState>(shape_, dtype_);
    for (size_t i = 0; i < layers_.size(); ++i) {
      const Layer& L = layers_[i];
      Layer& D = s->layers_[i];
      D.len = L.len;
      if (L.k.defined()) {
        D.k = L.k.clone();
        D.v = L.v.clone();
        D.pos = L.pos.clone();
      }
    }
    return s;
  }

 private:
  struct Layer {
    torch::Tensor k, v;  // [B, H_kv, capacity, D]
    torch::Tensor pos;   // [capacity] int64
    int64_t len = 0;
  };

  void grow(Layer& L, const KVAppend& a, int64_t need) {
    int64_t cap = L.k.defined() ? L.k.size(2) : 0;
    int64_t new_cap = std::max<int64_t>(need, std::max<int64_t>(64, cap * 2));
    auto opts = a.k.options().dtype(dtype_);
    torch::Tensor k = torch::empty({a.k.size(0), a.k.size(1), new_cap, a.k.size(3)}, opts);
    torch::Tensor v = torch::empty({a.v.size(0), a.v.size(1), new_cap, a.v.size(3)}, opts);
    torch::Tensor pos = torch::empty({new_cap}, a.pos.options().dtype(torch::kLong));
    if (L.len > 0) {
      k.narrow(2, 0, L.len).copy_(L.k.narrow(2, 0, L.len));
      v.narrow(2, 0, L.len).copy_(L.v.narrow(2, 0, L.len));
      pos.narrow(0, 0, L.len).copy_(L.pos.narrow(0, 0, L.len));
    }
    L.k = k;
    L.v = v;
    L.pos = pos;
  }

  ModelShape shape_;
  torch::ScalarType dtype_;
  std::vector<Layer> layers_;
};

}  // namespace

std::string FullMethod::spec() const { return std::string("full(dtype=") + dtype_name(dtype_) + ")"; }

std::unique_ptr<KVCacheState> FullMethod::make_state(const ModelShape& shape) const {
  return std::make_unique<FullState>(shape, dtype_);
}

std::optional<MemoryUse> FullMethod::promised_memory(const ModelShape& shape, int64_t tokens,
                                                     torch::ScalarType) const {
  MemoryUse m;
  const int64_t es = static_cast<int64_t>(c10::elementSize(dtype_));
  m.payload_bytes = shape.n_layers * 2 * shape.n_head_kv * tokens * shape.head_dim * es;
  m.tokens_seen = tokens;
  m.slots = shape.n_layers * shape.n_head_kv * tokens;
  return m;
}

}  // namespace kvb
