// Storage back ends that can be the last stage of a method chain (`snapkv(...)+kivi(...)`).
//
// A SlotStore is a KVCacheState whose slots (per batch row and KV head) can be dropped by index,
// so that selecting stages in front of it (methods/chain.h) decide what is kept while the store
// decides how the kept keys/values are encoded. Slots of different heads may hold different
// tokens; every head holds the same number of slots.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "methods/kv_method.h"
#include "methods/spec.h"

namespace kvb {

class SlotStore : public KVCacheState {
 public:
  virtual int64_t slots(int layer) const = 0;
  virtual torch::Tensor positions(int layer) const = 0;  // [B, H_kv, S] int64
  // Keeps slots idx[b, h, :] of every (batch, head), in that order: new slot j = old idx[..., j].
  // Stores whose encoding depends on slot order (KIVI) require ascending indices.
  virtual void keep(int layer, const torch::Tensor& idx) = 0;  // [B, H_kv, S'] int64
  // Fast path for dropping one slot per head: slot[b, h] is removed and the last slot moves into
  // its place (O(1) per head). Only when can_drop_swap().
  virtual bool can_drop_swap() const { return false; }
  virtual void drop_swap(int layer, const torch::Tensor& slot);  // [B, H_kv] int64
  virtual std::unique_ptr<SlotStore> clone_store() const = 0;
  std::unique_ptr<KVCacheState> clone() const override { return clone_store(); }
  MemoryUse memory() const override;  // sum of memory(layer) over layers
  using KVCacheState::memory;
  virtual int n_layers() const = 0;
};

// What a storage stage's promise knows of the slots held per KV head: `tokens` appended, `slots`
// held, and, when slots were dropped (a chain), an upper bound on how many of the held slots
// hold tokens appended in [from, to) (append order, 0-based) — exact where the selectors' rule
// decides it (StreamingLLM's sinks and window, SnapKV's window and decode tokens).
struct KeptSlots {
  int64_t tokens = 0, slots = 0;
  std::function<int64_t(int64_t from, int64_t to)> kept_in;  // empty: nothing was dropped
  // kept_in is exact, not a bound: the one selector's rule fixes which tokens stay (StreamingLLM),
  // so a storage stage can promise exactly what it holds.
  bool kept_exact = false;
  bool dropped() const { return slots < tokens; }
  int64_t in(int64_t from, int64_t to) const;  // min(kept_in, to - from, slots), >= 0
  // Blocks [i*block, (i+1)*block) of [0, to) holding at least one held slot: an upper bound.
  int64_t blocks_touched(int64_t to, int64_t block) const;
  static KeptSlots all(int64_t tokens) { return {tokens, tokens, {}}; }
};

// A method that can store a chain's slots. Its own make_state() is the store. It keeps the
// default-filled stage spec it was built from; spec() prints it.
class StorageMethod : public KVMethod {
 public:
  explicit StorageMethod(StageSpec stage) : stage_(std::move(stage)) {}
  std::string spec() const final { return stage_.str(); }
  const StageSpec& stage() const { return stage_; }
  std::unique_ptr<KVCacheState> make_state(const ModelShape& shape) const override {
    return make_store(shape);
  }
  virtual std::unique_ptr<SlotStore> make_store(const ModelShape& shape) const = 0;
  // Bytes one layer holds (batch 1) with kept.slots slots per KV head, positions not counted.
  // Exact when nothing was dropped; with drops, exact for stores whose bytes depend only on the
  // count (full, int), an upper bound of payload and total for KIVI (see kivi.cpp).
  virtual MemoryUse layer_promise(const ModelShape& shape, const KeptSlots& kept,
                                  torch::ScalarType compute) const = 0;
  std::optional<MemoryUse> promised_memory(const ModelShape& shape, int64_t tokens,
                                           torch::ScalarType compute = torch::kFloat32,
                                           int64_t prompt_tokens = -1) const override;
  // Whether layer_promise() stays exact whichever slots were dropped (full, int: bytes depend on
  // the kept count only); KIVI's do not (its key groups and full-precision window).
  virtual bool promise_exact_after_any_drops() const { return true; }
  // Whether layer_promise() is exact when a selector keeps slots known in advance (StreamingLLM:
  // KeptSlots::kept_in says which tokens stay): KIVI's is; stores whose bytes depend on which
  // slots their own data-driven choices put where (ZipCache, MiKV, GEAR) say no, and their
  // chains promise a bound.
  virtual bool promise_exact_for_known_slots() const { return true; }
  // Whether its stores hold keys before RoPE (KVQuant's pre_rope=true): they quantize
  // KVAppend::k_pre_rope and answer KVCacheState::view_keys_pre_rope(); a chain's state says so
  // too (unless a stage attends at positions within the cache, which rotates them there).
  virtual bool stores_pre_rope_keys() const { return false; }
  // Calibration of a storage stage (KVQuant's scales and codebooks), as
  // SelectorMethod::calibrated: a calibrated copy (nullptr: nothing to calibrate), which
  // ChainMethod::calibrate() puts in its place, and the artifact it came from.
  virtual std::shared_ptr<const StorageMethod> calibrated(const CalibrationContext& ctx) const {
    return nullptr;
  }
  virtual std::optional<CalibrationArtifact> calibration_artifact() const { return std::nullopt; }
  // The stage as used on `shape` (KVMethod::effective_spec); default: stage().
  virtual StageSpec effective_stage(const ModelShape& shape) const { return stage_; }
  std::string effective_spec(const ModelShape& shape) const final {
    return effective_stage(shape).str();
  }

 private:
  StageSpec stage_;
};

// Source positions of a store's slots. Implicit (first + arange, no bytes held) while the
// appended positions are contiguous and nothing was dropped; explicit [B, H, S] int64 after.
// view() of implicit positions is a narrow() of a cached first + arange row (no copy per call).
class SlotPositions {
 public:
  void append(const torch::Tensor& pos, int64_t batch, int64_t heads);  // pos [T] int64
  void set(const torch::Tensor& pos);                                 // [B, H, S] int64
  torch::Tensor view() const;                                         // [B, H, S] int64
  void keep(const torch::Tensor& idx);                                // [B, H, S'] int64
  void drop_swap(const torch::Tensor& slot);                          // [B, H] int64
  void clear() { len_ = 0; explicit_ = false; }
  int64_t size() const { return len_; }
  int64_t last() const { return last_; }  // last appended position (-1 before any)
  int64_t bytes() const { return explicit_ ? b_ * h_ * len_ * 8 : 0; }
  SlotPositions clone() const;

 private:
  void materialize();
  void extend_implicit();  // seq_ covers first_ .. first_ + len_ - 1
  bool explicit_ = false;
  int64_t b_ = 0, h_ = 0, first_ = 0, len_ = 0, last_ = -1;
  torch::Tensor pos_;  // [B, H, capacity] int64 when explicit
  // [capacity] int64: first_ + arange while implicit, a cache of values implied by first_ (not
  // counted by bytes(), never written in place, so copies may share it).
  torch::Tensor seq_;
  int64_t seq_first_ = 0;
  torch::TensorOptions opts_ = torch::TensorOptions().dtype(torch::kLong);
};

// Row buffers [B, H, capacity, X] grown by doubling along dim 2.
void reserve_rows(torch::Tensor& buf, int64_t used, int64_t need, int64_t b, int64_t h, int64_t x,
                  const torch::TensorOptions& opts);
// buf[:, :, :S'] = buf[:, :, idx] for idx [B, H, S'].
void keep_rows(torch::Tensor& buf, int64_t used, const torch::Tensor& idx);
// buf[b, h, slot[b, h]] = buf[b, h, used - 1].
void drop_swap_rows(torch::Tensor& buf, int64_t used, const torch::Tensor& slot);
// SlotStore::keep() / drop_swap() of a store whose slots are rows of `rows` (buffers
// [B, H, capacity, X]) with positions `pos`, `len` of them live: every buffer, the positions and
// the count move together.
void keep_slots(std::initializer_list<torch::Tensor*> rows, SlotPositions& pos, int64_t& len,
                const torch::Tensor& idx);
void drop_swap_slots(std::initializer_list<torch::Tensor*> rows, SlotPositions& pos, int64_t& len,
                     const torch::Tensor& slot);
// Deep copy of a buffer's first `used` rows (capacity kept), undefined stays undefined.
torch::Tensor clone_rows(const torch::Tensor& buf);

}  // namespace kvb
