// The BPE model of a tokenizer.json ("model": {"type": "BPE", ...}): turns one pre-token into
// token ids the way Hugging Face tokenizers' BPE does (merge priority queue, byte fallback,
// unknown-token fusing, ignore_merges), with a per-pre-token cache.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/json_reader.h"

namespace kvb::tok {

// Token ids must lie in [0, kMaxTokenIds): above any real vocabulary (Llama 3: 128256, Qwen3:
// 151669, Gemma: 262144), the same bound as config.json's vocab_size (kMaxVocab in
// harness/model/config.h), and low enough that a corrupt id cannot make us allocate much.
constexpr int64_t kMaxTokenIds = int64_t{1} << 20;

// Hash/equality that let unordered_map<std::string, ...> be queried with a string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  // Builds the model from the "model" object of a tokenizer.json; kvb::InputError
  // "<path>: model.<field>: ..." when a field is missing, mistyped or inconsistent (an id out of
  // range or given to two tokens, a merge naming an unknown token).
  explicit BpeModel(const JsonNode& model);

  // Appends the ids of one pre-token (a non-empty UTF-8 string) to `out`.
  void tokenize(std::string_view word, std::vector<int32_t>* out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // nullptr when no token has this id.
  const std::string* id_to_token(int32_t id) const;
  // One past the largest id in the vocabulary.
  int32_t id_limit() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  struct Merge {
    int32_t rank;    // position in the merges list: lower merges first
    int32_t new_id;  // id of the merged token
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return uint64_t{static_cast<uint32_t>(a)} << 32 | static_cast<uint32_t>(b);
  }
  // The ids of `word` before merging: one per character (with byte fallback / unknown token).
  std::vector<int32_t> initial_symbols(std::string_view word) const;
  std::vector<int32_t> merge_word(std::string_view word) const;

  StringIdMap vocab_;
  std::vector<std::string> id_to_token_;        // [id_limit] token string, "" for ids not in use
  std::vector<bool> id_used_;                   // [id_limit]
  std::unordered_map<uint64_t, Merge> merges_;  // (left id, right id) -> merge
  std::optional<int32_t> unk_id_;
  std::string continuing_subword_prefix_, end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::vector<int32_t> byte_fallback_ids_;  // [256] id of "<0xNN>", -1 when absent

  // Pre-token -> ids. Words longer than kMaxCachedWordBytes are not cached; the cache stops
  // growing at kMaxCacheEntries (as HF's does at its capacity).
  static constexpr size_t kMaxCachedWordBytes = 256;
  static constexpr size_t kMaxCacheEntries = 1 << 20;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace kvb::tok
