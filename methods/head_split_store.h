// The store of a chain whose selector keeps a different number of slots per KV head (AdaKV,
// DuoAttention, RazorAttention: SelectorMethod::ragged_heads()). Every (batch row, KV head) is a
// store of its own, made by the chain's storage method for one head, so a head that keeps 64
// slots holds 64 slots' bytes whatever its neighbours keep — memory really shrinks, unlike a
// mask over a dense cache.
//
// view() pads the heads to the longest: a padding slot has position -1, zero key and value, and
// logit_bias -inf (attention gives it weight 0). slots() is the longest head's count; memory()
// counts only what the heads hold. positions() pads with -1 too.
//
// Compensation (RazorAttention, SelectorMethod::compensates_dropped()): with `compensate`, every
// head that dropped tokens holds one more slot, the compensation token: the mean of every key
// and of every value it dropped (as its store viewed them, dequantized), held in the compute
// dtype (the appended keys' dtype) next to the count of dropped tokens. view() shows it after
// the head's stored slots with position kCompensationPos (-2: it has no one source position) and
// logit_bias log(count), so attention weighs it as the `count` tokens it stands for. memory()
// counts it as a slot: 2 x head_dim elements of payload and 8 bytes (the count) of metadata.
// slots(), positions(), head_slots(), keep and drop index the stored slots only.
#pragma once

#include <memory>
#include <vector>

#include "methods/chain.h"
#include "methods/slot_store.h"

namespace kvb {

// The view position of a compensation slot.
inline constexpr int64_t kCompensationPos = -2;

class HeadSplitStore : public SlotStore {
 public:
  HeadSplitStore(std::shared_ptr<const StorageMethod> storage, const ModelShape& shape,
                 bool compensate = false);

  void append(int layer, const KVAppend& a) override;
  KVView view(int layer) const override;
  MemoryUse memory(int layer) const override;
  using SlotStore::memory;
  // Each (batch row, KV head)'s own view, b-major: its stored slots ([1, 1, S_h, D]) and, as a
  // second segment, its compensation slot (not copied onto the first): what attention reads
  // without padding the heads to the longest (Model::attention uses it through
  // KVCacheState::read_view_heads). Empty while every head holds as many slots and none a
  // compensation slot (view() pads nothing then).
  std::vector<HeadView> head_views(int layer) const;
  int64_t slots(int layer) const override;
  torch::Tensor positions(int layer) const override;  // [B, H, S] int64, -1 = padding
  int n_layers() const override { return static_cast<int>(shape_.n_layers); }

  // Uniform keep: every head keeps idx[b, h, :] (its own slots, ascending).
  void keep(int layer, const torch::Tensor& idx) override { keep_ragged(layer, idx, {}); }
  // Head (b, h) keeps idx[b, h, :len[b, h]] (ascending); len undefined: all of idx's row. A head
  // keeping as many slots as it holds is left as it is.
  void keep_ragged(int layer, const torch::Tensor& idx, const torch::Tensor& len);
  // Head (b, h) drops slot[b, h] (-1: nothing): swapped with its last slot when the heads'
  // store can (can_drop_swap()), else removed keeping the order of the rest.
  void drop_one(int layer, const torch::Tensor& slot);
  bool can_drop_swap() const override;
  void drop_swap(int layer, const torch::Tensor& slot) override { drop_one(layer, slot); }

  // Slots held by head (b, h) of `layer`; [B, H] int64 (zeros before the first append).
  torch::Tensor head_slots(int layer) const;
  // The store of one (batch row, KV head), or nullptr before the first append.
  const SlotStore* head(int64_t b, int64_t h) const;
  // Batch rows (0 before the first append).
  int64_t batch() const { return batch_; }

  std::unique_ptr<SlotStore> clone_store() const override;

  // Head (b, h)'s compensation token in `layer`: key and value [D] in the compute dtype and the
  // number of dropped tokens they average (0 and undefined tensors before any drop).
  struct Compensation {
    torch::Tensor k, v;  // [D]
    int64_t count = 0;
  };
  const Compensation& compensation(int layer, int64_t b, int64_t h) const;

 private:
  SlotStore& at(int64_t b, int64_t h) { return *heads_[static_cast<size_t>(b * shape_.n_head_kv + h)]; }
  const SlotStore& at(int64_t b, int64_t h) const {
    return *heads_[static_cast<size_t>(b * shape_.n_head_kv + h)];
  }

  std::shared_ptr<const StorageMethod> storage_;
  ModelShape shape_;    // the model's
  ModelShape one_;      // one KV head
  int64_t batch_ = 0;   // 0 until the first append
  std::vector<std::unique_ptr<SlotStore>> heads_;  // [B * H_kv]
  bool compensate_ = false;
  torch::ScalarType compute_ = torch::kFloat32;  // the appended keys' dtype
  std::vector<std::vector<Compensation>> comp_;  // [layer][B * H_kv] when compensate_
  // Folds the slots `dropped` ([n] int64) of head (b, h) into its compensation, before they go.
  void fold(int layer, int64_t b, int64_t h, const torch::Tensor& dropped);
  int64_t comp_slots(int layer, int64_t b, int64_t h) const;
};

// Applies a ragged selector's eviction to a HeadSplitStore.
void apply_ragged(HeadSplitStore& store, int layer, const Eviction& e);

}  // namespace kvb
