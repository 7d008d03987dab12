// Mixed-precision slot storage shared by ZipCache (methods/quant/zipcache.cpp) and MiKV
// (methods/quant/mikv.cpp): every slot is in one of three classes,
//   hi  packed codes at `hi_bits` (0: full precision, rows in the compute dtype), fp16 scale and
//       zero per group of `hi_group` channels;
//   lo  packed codes at `lo_bits`, fp16 scale and zero per group of `lo_group` channels;
//   fp  full precision in the compute dtype (a recent buffer, the suffix of the slots).
// Each class is a pool of rows kept in slot order, so view() scatters the dequantized pools by
// the per-slot class byte (int8 [B, H_kv, S], counted as metadata). Every head holds the same
// number of slots of each class (the policies assign per-head equal counts; after a chain's
// keep() the store rebalances: see keep()).
//
// Saliency: the store computes the attention of the appended chunk's own queries (KVAppend::q,
// post-RoPE, softmax(q.k / sqrt(D)), causal inside the chunk) over [the held slots dequantized,
// the chunk's keys] — ZipCache's probe queries, all of them. A storage stage cannot get the
// engine's attention in a chain (ChainState forwards observe() to selectors only), so scoring
// from KVAppend::q is what makes these stores work alone and behind selectors alike; per KV head
// the weights are summed over its G query heads and the T queries (`acc`), and `cnt` counts the
// (query head, query) pairs that saw the slot (ZipCache's normalization).
//
// After every append (and keep), the policy (MixedPolicy::classify) decides the new class of
// each slot (fp -> hi/lo, hi -> lo; never lo -> hi); rows that change class are requantized from
// their dequantized values, rows that keep their class keep their codes.
#pragma once

#include <memory>
#include <vector>

#include "methods/slot_store.h"

namespace kvb {

inline constexpr int8_t kMixedHi = 0, kMixedLo = 1, kMixedFp = 2;

struct MixedConfig {
  int hi_bits = 4;   // 0: full precision (compute dtype)
  int lo_bits = 2;
  int64_t hi_group = 0, lo_group = 0;  // channels per scale/zero group (divide D)
  bool key_channel_norm = false;  // ZipCache: keys divided per channel by c before quantization
  // Which scores are held: false: acc (float32) of every slot (MiKV, H2O's accumulated
  // attention); true: acc and cnt (float32) of the fp slots only (ZipCache: decided at flush).
  bool scores_fp_only = false;
};

class MixedPolicy {
 public:
  virtual ~MixedPolicy() = default;
  // New classes [B, H, S] int8 from the current ones (appended slots are kMixedFp) and the
  // scores [B, H, S] float32 (acc, or acc/cnt with scores_fp_only: meaningful on fp slots).
  // Must give every head the same count of each class, fp slots a suffix, no lo -> hi / x -> fp.
  virtual torch::Tensor classify(const torch::Tensor& cls, const torch::Tensor& score) const = 0;
};

class MixedStore : public SlotStore {
 public:
  MixedStore(const ModelShape& shape, MixedConfig cfg, std::shared_ptr<const MixedPolicy> policy);
  void append(int layer, const KVAppend& a) override;
  KVView view(int layer) const override;
  int64_t slots(int layer) const override;
  torch::Tensor positions(int layer) const override;
  // Ascending indices. Keeps the kept slots' codes; then every head is brought to the same class
  // counts: the quantized prefix grows to the longest head's (the oldest fp slots of shorter
  // heads quantized at lo bits) and hi shrinks to the smallest head's (later hi slots of longer
  // heads requantized at lo bits).
  void keep(int layer, const torch::Tensor& idx) override;
  MemoryUse memory(int layer) const override;
  using SlotStore::memory;
  int n_layers() const override { return static_cast<int>(layers_.size()); }
  std::unique_ptr<SlotStore> clone_store() const override;

  // Per-slot classes of a layer ([B, H, S] int8), for tests.
  torch::Tensor classes(int layer) const { return layers_.at(static_cast<size_t>(layer)).cls; }

 private:
  struct Pool {
    torch::Tensor codes;        // [B, H, n, D*bits/8] uint8, or [B, H, n, D] compute (bits 0)
    torch::Tensor scale, zero;  // [B, H, n, D/group] fp16 (undefined at bits 0)
  };
  struct Layer {
    Pool hi[2], lo[2];  // [0] keys, [1] values
    torch::Tensor fp[2];  // [B, H, nfp, D] compute dtype
    torch::Tensor cls;    // [B, H, S] int8
    torch::Tensor acc, cnt;  // [B, H, S] (or [B, H, nfp]) float32; cnt only with scores_fp_only
    torch::Tensor norm;      // [B, H, 1, D] fp16: ZipCache's key channel factors, once quantized
    SlotPositions pos;
    int64_t s = 0, nhi = 0, nlo = 0, nfp = 0, seen = 0, b = 0, h = 0, d = 0;
  };

  torch::Tensor dense(const Layer& L, int side) const;  // [B, H, S, D] float32
  torch::Tensor full_scores(const Layer& L, const torch::Tensor& t) const;  // [B, H, S]
  void rebuild(Layer& L, const torch::Tensor& src, const torch::Tensor& old_cls,
               const torch::Tensor& ncls, const torch::Tensor* dense_old);
  void quantize_pool(const Layer& L, int side, int bits, int64_t group, const torch::Tensor& x,
                     Pool& out) const;
  torch::Tensor dequantize_pool(const Layer& L, int side, int bits, int64_t group,
                                const Pool& p) const;

  MixedConfig cfg_;
  std::shared_ptr<const MixedPolicy> policy_;
  torch::ScalarType compute_ = torch::kFloat32;
  std::vector<Layer> layers_;
};

// Attention of the chunk's queries q ([B, H_q, T, D] post-RoPE) over keys ([B, H_kv, S + T, D]
// float32: the held slots then the chunk), causal inside the chunk, softmax(q.k / sqrt(D)):
// acc [B, H_kv, S + T] summed over each KV head's query heads and the T queries; cnt
// [B, H_kv, S + T] the (query head, query) pairs that saw each slot. q undefined: acc 0, cnt 1.
void probe_attention(const torch::Tensor& keys, const torch::Tensor& q, int64_t held,
                     torch::Tensor& acc, torch::Tensor& cnt);

// Indices [B, H, n] putting the true entries of mask [B, H, n] first, both parts ascending.
torch::Tensor true_first_idx(const torch::Tensor& mask);
// x [B, H, n, X] gathered along dim 2 by idx [B, H, m].
torch::Tensor gather_slot_rows(const torch::Tensor& x, const torch::Tensor& idx);

}  // namespace kvb
