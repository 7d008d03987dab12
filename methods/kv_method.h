// The seam between the forward pass and every KV-cache method.
//
// A KVMethod is an immutable configuration built from a spec string; a KVCacheState holds one
// sequence's cache over all layers. Per layer and per forward chunk the engine calls, in order:
//   1. view(layer)      -> the slots attention reads for everything before this chunk (or
//      attend(layer, q, scale): the state attends over them itself, the fused path)
//   2. (attention over view + the chunk's own keys/values, causal inside the chunk)
//   3. append(layer, a) -> the chunk's keys/values enter the state
//   4. observe(layer, p) if wants_attention(): p = attention weights of the chunk's queries over
//      [the slots of the view from step 1, then the chunk's T tokens] — so append must not drop
//      slots of the view that observe() will index; score-driven eviction happens in observe().
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

namespace kvb {

struct ModelShape {
  int64_t n_layers = 0, n_head_q = 0, n_head_kv = 0, head_dim = 0;
  int64_t max_position = 0;
};

struct KVAppend {            // new tokens for one layer
  torch::Tensor k;           // [B, H_kv, T, D] post-RoPE keys
  torch::Tensor k_pre_rope;  // [B, H_kv, T, D] same keys before RoPE
  torch::Tensor v;           // [B, H_kv, T, D]
  torch::Tensor pos;         // [T] int64 absolute positions
  torch::Tensor q;           // [B, H_q, T, D] post-RoPE queries of these tokens
};

// What attention reads: dense, dequantized, compute dtype. Heads holding fewer slots than others
// (head-wise budgets, methods/head_split_store.h) are padded: position -1, logit_bias -inf.
struct KVView {
  torch::Tensor k, v;        // [B, H_kv, S, D] (S may be 0; undefined tensors mean S = 0)
  torch::Tensor pos;         // [B, H_kv, S] int64 source position of each slot
  torch::Tensor logit_bias;  // [B, H_kv, S] float, or undefined: log(count) after merges, -inf masks
  int64_t slots() const { return k.defined() ? k.size(2) : 0; }
};

// One KV head's cache as attention reads it, head by head (KVCacheState::read_view_heads):
// segments ([1, 1, S_i, D] each) attended together under one softmax over all their slots, in
// order, as if concatenated, without copying them into one tensor (a head's stored slots and
// RazorAttention's compensation slot: methods/head_split_store.h).
struct HeadView {
  std::vector<KVView> segments;
  int64_t slots() const {
    int64_t n = 0;
    for (const KVView& s : segments) n += s.slots();
    return n;
  }
};

// What KVCacheState::attend() returns: attention over the past slots alone.
struct AttendResult {
  torch::Tensor out;  // [B, H_q, T, D] fp32: softmax(scale * q k^T) v over the past slots
  torch::Tensor lse;  // [B, H_q, T] fp32: log sum_j exp(scale * q . k_j); -inf when none
};

struct MemoryUse {
  int64_t payload_bytes = 0;   // codes / values actually held
  int64_t metadata_bytes = 0;  // scales, zero points, positions, indices
  int64_t tokens_seen = 0;     // tokens appended so far (per layer)
  int64_t slots = 0;           // slots held (summed over layers and KV heads)
};

// Whole-state use from per-layer use: bytes and slots add up over layers; tokens_seen is the
// largest of the layers' counts (every layer sees the same tokens).
template <typename PerLayer>
MemoryUse sum_layer_memory(int n_layers, const PerLayer& per_layer) {
  MemoryUse total;
  for (int l = 0; l < n_layers; ++l) {
    const MemoryUse m = per_layer(l);
    total.payload_bytes += m.payload_bytes;
    total.metadata_bytes += m.metadata_bytes;
    total.slots += m.slots;
    total.tokens_seen = std::max(total.tokens_seen, m.tokens_seen);
  }
  return total;
}

class KVCacheState {
 public:
  virtual ~KVCacheState() = default;
  virtual void append(int layer, const KVAppend& a) = 0;
  virtual bool wants_attention(int layer) const { return false; }
  virtual void observe(int layer, const torch::Tensor& probs) {}  // [B, H_q, T, S + T]
  virtual KVView view(int layer) const = 0;
  // What the chunk's queries q ([B, H_q, T, D] post-RoPE) read: view(layer), with the slots a
  // query-aware method (Quest) skips masked by logit_bias -inf. The engine attends through this.
  virtual KVView read_view(int layer, const torch::Tensor& q) const { return view(layer); }
  // Head-wise states (methods/head_split_store.h): each (batch row, KV head)'s view apart
  // (b-major), so attention reads no padding; empty (the default): read read_view(). Must attend
  // as read_view() does.
  virtual std::vector<HeadView> read_view_heads(int layer, const torch::Tensor& q) const {
    return {};
  }
  // Position re-assignment inside the cache (StreamingLLM's `positions=cache`). nullopt (the
  // default): the view holds post-RoPE keys and the chunk takes the positions the engine gives.
  // A value S (the layer's slot count, what view(layer) holds): the state stores keys before
  // RoPE (KVAppend::k_pre_rope), and the model rotates view slot j at position j and the chunk's
  // T queries and keys at S .. S + T - 1; KVAppend::pos still carries the source positions.
  // RoPE stays in the model; the state only says where the cache's positions start.
  virtual std::optional<int64_t> rope_positions_from_cache(int layer) const {
    return std::nullopt;
  }
  // Whether view(layer).k holds keys before RoPE (KVQuant's pre_rope=true: the store quantizes
  // KVAppend::k_pre_rope). The model then rotates view slot j at its source position
  // view(layer).pos[.., j] (padding, position < 0, is not rotated: it is masked). Exclusive with
  // rope_positions_from_cache(), which rotates at slot indices instead. false: post-RoPE keys.
  virtual bool view_keys_pre_rope(int layer) const { return false; }
  // Bytes the latest read_view() of each layer read, summed over layers: the payload and
  // metadata of the slots read (the store's bytes in proportion to the slots read) plus what a
  // query-aware selector read to choose them (Quest's page bounds). nullopt: every read takes
  // all that is held (memory()'s payload + metadata), the case of every method without a
  // read_bias.
  virtual std::optional<int64_t> bytes_read_last_step() const { return std::nullopt; }
  // The prompt has been consumed (all layers appended); methods that compress once after
  // prefill (SnapKV, PyramidKV) do it here. Not called in perplexity decode mode.
  virtual void end_prefill() {}
  // Optional fused attention over the past slots: what read_view(layer, q) holds, read straight
  // from the state's own storage (KIVI: packed codes, kernels/cpu/kivi_attention.h) without
  // materialising the dense view. q [B, H_q, T, D] post-RoPE queries; scores are scale * q . k
  // (query head h_q reads KV head h_q / (H_q / H_kv)). The engine calls it in place of
  // read_view() when the method does not observe attention, keys are post-RoPE and not
  // re-rotated, and no per-head view is read; it merges the result with the chunk's own keys by
  // the log-sum-exp (flash-decoding). nullopt (the default, or a case a state does not cover:
  // its layout, T, dtype): the engine reads read_view(). Must match that reference path within
  // float rounding. A state whose kernel cannot run on q's device throws kvb::Error naming the
  // method and the device; it never hands that memory to a kernel for another device.
  virtual std::optional<AttendResult> attend(int layer, const torch::Tensor& q,
                                             double scale) const {
    return std::nullopt;
  }
  virtual MemoryUse memory() const = 0;
  virtual MemoryUse memory(int layer) const = 0;
  virtual std::unique_ptr<KVCacheState> clone() const = 0;  // snapshot (multi-request suites)
};

// What a method may use to calibrate itself (offline scales, codebooks, head roles). The harness
// fills it (harness/engine/calibration.h: make_calibration_context) and calls
// KVMethod::calibrate() before a method runs; methods never see the model itself, only `run`.
// Artifacts are cached under cache_dir, keyed by the model (model_id: the weights' content
// hash) and the method's spec; a method finding its artifact there reads it and computes
// nothing.
struct CalibrationContext {
  std::string cache_dir;
  std::string model_id;
  ModelShape shape;                            // the model's
  int64_t vocab_size = 0;                      // token ids are 0 .. vocab_size-1
  torch::ScalarType compute = torch::kFloat32;  // dtype of the keys and values appended
  // Feeds `ids` at positions 0..n-1 through `state`: ids[0, prompt) in one forward call, then
  // end_prefill(), then the rest one token at a time. Returns logits [n, V] fp32 (row t: after
  // token t). Calibration states that want attention get it through observe() as in any run.
  std::function<torch::Tensor(KVCacheState& state, const std::vector<int64_t>& ids,
                              int64_t prompt)>
      run;
  // Legacy hook: runs calibration samples through a state made by the method (may be empty).
  std::function<void(KVCacheState&)> feed;
  // Calibration text as token ids of the model's tokenizer (KVQuant's scales and codebooks; may
  // be empty: methods that need text refuse), what they came from ("file <path>", "builtin
  // prose ...") and their hash (FNV-1a 64 of the ids' int64 bytes, 16 hex digits): artifacts
  // computed from text are keyed by it besides model_id and the spec.
  std::vector<int64_t> calibration_ids;
  std::string calibration_source;
  std::string calibration_hash;
};

// A calibration artifact a method used: what a results record names (suites/runner.cpp puts
// them in the cell record's "calibration").
struct CalibrationArtifact {
  std::string stage;  // the stage's canonical spec ("duoattention(recent=256,...)")
  std::string path;   // the file under CalibrationContext::cache_dir
  std::string hash;   // FNV-1a 64 of the file's bytes, 16 hex digits
  bool computed = false;  // computed by this calibrate() call (false: read from the cache)
};

class KVMethod {
 public:
  virtual ~KVMethod() = default;
  virtual std::string spec() const = 0;  // canonical: parse(m.spec())->spec() == m.spec()
  virtual std::unique_ptr<KVCacheState> make_state(const ModelShape& shape) const = 0;
  // Bytes a state of batch 1 must hold after `prompt_tokens` tokens were appended (in chunks of
  // any size), then end_prefill(), then the rest of `tokens` (in chunks of any size), computed
  // from the spec and the shape alone; `compute` is the dtype of the appended keys/values.
  // prompt_tokens < 0 (the default): all `tokens` were the prompt. nullopt: no promise.
  // The promise is exact for every method and chain except a chain whose drops land where a
  // storage stage keeps per-group or full-precision state (KIVI's residual and key groups,
  // StorageMethod::layer_promise): there it is an upper bound of payload and of total bytes.
  virtual std::optional<MemoryUse> promised_memory(const ModelShape& shape, int64_t tokens,
                                                   torch::ScalarType compute = torch::kFloat32,
                                                   int64_t prompt_tokens = -1) const {
    return std::nullopt;
  }
  // The canonical spec with each parameter as this method really uses it on `shape`, and what
  // the shape decides besides (int(group=64) on a 32-wide head: "int(bits=4,group=32)"; KIVI adds
  // value_group when the head is narrower than its group). For the record: parameters derived
  // from the shape need not be accepted by the parser.
  virtual std::string effective_spec(const ModelShape& shape) const { return spec(); }
  // Whether promised_memory() is exactly what a state holds (true), or an upper bound of its
  // payload and of its total bytes (false: a chain whose storage's bytes after an eviction depend
  // on which slots the selectors dropped, and those depend on the data).
  virtual bool promise_is_exact() const { return true; }
  // Optional offline calibration; the default does nothing. Idempotent: a second call with the
  // same context reads the artifact the first one wrote.
  virtual void calibrate(const CalibrationContext& ctx) {}
  // The artifacts the last calibrate() used (none by default, or before calibrate()).
  virtual std::vector<CalibrationArtifact> calibration_artifacts() const { return {}; }
};

}  // namespace kvb
