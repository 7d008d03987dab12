#include "methods/chain.h"

#include <algorithm>

#include "common/check.h"
#include "methods/head_split_store.h"
#include "methods/quant/full.h"

namespace kvb {
namespace {

class ChainState : public KVCacheState {
 public:
  // A HeadSplitStore as the store makes the chain ragged: its one selector's evictions may keep
  // a different number of slots per head (SelectorMethod::ragged_heads()).
  // pre_rope: some stage attends at positions within the cache (SelectorMethod::
  // positions_in_cache): the store holds the keys before RoPE and the model rotates them.
  // store_pre_rope: the storage holds keys before RoPE itself (StorageMethod::
  // stores_pre_rope_keys), rotated by the model at their source positions.
  ChainState(std::unique_ptr<SlotStore> store, std::vector<std::unique_ptr<SelectorState>> sel,
             int64_t n_layers, bool pre_rope, bool store_pre_rope = false)
      : store_(std::move(store)), sel_(std::move(sel)),
        seen_(static_cast<size_t>(n_layers), 0), last_pos_(static_cast<size_t>(n_layers), -1),
        read_bytes_(static_cast<size_t>(n_layers), -1), pre_rope_(pre_rope),
        store_pre_rope_(store_pre_rope) {
    ragged_ = dynamic_cast<HeadSplitStore*>(store_.get());
    KVB_CHECK(!ragged_ || sel_.size() == 1, "chain: a ragged selector must be the only one");
  }

  void append(int layer, const KVAppend& a) override {
    const int64_t t = a.k.size(2);
    if (pre_rope_) {
      KVB_CHECK(a.k_pre_rope.defined(), "chain: positions in the cache need KVAppend::k_pre_rope");
      store_->append(layer, KVAppend{a.k_pre_rope, a.k_pre_rope, a.v, a.pos, a.q});
    } else {
      store_->append(layer, a);
    }
    seen_[layer] += t;
    if (t > 0) last_pos_[layer] = last_appended(a);
    SelectContext ctx = context(layer);
    for (auto& s : sel_) s->on_append(layer, a, ctx);
    if (!wants_attention(layer)) run_select(layer);
  }

  bool wants_attention(int layer) const override {
    for (const auto& s : sel_)
      if (s->wants_attention(layer)) return true;
    return false;
  }

  void observe(int layer, const torch::Tensor& probs) override {
    KVB_CHECK(probs.size(3) == store_->slots(layer), "chain observe: probs cover ", probs.size(3),
              " slots, the store holds ", store_->slots(layer));
    SelectContext ctx = context(layer);
    for (auto& s : sel_)
      if (s->wants_attention(layer)) s->observe(layer, probs, ctx);
    run_select(layer);
  }

  void end_prefill() override {
    for (int l = 0; l < static_cast<int>(seen_.size()); ++l)
      for (auto& s : sel_) apply(l, s->end_prefill(l, context(l)));
  }

  KVView view(int layer) const override { return store_->view(layer); }

  // The store's fused attention (KIVI's), when nothing in front of it changes what is read: no
  // head-wise split, keys post-RoPE, no selector masking slots for these queries (Quest's
  // read_bias; asked only of selectors without one known in advance). Records what the read
  // takes as read_view() does.
  std::optional<AttendResult> attend(int layer, const torch::Tensor& q,
                                     double scale) const override {
    if (ragged_ || pre_rope_ || store_pre_rope_ || query_aware_) return std::nullopt;
    SelectContext ctx = context(layer);
    for (const auto& s : sel_)
      if (s->read_bias(layer, q, ctx).defined()) return std::nullopt;
    std::optional<AttendResult> r = store_->attend(layer, q, scale);
    if (r) {
      const MemoryUse held = store_->memory(layer);
      int64_t selecting = 0;
      for (const auto& s : sel_) selecting += s->read_metadata_bytes(layer);
      read_bytes_[layer] = held.payload_bytes + held.metadata_bytes + selecting;
    }
    return r;
  }

  // Some selector masks slots per query (SelectorMethod::reads_post_rope_keys(): Quest):
  // attend() leaves such chains to read_view().
  void set_query_aware(bool q) { query_aware_ = q; }

  std::vector<HeadView> read_view_heads(int layer, const torch::Tensor& q) const override {
    if (!ragged_ || pre_rope_ || store_pre_rope_) return {};
    return ragged_->head_views(layer);
  }

  // The store's view, with the slots a query-aware selector (Quest) skips for these queries
  // masked out (logit_bias -inf).
  // Records what the read takes (bytes_read_last_step): the store's payload and metadata in
  // proportion to the held slots read, plus the selectors' read_metadata_bytes().
  KVView read_view(int layer, const torch::Tensor& q) const override {
    KVView v = store_->view(layer);
    if (v.slots() == 0) {
      read_bytes_[layer] = 0;
      return v;
    }
    SelectContext ctx = context(layer);
    torch::Tensor skip;  // [B, H_kv, S] bool: held slots some selector skips
    int64_t selecting = 0;
    for (const auto& s : sel_) {
      torch::Tensor bias = s->read_bias(layer, q, ctx);
      selecting += s->read_metadata_bytes(layer);
      if (!bias.defined()) continue;
      KVB_CHECK(bias.dim() == 3 && bias.size(2) == v.slots(), "chain: read_bias ", bias.sizes(),
                " over ", v.slots(), " slots");
      bias = bias.to(torch::kFloat32);
      torch::Tensor off = torch::isneginf(bias);
      skip = skip.defined() ? skip.logical_or(off) : off;
      v.logit_bias = v.logit_bias.defined() ? v.logit_bias.to(torch::kFloat32) + bias : bias;
    }
    const MemoryUse held = store_->memory(layer);
    int64_t read = held.payload_bytes + held.metadata_bytes;
    if (skip.defined() && held.slots > 0) {
      if (v.pos.defined()) skip = skip.logical_and(v.pos >= 0);  // padding is not held
      const int64_t skipped = skip.sum().item<int64_t>();
      read = static_cast<int64_t>(static_cast<double>(read) *
                                  static_cast<double>(held.slots - skipped) /
                                  static_cast<double>(held.slots) + 0.5);
    }
    read_bytes_[layer] = read + selecting;
    return v;
  }

  std::optional<int64_t> rope_positions_from_cache(int layer) const override {
    if (!pre_rope_) return std::nullopt;
    return store_->slots(layer);
  }

  bool view_keys_pre_rope(int layer) const override { return store_pre_rope_ && !pre_rope_; }

  std::optional<int64_t> bytes_read_last_step() const override {
    int64_t total = 0;
    bool any = false;
    for (int64_t b : read_bytes_) {
      if (b < 0) continue;
      total += b;
      any = true;
    }
    if (!any) return std::nullopt;
    return total;
  }

  MemoryUse memory(int layer) const override {
    MemoryUse m = store_->memory(layer);
    for (const auto& s : sel_) m.metadata_bytes += s->metadata_bytes(layer);
    m.tokens_seen = seen_[layer];
    return m;
  }

  MemoryUse memory() const override {
    return sum_layer_memory(static_cast<int>(seen_.size()), [this](int l) { return memory(l); });
  }

  std::unique_ptr<KVCacheState> clone() const override {
    std::vector<std::unique_ptr<SelectorState>> sel;
    for (const auto& s : sel_) sel.push_back(s->clone());
    auto c = std::make_unique<ChainState>(store_->clone_store(), std::move(sel),
                                          static_cast<int64_t>(seen_.size()), pre_rope_,
                                          store_pre_rope_);
    c->seen_ = seen_;
    c->last_pos_ = last_pos_;
    c->read_bytes_ = read_bytes_;
    c->query_aware_ = query_aware_;
    return c;
  }

 private:
  static int64_t last_appended(const KVAppend& a) {
    return a.pos[a.pos.size(0) - 1].item<int64_t>();
  }

  SelectContext context(int layer) const { return {*store_, last_pos_[layer], seen_[layer]}; }

  void run_select(int layer) {
    for (auto& s : sel_) apply(layer, s->select(layer, context(layer)));
  }

  void apply(int layer, const Eviction& e) {
    if (!e.any()) return;
    if (ragged_) {  // the one selector keeps no per-slot bookkeeping the store's order moves
      apply_ragged(*ragged_, layer, e);
      return;
    }
    KVB_CHECK(!e.keep_len.defined(), "chain: a ragged eviction from a uniform selector");
    if (e.drop_one.defined()) {
      const int64_t n = store_->slots(layer);
      // Positions in the cache are slot indices: slots must stay in source order there.
      if (store_->can_drop_swap() && !pre_rope_) {
        store_->drop_swap(layer, e.drop_one);
        for (auto& s : sel_) s->drop_swap(layer, e.drop_one, n);
        return;
      }
      // Order-keeping stores: the complement of the dropped slot, ascending.
      torch::Tensor base = torch::arange(n - 1, e.drop_one.options()).view({1, 1, n - 1});
      torch::Tensor idx = base + (base >= e.drop_one.unsqueeze(-1)).to(torch::kLong);
      keep_all(layer, idx);
      return;
    }
    keep_all(layer, e.keep);
  }

  void keep_all(int layer, const torch::Tensor& idx) {
    store_->keep(layer, idx);
    for (auto& s : sel_) s->keep(layer, idx);
  }

  std::unique_ptr<SlotStore> store_;
  std::vector<std::unique_ptr<SelectorState>> sel_;
  std::vector<int64_t> seen_, last_pos_;
  mutable std::vector<int64_t> read_bytes_;  // per layer: bytes the latest read took, -1 before
  bool pre_rope_ = false, store_pre_rope_ = false, query_aware_ = false;
  HeadSplitStore* ragged_ = nullptr;  // store_, when the chain is ragged
};

}  // namespace

ChainMethod::ChainMethod(std::vector<std::shared_ptr<const SelectorMethod>> selectors,
                         std::shared_ptr<const StorageMethod> storage, bool storage_implicit)
    : selectors_(std::move(selectors)), storage_(std::move(storage)),
      storage_implicit_(storage_implicit) {
  KVB_CHECK(!selectors_.empty() && storage_, "ChainMethod: needs selectors and a storage");
  const SelectorMethod* in_cache = nullptr;
  const SelectorMethod* bounds = nullptr;
  for (const auto& s : selectors_) {
    if (s->positions_in_cache()) in_cache = s.get();
    if (s->reads_post_rope_keys()) bounds = s.get();
  }
  KVB_INPUT_CHECK(!in_cache || !bounds, "spec ", quote_spec(spec()), ": ", bounds ? bounds->spec() : "",
                  " bounds q.k from post-RoPE keys, but ", in_cache ? in_cache->spec() : "",
                  " stores keys before RoPE (positions in the cache): they cannot share a chain");
  KVB_INPUT_CHECK(!bounds || !storage_->stores_pre_rope_keys(), "spec ", quote_spec(spec()), ": ",
                  bounds ? bounds->spec() : "", " bounds q.k from post-RoPE keys, but ",
                  storage_->spec(), " stores keys before RoPE: they cannot share a chain");
}

bool ChainMethod::positions_in_cache() const {
  for (const auto& s : selectors_)
    if (s->positions_in_cache()) return true;
  return false;
}

std::string ChainMethod::spec() const {
  std::vector<StageSpec> stages;
  for (const auto& sel : selectors_) stages.push_back(sel->stage());
  if (!storage_implicit_) stages.push_back(storage_->stage());
  return join_spec(stages);
}

std::unique_ptr<KVCacheState> ChainMethod::make_state(const ModelShape& shape) const {
  std::vector<std::unique_ptr<SelectorState>> sel;
  for (const auto& s : selectors_) sel.push_back(s->make_selector(shape));
  if (ragged())
    return std::make_unique<ChainState>(
        std::make_unique<HeadSplitStore>(storage_, shape,
                                         selectors_.front()->compensates_dropped()),
        std::move(sel), shape.n_layers, positions_in_cache(), storage_->stores_pre_rope_keys());
  auto state =
      std::make_unique<ChainState>(storage_->make_store(shape), std::move(sel), shape.n_layers,
                                   positions_in_cache(), storage_->stores_pre_rope_keys());
  bool query_aware = false;
  for (const auto& s : selectors_) query_aware = query_aware || s->reads_post_rope_keys();
  state->set_query_aware(query_aware);
  return state;
}

std::optional<MemoryUse> ChainMethod::promised_memory(const ModelShape& shape, int64_t tokens,
                                                      torch::ScalarType compute,
                                                      int64_t prompt_tokens) const {
  const int64_t prompt = prompt_tokens < 0 ? tokens : std::min(prompt_tokens, tokens);
  if (ragged()) return ragged_promise(shape, tokens, compute, prompt);
  MemoryUse m;
  m.tokens_seen = tokens;
  for (int layer = 0; layer < static_cast<int>(shape.n_layers); ++layer) {
    int64_t slots = tokens;
    for (const auto& s : selectors_)
      slots = std::min(slots, s->promised_layer_slots(shape, layer, tokens, prompt));
    KeptSlots kept{tokens, slots, {}};
    // Which tokens stay is the rule of a selector alone; stages in a chain may act in each
    // other's stead (a later stage's budget binding first), so a longer chain promises counts
    // only.
    if (selectors_.size() == 1) {
      const SelectorMethod* sel = selectors_.front().get();
      kept.kept_in = [sel, &shape, layer, tokens, prompt](int64_t from, int64_t to) {
        return sel->promised_layer_kept_in(shape, layer, tokens, prompt, from, to);
      };
      kept.kept_exact = sel->keeps_slots_known_in_advance();
    }
    MemoryUse l = storage_->layer_promise(shape, kept, compute);
    if (slots < tokens) l.metadata_bytes += shape.n_head_kv * slots * 8;  // explicit positions
    for (const auto& s : selectors_) l.metadata_bytes += s->promised_metadata(shape, slots);
    m.payload_bytes += l.payload_bytes;
    m.metadata_bytes += l.metadata_bytes;
    m.slots += shape.n_head_kv * slots;
  }
  return m;
}

bool ChainMethod::ragged() const {
  return selectors_.size() == 1 && selectors_.front()->ragged_heads();
}

// Every (layer, KV head) is a one-head store. Storage whose bytes follow the kept count alone
// (full, int: so much per slot) is exact from the total; otherwise (KIVI) every head is bounded
// as if it held the most slots a head may hold.
std::optional<MemoryUse> ChainMethod::ragged_promise(const ModelShape& shape, int64_t tokens,
                                                     torch::ScalarType compute,
                                                     int64_t prompt) const {
  const SelectorMethod::RaggedPromise r =
      selectors_.front()->promised_ragged(shape, tokens, prompt);
  ModelShape one = shape;
  one.n_head_kv = 1;
  one.n_head_q = shape.n_head_q / std::max<int64_t>(shape.n_head_kv, 1);
  MemoryUse m;
  m.tokens_seen = tokens;
  m.slots = r.slots;
  const int64_t stored = r.slots - r.compensation_slots;  // slots in the storage's format
  if (storage_->promise_exact_after_any_drops()) {
    const MemoryUse unit = storage_->layer_promise(one, KeptSlots::all(1), compute);
    m.payload_bytes = unit.payload_bytes * stored;
    m.metadata_bytes = unit.metadata_bytes * stored;
  } else {
    const int64_t heads = shape.n_layers * shape.n_head_kv;
    const int64_t most = std::min(r.max_head_slots, tokens);
    const MemoryUse each = storage_->layer_promise(
        one, most < tokens ? KeptSlots{tokens, most, {}} : KeptSlots::all(tokens), compute);
    m.payload_bytes = each.payload_bytes * heads;
    m.metadata_bytes = each.metadata_bytes * heads;
  }
  m.metadata_bytes += r.dropped_slots * 8 + r.metadata;  // explicit positions, the selector's
  // Compensation slots: a key and a value in the compute dtype, and a count.
  m.payload_bytes += r.compensation_slots * 2 * shape.head_dim *
                     static_cast<int64_t>(c10::elementSize(compute));
  m.metadata_bytes += r.compensation_slots * 8;
  return m;
}

bool ChainMethod::promise_is_exact() const {
  if (storage_->promise_exact_after_any_drops()) return true;
  if (ragged()) return false;
  return selectors_.size() == 1 && selectors_.front()->keeps_slots_known_in_advance() &&
         storage_->promise_exact_for_known_slots();
}

void ChainMethod::calibrate(const CalibrationContext& ctx) {
  const std::shared_ptr<const StorageMethod> dense = std::make_shared<FullMethod>(ctx.compute);
  const ModelShape shape = ctx.shape;
  SelectorMethod::CalibrationStateFactory make =
      [dense, shape](std::shared_ptr<const SelectorMethod> sel) {
        return ChainMethod({std::move(sel)}, dense, false).make_state(shape);
      };
  for (auto& sel : selectors_)
    if (auto c = sel->calibrated(ctx, make)) sel = std::move(c);
  if (auto c = storage_->calibrated(ctx)) storage_ = std::move(c);
}

std::vector<CalibrationArtifact> ChainMethod::calibration_artifacts() const {
  std::vector<CalibrationArtifact> out;
  for (const auto& sel : selectors_)
    if (auto a = sel->calibration_artifact()) out.push_back(*a);
  if (auto a = storage_->calibration_artifact()) out.push_back(*a);
  return out;
}

std::string ChainMethod::effective_spec(const ModelShape& shape) const {
  std::vector<StageSpec> stages;
  for (const auto& sel : selectors_) stages.push_back(sel->stage());
  if (!storage_implicit_) stages.push_back(storage_->effective_stage(shape));
  return join_spec(stages);
}

}  // namespace kvb
