#include "methods/head_split_store.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/check.h"

namespace kvb {

HeadSplitStore::HeadSplitStore(std::shared_ptr<const StorageMethod> storage,
                               const ModelShape& shape, bool compensate)
    : storage_(std::move(storage)), shape_(shape), one_(shape), compensate_(compensate) {
  one_.n_head_kv = 1;
  one_.n_head_q = shape.n_head_q / std::max<int64_t>(shape.n_head_kv, 1);
}

const HeadSplitStore::Compensation& HeadSplitStore::compensation(int layer, int64_t b,
                                                                 int64_t h) const {
  static const Compensation none;
  if (!compensate_ || batch_ == 0) return none;
  return comp_.at(static_cast<size_t>(layer)).at(static_cast<size_t>(b * shape_.n_head_kv + h));
}

int64_t HeadSplitStore::comp_slots(int layer, int64_t b, int64_t h) const {
  return compensation(layer, b, h).count > 0 ? 1 : 0;
}

void HeadSplitStore::fold(int layer, int64_t b, int64_t h, const torch::Tensor& dropped) {
  if (!compensate_ || dropped.numel() == 0) return;
  const KVView x = at(b, h).view(layer);
  torch::Tensor idx = dropped.to(x.k.device(), torch::kLong);
  const int64_t n = idx.numel();
  torch::Tensor k = x.k[0][0].index_select(0, idx).to(torch::kFloat32).sum(0);  // [D]
  torch::Tensor v = x.v[0][0].index_select(0, idx).to(torch::kFloat32).sum(0);
  Compensation& c = comp_[static_cast<size_t>(layer)][static_cast<size_t>(b * shape_.n_head_kv + h)];
  if (c.count > 0) {
    k += c.k.to(torch::kFloat32) * static_cast<double>(c.count);
    v += c.v.to(torch::kFloat32) * static_cast<double>(c.count);
  }
  c.count += n;
  c.k = (k / static_cast<double>(c.count)).to(compute_);
  c.v = (v / static_cast<double>(c.count)).to(compute_);
}

void HeadSplitStore::append(int layer, const KVAppend& a) {
  const int64_t b = a.k.size(0), h = a.k.size(1), t = a.k.size(2);
  KVB_CHECK(h == shape_.n_head_kv, "head-split store: ", h, " KV heads appended, shape has ",
            shape_.n_head_kv);
  if (batch_ == 0) {
    batch_ = b;
    for (int64_t i = 0; i < b * h; ++i) heads_.push_back(storage_->make_store(one_));
    compute_ = a.k.scalar_type();
    if (compensate_)
      comp_.assign(static_cast<size_t>(shape_.n_layers),
                   std::vector<Compensation>(static_cast<size_t>(b * h)));
  }
  KVB_CHECK(b == batch_, "head-split store: batch ", b, " appended to a store of batch ", batch_);
  if (t == 0) return;
  const int64_t g = a.q.defined() ? a.q.size(1) / h : 0;
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t hi = 0; hi < h; ++hi) {
      KVAppend one;
      one.k = a.k.narrow(0, bi, 1).narrow(1, hi, 1);
      one.v = a.v.narrow(0, bi, 1).narrow(1, hi, 1);
      if (a.k_pre_rope.defined()) one.k_pre_rope = a.k_pre_rope.narrow(0, bi, 1).narrow(1, hi, 1);
      if (a.q.defined()) one.q = a.q.narrow(0, bi, 1).narrow(1, hi * g, g);
      one.pos = a.pos;
      at(bi, hi).append(layer, one);
    }
}

int64_t HeadSplitStore::slots(int layer) const {
  int64_t s = 0;
  for (const auto& h : heads_) s = std::max(s, h->slots(layer));
  return s;
}

torch::Tensor HeadSplitStore::head_slots(int layer) const {
  torch::Tensor n = torch::zeros({std::max<int64_t>(batch_, 1), shape_.n_head_kv}, torch::kLong);
  auto a = n.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch_; ++b)
    for (int64_t h = 0; h < shape_.n_head_kv; ++h) a[b][h] = at(b, h).slots(layer);
  return n;
}

const SlotStore* HeadSplitStore::head(int64_t b, int64_t h) const {
  return batch_ == 0 ? nullptr : &at(b, h);
}

torch::Tensor HeadSplitStore::positions(int layer) const {
  const int64_t s = slots(layer), b = std::max<int64_t>(batch_, 1), hk = shape_.n_head_kv;
  torch::Tensor pos = torch::full({b, hk, s}, -1, torch::kLong);
  for (int64_t bi = 0; bi < batch_; ++bi)
    for (int64_t hi = 0; hi < hk; ++hi) {
      const int64_t n = at(bi, hi).slots(layer);
      if (n > 0) pos[bi][hi].narrow(0, 0, n).copy_(at(bi, hi).positions(layer)[0][0]);
    }
  return pos;
}

std::vector<HeadView> HeadSplitStore::head_views(int layer) const {
  std::vector<HeadView> out;
  const int64_t hk = shape_.n_head_kv;
  // Heads of one length without compensation slots: view() is one concatenation, no padding,
  // and one batched attention over it is cheaper than a call per head.
  bool uneven = false;
  for (int64_t bi = 0; bi < batch_ && !uneven; ++bi)
    for (int64_t hi = 0; hi < hk && !uneven; ++hi)
      uneven = comp_slots(layer, bi, hi) > 0 || at(bi, hi).slots(layer) != at(0, 0).slots(layer);
  if (!uneven) return out;
  for (int64_t bi = 0; bi < batch_; ++bi)
    for (int64_t hi = 0; hi < hk; ++hi) {
      HeadView hv;
      KVView x = at(bi, hi).view(layer);
      const Compensation& c = compensation(layer, bi, hi);
      if (x.slots() > 0) hv.segments.push_back(std::move(x));
      if (c.count > 0) {  // the compensation slot: a segment of its own, after the stored slots
        const auto opts = hv.segments.empty() ? c.k.options() : hv.segments[0].k.options();
        const int64_t d = c.k.size(-1);
        KVView cs;
        cs.k = c.k.reshape({1, 1, 1, d}).to(opts);
        cs.v = c.v.reshape({1, 1, 1, d}).to(opts);
        cs.pos = torch::full({1, 1, 1}, kCompensationPos, torch::dtype(torch::kLong).device(opts.device()));
        cs.logit_bias = torch::full({1, 1, 1}, std::log(static_cast<double>(c.count)),
                                    opts.dtype(torch::kFloat32));
        hv.segments.push_back(std::move(cs));
      }
      out.push_back(std::move(hv));
    }
  return out;
}

KVView HeadSplitStore::view(int layer) const {
  KVView out;
  const int64_t hk = shape_.n_head_kv;
  int64_t s = 0;  // the longest head, its compensation slot included
  bool any_comp = false;
  for (int64_t bi = 0; bi < batch_; ++bi)
    for (int64_t hi = 0; hi < hk; ++hi) {
      const int64_t c = comp_slots(layer, bi, hi);
      any_comp = any_comp || c > 0;
      s = std::max(s, at(bi, hi).slots(layer) + c);
    }
  if (s == 0) return out;
  bool padded = any_comp;
  std::vector<KVView> views;
  for (const auto& h : heads_) {
    views.push_back(h->view(layer));
    padded = padded || views.back().slots() != s || views.back().logit_bias.defined();
  }
  const KVView& first = *std::find_if(views.begin(), views.end(),
                                      [](const KVView& v) { return v.slots() > 0; });
  const int64_t d = first.k.size(3);
  auto opts = first.k.options();
  if (!padded) {  // every head holds s slots: one concatenation
    std::vector<torch::Tensor> k, v, p;
    for (const KVView& x : views) {
      k.push_back(x.k);
      v.push_back(x.v);
      p.push_back(x.pos);
    }
    out.k = torch::cat(k, 1).view({batch_, hk, s, d});
    out.v = torch::cat(v, 1).view({batch_, hk, s, d});
    out.pos = torch::cat(p, 1).view({batch_, hk, s});
    return out;
  }
  out.k = torch::zeros({batch_, hk, s, d}, opts);
  out.v = torch::zeros({batch_, hk, s, d}, opts);
  out.pos = torch::full({batch_, hk, s}, -1, first.pos.options());
  out.logit_bias = torch::full({batch_, hk, s}, -std::numeric_limits<float>::infinity(),
                               opts.dtype(torch::kFloat32));
  for (int64_t bi = 0; bi < batch_; ++bi)
    for (int64_t hi = 0; hi < hk; ++hi) {
      const KVView& x = views[static_cast<size_t>(bi * hk + hi)];
      const int64_t n = x.slots();
      if (n > 0) {
        out.k[bi][hi].narrow(0, 0, n).copy_(x.k[0][0]);
        out.v[bi][hi].narrow(0, 0, n).copy_(x.v[0][0]);
        out.pos[bi][hi].narrow(0, 0, n).copy_(x.pos[0][0]);
        torch::Tensor bias = out.logit_bias[bi][hi].narrow(0, 0, n);
        if (x.logit_bias.defined()) bias.copy_(x.logit_bias[0][0]);
        else bias.zero_();
      }
      const Compensation& c = compensation(layer, bi, hi);
      if (c.count == 0) continue;
      out.k[bi][hi][n].copy_(c.k);
      out.v[bi][hi][n].copy_(c.v);
      out.pos[bi][hi][n] = kCompensationPos;
      out.logit_bias[bi][hi][n] = std::log(static_cast<double>(c.count));
    }
  return out;
}

MemoryUse HeadSplitStore::memory(int layer) const {
  MemoryUse m;
  for (const auto& h : heads_) {
    const MemoryUse x = h->memory(layer);
    m.payload_bytes += x.payload_bytes;
    m.metadata_bytes += x.metadata_bytes;
    m.slots += x.slots;
    m.tokens_seen = std::max(m.tokens_seen, x.tokens_seen);
  }
  if (compensate_ && !comp_.empty())
    for (const Compensation& c : comp_[static_cast<size_t>(layer)]) {
      if (c.count == 0) continue;
      m.payload_bytes += 2 * static_cast<int64_t>(c.k.numel() * c.k.element_size());
      m.metadata_bytes += 8;
      m.slots += 1;
    }
  return m;
}

void HeadSplitStore::keep_ragged(int layer, const torch::Tensor& idx, const torch::Tensor& len) {
  torch::Tensor ix = idx.to(torch::kCPU, torch::kLong).contiguous();
  torch::Tensor ln = len.defined() ? len.to(torch::kCPU, torch::kLong).contiguous() : torch::Tensor();
  KVB_CHECK(ix.dim() == 3 && ix.size(0) == batch_ && ix.size(1) == shape_.n_head_kv,
            "head-split keep: indices ", ix.sizes(), " for batch ", batch_, " and ",
            shape_.n_head_kv, " heads");
  for (int64_t b = 0; b < batch_; ++b)
    for (int64_t h = 0; h < shape_.n_head_kv; ++h) {
      SlotStore& st = at(b, h);
      const int64_t have = st.slots(layer);
      const int64_t n = ln.defined() ? ln[b][h].item<int64_t>() : ix.size(2);
      KVB_CHECK(n >= 0 && n <= have && n <= ix.size(2), "head-split keep: head ", h, " keeps ", n,
                " of ", have, " slots");
      if (n == have) continue;  // ascending and as many as held: all of them
      torch::Tensor row = ix[b][h].narrow(0, 0, n).view({1, 1, n});
      if (compensate_) {
        torch::Tensor gone = torch::ones({have}, torch::kBool);
        gone.index_fill_(0, row.view({n}), false);
        fold(layer, b, h, gone.nonzero().view({-1}));
      }
      st.keep(layer, row.to(idx.device()));
    }
}

bool HeadSplitStore::can_drop_swap() const {
  if (!heads_.empty()) return heads_.front()->can_drop_swap();
  return storage_->make_store(one_)->can_drop_swap();
}

void HeadSplitStore::drop_one(int layer, const torch::Tensor& slot) {
  torch::Tensor sl = slot.to(torch::kCPU, torch::kLong).contiguous();
  for (int64_t b = 0; b < batch_; ++b)
    for (int64_t h = 0; h < shape_.n_head_kv; ++h) {
      const int64_t j = sl[b][h].item<int64_t>();
      if (j < 0) continue;
      SlotStore& st = at(b, h);
      const int64_t n = st.slots(layer);
      KVB_CHECK(j < n, "head-split drop: slot ", j, " of ", n);
      fold(layer, b, h, torch::full({1}, j, torch::kLong));
      torch::Tensor one = torch::full({1, 1}, j, slot.options().dtype(torch::kLong));
      if (st.can_drop_swap()) {
        st.drop_swap(layer, one);
      } else {
        torch::Tensor base = torch::arange(n - 1, one.options()).view({1, 1, n - 1});
        st.keep(layer, base + (base >= j).to(torch::kLong));
      }
    }
}

std::unique_ptr<SlotStore> HeadSplitStore::clone_store() const {
  auto c = std::make_unique<HeadSplitStore>(storage_, shape_, compensate_);
  c->batch_ = batch_;
  c->compute_ = compute_;
  for (const auto& h : heads_) c->heads_.push_back(h->clone_store());
  c->comp_ = comp_;  // the tensors are replaced, never written in place
  return c;
}

void apply_ragged(HeadSplitStore& store, int layer, const Eviction& e) {
  if (e.drop_one.defined()) store.drop_one(layer, e.drop_one);
  else if (e.keep.defined()) store.keep_ragged(layer, e.keep, e.keep_len);
}

}  // namespace kvb
