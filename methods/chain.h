// Method chains: selecting stages in front of a storage stage, `snapkv(budget=256)+kivi(bits=2)`.
//
// A selector never holds keys or values. It keeps its own bookkeeping per slot (scores, query
// windows) and, at fixed points, returns an Eviction: which slots of a layer to drop. The chain
// applies the eviction to the store (methods/slot_store.h) and to every selector's bookkeeping,
// so all stages always agree on what slot j is. Points where selectors decide:
//   - after append, when no stage wants attention for the layer (streaming);
//   - after observe (the chunk's attention over [view slots, chunk]) otherwise (H2O);
//   - at end_prefill (SnapKV compresses the prompt once).
// A selector used alone stores into `full` in the run's compute dtype (methods/registry.h).
#pragma once

#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "methods/slot_store.h"
#include "methods/spec.h"

namespace kvb {

// Which slots of a layer to drop. Uniform selectors keep the same number of slots in every head.
// Head-wise selectors (SelectorMethod::ragged_heads(): AdaKV, DuoAttention, RazorAttention) may
// keep a different number per head: their chain stores each (batch row, KV head) in a store of
// its own (methods/head_split_store.h), so a head that keeps fewer slots holds fewer bytes.
struct Eviction {
  // [B, H_kv] int64: drop exactly this slot of each head, or undefined. Ragged selectors may
  // give -1 for a head that drops nothing.
  torch::Tensor drop_one;
  torch::Tensor keep;      // [B, H_kv, S'] int64 ascending: keep these slots, or undefined
  // Ragged selectors only: [B, H_kv] int64, head (b, h) keeps keep[b, h, :keep_len[b, h]] (the
  // rest of its row is padding). Undefined: every head keeps S'. A head whose keep_len equals its
  // slot count keeps everything (its ascending indices are all of its slots).
  torch::Tensor keep_len;
  bool any() const { return drop_one.defined() || keep.defined(); }
};

// What selectors may read when deciding; slots are the store's current slots.
struct SelectContext {
  const SlotStore& store;
  int64_t last_pos;     // position of the last appended token of this layer
  int64_t tokens_seen;  // tokens appended to this layer so far
};

class SelectorState {
 public:
  virtual ~SelectorState() = default;
  virtual bool wants_attention(int layer) const { return false; }
  // The chunk's T slots were just appended at the end of the store (slots S .. S+T-1).
  virtual void on_append(int layer, const KVAppend& a, const SelectContext& ctx) {}
  virtual void observe(int layer, const torch::Tensor& probs,  // [B, H_q, T, S + T]
                       const SelectContext& ctx) {}
  virtual Eviction select(int layer, const SelectContext& ctx) { return {}; }
  virtual Eviction end_prefill(int layer, const SelectContext& ctx) { return {}; }
  // Bookkeeping follows the store: keep(idx) as SlotStore::keep, drop_swap as SlotStore's.
  virtual void keep(int layer, const torch::Tensor& idx) {}          // [B, H_kv, S']
  virtual void drop_swap(int layer, const torch::Tensor& slot, int64_t slots_before) {}  // [B, H_kv]
  virtual int64_t metadata_bytes(int layer) const { return 0; }
  // Query-aware reading (Quest): an additive bias over the held slots for the queries `q`
  // ([B, H_q, T, D] post-RoPE) about to attend ([B, H_kv, S] float, 0 = read, -inf = skip), or
  // undefined to read everything. Slots skipped are still held; reading them is what is saved.
  virtual torch::Tensor read_bias(int layer, const torch::Tensor& q, const SelectContext& ctx) {
    return {};
  }
  // Bytes the latest read_bias(layer, ...) read to choose its slots (Quest: every page bound of
  // the layer); counted into KVCacheState::bytes_read_last_step(). 0 for selectors without one.
  virtual int64_t read_metadata_bytes(int layer) const { return 0; }
  virtual std::unique_ptr<SelectorState> clone() const = 0;
};

// A selecting stage. It keeps the default-filled stage spec it was built from; spec() prints it.
class SelectorMethod {
 public:
  explicit SelectorMethod(StageSpec stage) : stage_(std::move(stage)) {}
  virtual ~SelectorMethod() = default;
  std::string spec() const { return stage_.str(); }
  const StageSpec& stage() const { return stage_; }
  virtual std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const = 0;
  // Slots per KV head kept after `prompt` tokens, end_prefill(), and the rest of `tokens`.
  virtual int64_t promised_slots(int64_t tokens, int64_t prompt) const = 0;
  // An upper bound on the kept slots (per KV head, this stage alone) holding tokens appended in
  // [from, to) (append order, 0-based), after the same. Default: min(promised slots, to - from);
  // rules that decide which tokens stay (sinks, recent windows) say so.
  virtual int64_t promised_kept_in(int64_t tokens, int64_t prompt, int64_t from,
                                   int64_t to) const {
    return std::min(promised_slots(tokens, prompt), to - from);
  }
  // Per-layer budgets (PyramidKV): the promise for one layer. Defaults: the layer-free forms.
  virtual int64_t promised_layer_slots(const ModelShape& shape, int layer, int64_t tokens,
                                       int64_t prompt) const {
    return promised_slots(tokens, prompt);
  }
  virtual int64_t promised_layer_kept_in(const ModelShape& shape, int layer, int64_t tokens,
                                         int64_t prompt, int64_t from, int64_t to) const {
    return promised_kept_in(tokens, prompt, from, to);
  }
  // Selector bookkeeping bytes per layer (batch 1) with `slots` slots held (after end_prefill);
  // for ragged selectors `slots` is the layer's total over its KV heads.
  virtual int64_t promised_metadata(const ModelShape& shape, int64_t slots) const { return 0; }
  // Whether heads of a layer may keep different numbers of slots (AdaKV, DuoAttention,
  // RazorAttention). Such a selector is the only selector of its chain, and its chain's store
  // holds every (batch row, KV head) apart. Its promise is promised_ragged().
  virtual bool ragged_heads() const { return false; }
  struct RaggedPromise {      // over the whole model (every layer and KV head), batch 1
    int64_t slots = 0;          // slots held
    int64_t dropped_slots = 0;  // of which in heads that dropped any (they hold explicit positions)
    int64_t max_head_slots = 0;  // the most slots one head may hold
    int64_t metadata = 0;       // the selector's own bookkeeping bytes
    // Of `slots`, compensation slots (compensates_dropped()): each holds one key and one value
    // of head_dim in the compute dtype (payload) and its count, 8 bytes (metadata), whatever the
    // storage stage; they are not in dropped_slots or max_head_slots.
    int64_t compensation_slots = 0;
  };
  // Ragged selectors: what the model's cache holds after `prompt` tokens, end_prefill(), and the
  // rest of `tokens`. Per-head counts may depend on the data (AdaKV) and on a calibration
  // (DuoAttention's head roles); these totals may not.
  virtual RaggedPromise promised_ragged(const ModelShape& shape, int64_t tokens,
                                        int64_t prompt) const {
    return {};
  }
  // Whether each head that dropped tokens holds one compensation slot for them (RazorAttention):
  // the mean of the dropped keys and values, read with logit_bias log(count)
  // (methods/head_split_store.h). Ragged selectors only.
  virtual bool compensates_dropped() const { return false; }
  // Calibration (head roles of DuoAttention and RazorAttention). A stage stays immutable: a
  // stage that calibrates returns a calibrated copy of itself (nullptr: nothing to calibrate),
  // which ChainMethod::calibrate() puts in its place. `make_state` builds the state of a chain of
  // one selector (another configuration of this method, e.g. candidate head roles) into `full`
  // storage in ctx.compute, for the stage to run through ctx.run.
  using CalibrationStateFactory =
      std::function<std::unique_ptr<KVCacheState>(std::shared_ptr<const SelectorMethod>)>;
  virtual std::shared_ptr<const SelectorMethod> calibrated(
      const CalibrationContext& ctx, const CalibrationStateFactory& make_state) const {
    return nullptr;
  }
  // The artifact this stage's configuration came from (a calibrated copy), if any.
  virtual std::optional<CalibrationArtifact> calibration_artifact() const { return std::nullopt; }
  // Whether the stage only ever acts at end_prefill() (SnapKV: it compresses the prompt once):
  // without end_prefill (perplexity decode mode) it keeps everything.
  virtual bool acts_only_at_end_prefill() const { return false; }
  // Whether the slots it keeps follow from the token count alone (StreamingLLM: the sinks and
  // the window), so that a storage stage can promise exactly what it holds after its drops.
  virtual bool keeps_slots_known_in_advance() const { return false; }
  // Whether the chain attends at positions within the cache (StreamingLLM's positions=cache):
  // its store then holds keys before RoPE (KVAppend::k_pre_rope) and the chain's state answers
  // KVCacheState::rope_positions_from_cache() (the model rotates). Selectors still see the
  // appended post-RoPE keys in on_append() and the source positions everywhere.
  virtual bool positions_in_cache() const { return false; }
  // Whether read_bias() bounds post-RoPE q . k from the held keys (Quest): such a stage cannot
  // share a chain with a positions_in_cache() stage, whose store holds keys before RoPE
  // (ChainMethod refuses the chain).
  virtual bool reads_post_rope_keys() const { return false; }

 private:
  StageSpec stage_;
};

// The KVMethod of a chain (also of a selector used alone). Its spec joins its stages' specs; an
// implicit storage (a selector used alone in an fp32 run: full(dtype=fp32)) is left out.
class ChainMethod : public KVMethod {
 public:
  ChainMethod(std::vector<std::shared_ptr<const SelectorMethod>> selectors,
              std::shared_ptr<const StorageMethod> storage, bool storage_implicit);
  std::string spec() const override;
  std::unique_ptr<KVCacheState> make_state(const ModelShape& shape) const override;
  std::optional<MemoryUse> promised_memory(const ModelShape& shape, int64_t tokens,
                                           torch::ScalarType compute = torch::kFloat32,
                                           int64_t prompt_tokens = -1) const override;
  std::string effective_spec(const ModelShape& shape) const override;
  // Exact when the storage's bytes depend only on the kept count, or when one selector keeps
  // slots known in advance; an upper bound otherwise.
  bool promise_is_exact() const override;
  // Calibrates every selector that calibrates (SelectorMethod::calibrated) and keeps the
  // calibrated copies; their artifacts are calibration_artifacts().
  void calibrate(const CalibrationContext& ctx) override;
  std::vector<CalibrationArtifact> calibration_artifacts() const override;
  const StorageMethod& storage() const { return *storage_; }
  bool storage_implicit() const { return storage_implicit_; }
  // Whether its selector keeps a different number of slots per head (its store is a
  // HeadSplitStore, methods/head_split_store.h).
  bool ragged() const;
  // Whether a stage attends at positions within the cache (its store holds pre-RoPE keys).
  bool positions_in_cache() const;

 private:
  std::optional<MemoryUse> ragged_promise(const ModelShape& shape, int64_t tokens,
                                          torch::ScalarType compute, int64_t prompt) const;
  std::vector<std::shared_ptr<const SelectorMethod>> selectors_;
  std::shared_ptr<const StorageMethod> storage_;
  bool storage_implicit_;
};

}  // namespace kvb
