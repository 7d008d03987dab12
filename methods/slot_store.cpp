#include "methods/slot_store.h"

#include <algorithm>

#include "common/check.h"

namespace kvb {

void SlotStore::drop_swap(int layer, const torch::Tensor& slot) {
  KVB_CHECK(false, "drop_swap: this store does not support it (check can_drop_swap())");
}

MemoryUse SlotStore::memory() const {
  return sum_layer_memory(n_layers(), [this](int l) { return memory(l); });
}

std::optional<MemoryUse> StorageMethod::promised_memory(const ModelShape& shape, int64_t tokens,
                                                        torch::ScalarType compute,
                                                        int64_t /*prompt_tokens*/) const {
  MemoryUse l = layer_promise(shape, KeptSlots::all(tokens), compute);
  MemoryUse m;
  m.payload_bytes = l.payload_bytes * shape.n_layers;
  m.metadata_bytes = l.metadata_bytes * shape.n_layers;
  m.slots = shape.n_head_kv * tokens * shape.n_layers;
  m.tokens_seen = tokens;
  return m;
}

int64_t KeptSlots::in(int64_t from, int64_t to) const {
  from = std::max<int64_t>(from, 0);
  to = std::min(to, tokens);
  if (to <= from) return 0;
  const int64_t n = kept_in && dropped() ? kept_in(from, to) : to - from;
  return std::max<int64_t>(0, std::min({n, to - from, slots}));
}

int64_t KeptSlots::blocks_touched(int64_t to, int64_t block) const {
  to = std::min(to, tokens);
  if (to <= 0) return 0;
  int64_t n = 0;
  for (int64_t b = 0; b * block < to; ++b) n += in(b * block, std::min(to, (b + 1) * block)) > 0;
  return std::min(n, in(0, to));
}

// ---- positions ------------------------------------------------------------------------------

void SlotPositions::append(const torch::Tensor& pos, int64_t batch, int64_t heads) {
  const int64_t t = pos.size(0);
  if (t == 0) return;
  b_ = batch;
  h_ = heads;
  opts_ = pos.options().dtype(torch::kLong);
  torch::Tensor p = pos.to(torch::kCPU);
  const int64_t p0 = p[0].item<int64_t>(), pl = p[t - 1].item<int64_t>();
  const bool contiguous = pl - p0 == t - 1 && (len_ == 0 || p0 == first_ + len_);
  if (!explicit_ && contiguous) {
    if (len_ == 0) first_ = p0;
    len_ += t;
    last_ = pl;
    extend_implicit();
    return;
  }
  materialize();
  if (pos_.size(2) < len_ + t) {
    torch::Tensor grown =
        torch::empty({b_, h_, std::max<int64_t>(len_ + t, 2 * pos_.size(2))}, opts_);
    grown.narrow(2, 0, len_).copy_(pos_.narrow(2, 0, len_));
    pos_ = grown;
  }
  pos_.narrow(2, len_, t)
      .copy_(pos.to(opts_.device(), torch::kLong).view({1, 1, t}).expand({b_, h_, t}));
  len_ += t;
  last_ = pl;
}

void SlotPositions::extend_implicit() {
  const int64_t cap = seq_.defined() ? seq_.size(0) : 0;
  if (cap >= len_ && seq_first_ == first_ && seq_.device() == opts_.device()) return;
  const int64_t grown = std::max<int64_t>(len_, std::max<int64_t>(64, 2 * cap));
  seq_ = torch::arange(first_, first_ + grown, opts_);
  seq_first_ = first_;
}

void SlotPositions::materialize() {
  if (explicit_) return;
  torch::Tensor p = torch::empty({b_, h_, std::max<int64_t>(len_, 16)}, opts_);
  if (len_ > 0)
    p.narrow(2, 0, len_)
        .copy_(
            torch::arange(first_, first_ + len_, opts_).view({1, 1, len_}).expand({b_, h_, len_}));
  pos_ = p;
  explicit_ = true;
}

void SlotPositions::set(const torch::Tensor& pos) {
  b_ = pos.size(0);
  h_ = pos.size(1);
  len_ = pos.size(2);
  opts_ = pos.options().dtype(torch::kLong);
  pos_ = pos.to(torch::kLong).clone();
  explicit_ = true;
}

torch::Tensor SlotPositions::view() const {
  if (explicit_) return pos_.narrow(2, 0, len_);
  if (len_ == 0) return torch::empty({b_, h_, 0}, opts_);
  return seq_.narrow(0, 0, len_).view({1, 1, len_}).expand({b_, h_, len_});
}

void SlotPositions::keep(const torch::Tensor& idx) {
  materialize();
  torch::Tensor g = pos_.narrow(2, 0, len_).gather(2, idx);
  len_ = idx.size(2);
  pos_.narrow(2, 0, len_).copy_(g);
}

void SlotPositions::drop_swap(const torch::Tensor& slot) {
  materialize();
  KVB_CHECK(len_ > 0, "drop_swap: no slots");
  torch::Tensor src = pos_.narrow(2, len_ - 1, 1).clone();  // [B, H, 1]
  pos_.scatter_(2, slot.view({b_, h_, 1}), src);
  --len_;
}

SlotPositions SlotPositions::clone() const {
  SlotPositions c = *this;
  if (pos_.defined()) c.pos_ = pos_.clone();
  return c;
}

// ---- row buffers ----------------------------------------------------------------------------

void reserve_rows(torch::Tensor& buf, int64_t used, int64_t need, int64_t b, int64_t h, int64_t x,
                  const torch::TensorOptions& opts) {
  if (need == 0 || (buf.defined() && buf.size(2) >= need)) return;
  const int64_t cap = buf.defined() ? buf.size(2) : 0;
  const int64_t new_cap = std::max<int64_t>(need, std::max<int64_t>(64, 2 * cap));
  torch::Tensor grown = torch::empty({b, h, new_cap, x}, opts);
  if (used > 0) grown.narrow(2, 0, used).copy_(buf.narrow(2, 0, used));
  buf = grown;
}

void keep_rows(torch::Tensor& buf, int64_t used, const torch::Tensor& idx) {
  const int64_t n = idx.size(2);
  if (n == 0 || !buf.defined()) return;
  torch::Tensor e = idx.unsqueeze(-1).expand({idx.size(0), idx.size(1), n, buf.size(3)});
  torch::Tensor g = buf.narrow(2, 0, used).gather(2, e);
  buf.narrow(2, 0, n).copy_(g);
}

void drop_swap_rows(torch::Tensor& buf, int64_t used, const torch::Tensor& slot) {
  const int64_t b = buf.size(0), h = buf.size(1), x = buf.size(3);
  torch::Tensor src = buf.narrow(2, used - 1, 1).clone();  // [B, H, 1, X]
  buf.scatter_(2, slot.view({b, h, 1, 1}).expand({b, h, 1, x}), src);
}

void keep_slots(std::initializer_list<torch::Tensor*> rows, SlotPositions& pos, int64_t& len,
                const torch::Tensor& idx) {
  for (torch::Tensor* t : rows) keep_rows(*t, len, idx);
  pos.keep(idx);
  len = idx.size(2);
}

void drop_swap_slots(std::initializer_list<torch::Tensor*> rows, SlotPositions& pos, int64_t& len,
                     const torch::Tensor& slot) {
  for (torch::Tensor* t : rows) drop_swap_rows(*t, len, slot);
  pos.drop_swap(slot);
  --len;
}

torch::Tensor clone_rows(const torch::Tensor& buf) { return buf.defined() ? buf.clone() : buf; }

}  // namespace kvb
