#include "harness/tokenizer/bpe_model.h"

#include <cstdio>
#include <queue>

#include "common/error_text.h"
#include "harness/tokenizer/utf8.h"

namespace kvb::tok {
namespace {

// A merge of the queue: the pair starting at symbol `pos` becomes `new_id`.
struct QueuedMerge {
  int32_t rank, pos, new_id;
  // Lowest rank first, then leftmost (HF's Merge ordering).
  bool operator<(const QueuedMerge& o) const {
    return rank != o.rank ? rank > o.rank : pos > o.pos;
  }
};

// One symbol of a word being merged: a doubly linked list over the initial characters.
struct Symbol {
  int32_t id;
  int32_t prev, next;  // indices of the neighbours, -1 at the ends
  bool alive;          // false once merged into its left neighbour
};

}  // namespace

BpeModel::BpeModel(const JsonNode& model) {
  const JsonNode vocab = model.at("vocab");
  vocab.object();
  std::vector<std::pair<std::string, int32_t>> entries;
  entries.reserve(vocab.size());
  int64_t max_id = -1;
  for (const auto& [token, value] : vocab.members()) {
    const int64_t id = value.integer(0, kMaxTokenIds - 1);
    max_id = std::max(max_id, id);
    entries.emplace_back(token, static_cast<int32_t>(id));
  }
  id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  id_used_.assign(static_cast<size_t>(max_id + 1), false);
  vocab_.reserve(entries.size());
  for (auto& [token, id] : entries) {
    if (id_used_[id]) {
      vocab.fail("id " + std::to_string(id) + " is given to both " + quote_input(id_to_token_[id]) +
                 " and " + quote_input(token));
    }
    id_to_token_[id] = token;
    id_used_[id] = true;
    vocab_.emplace(std::move(token), id);
  }

  if (auto unk = model.find("unk_token")) {
    auto id = token_to_id(unk->str());
    if (!id) unk->fail(quote_input(unk->str()) + " is not in model.vocab");
    unk_id_ = *id;
  }
  continuing_subword_prefix_ = model.str("continuing_subword_prefix", "");
  end_of_word_suffix_ = model.str("end_of_word_suffix", "");
  fuse_unk_ = model.boolean("fuse_unk", false);
  byte_fallback_ = model.boolean("byte_fallback", false);
  ignore_merges_ = model.boolean("ignore_merges", false);
  if (auto dropout = model.find("dropout")) {
    if (dropout->number() != 0.0) dropout->expected("null (dropout is not supported)");
  }
  byte_fallback_ids_.assign(256, -1);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    if (auto id = token_to_id(name)) byte_fallback_ids_[b] = *id;
  }

  // Merges: "left right" strings or [left, right] pairs; rank = position in the list. A later
  // duplicate replaces an earlier one, as when HF collects them into its map.
  const JsonNode merges = model.at("merges");
  merges.array();
  merges_.reserve(merges.size());
  int32_t rank = 0;
  for (const JsonNode& m : merges.items()) {
    std::string left, right;
    if (m.is_string()) {
      const std::string s = m.str();
      const size_t space = s.find(' ');
      if (space == std::string::npos) m.expected("a string \"a b\" or a pair [\"a\", \"b\"]");
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].str();
      right = m[1].str();
    } else {
      m.expected("a string \"a b\" or a pair [\"a\", \"b\"]");
    }
    const auto left_id = token_to_id(left), right_id = token_to_id(right);
    if (!left_id || !right_id) {
      m.fail("names a token that is not in model.vocab (" + quote_input(!left_id ? left : right) +
             ")");
    }
    // The merged token drops the right part's continuing-subword prefix.
    std::string_view right_body = right;
    if (!continuing_subword_prefix_.empty() && right_body.starts_with(continuing_subword_prefix_)) {
      right_body.remove_prefix(continuing_subword_prefix_.size());
    }
    const std::string merged = left + std::string(right_body);
    const auto new_id = token_to_id(merged);
    if (!new_id) m.fail("makes a token that is not in model.vocab (" + quote_input(merged) + ")");
    merges_[pair_key(*left_id, *right_id)] = Merge{rank++, *new_id};
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || id >= id_limit() || !id_used_[id]) return nullptr;
  return &id_to_token_[id];
}

std::vector<int32_t> BpeModel::initial_symbols(std::string_view word) const {
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  int32_t pending_unk = -1;  // an unknown run not yet emitted (fused when fuse_unk), -1: none
  std::string piece;
  for (size_t pos = 0, len = 0; pos < word.size(); pos += len) {
    utf8::decode_at(word, pos, &len);
    const bool first = pos == 0, last = pos + len == word.size();
    piece.clear();
    if (!first) piece += continuing_subword_prefix_;
    piece.append(word.substr(pos, len));
    if (last) piece += end_of_word_suffix_;
    if (auto id = token_to_id(piece)) {
      if (pending_unk >= 0) ids.push_back(pending_unk);
      pending_unk = -1;
      ids.push_back(*id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : piece) all = all && byte_fallback_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        // As in HF, a pending unknown token stays pending across byte-fallback symbols.
        for (char c : piece) ids.push_back(byte_fallback_ids_[static_cast<uint8_t>(c)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk >= 0 && !fuse_unk_) ids.push_back(pending_unk);
      pending_unk = *unk_id_;
    }
  }
  if (pending_unk >= 0) ids.push_back(pending_unk);
  return ids;
}

std::vector<int32_t> BpeModel::merge_word(std::string_view word) const {
  const std::vector<int32_t> initial = initial_symbols(word);
  const auto n = static_cast<int32_t>(initial.size());
  std::vector<Symbol> symbols(n);
  for (int32_t i = 0; i < n; ++i)
    symbols[i] = Symbol{initial[i], i - 1, i + 1 < n ? i + 1 : -1, true};

  const auto find_merge = [&](int32_t a, int32_t b) -> const Merge* {
    auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  std::priority_queue<QueuedMerge> queue;
  for (int32_t i = 0; i + 1 < n; ++i) {
    if (const Merge* m = find_merge(symbols[i].id, symbols[i + 1].id)) {
      queue.push({m->rank, i, m->new_id});
    }
  }
  while (!queue.empty()) {
    const QueuedMerge top = queue.top();
    queue.pop();
    Symbol& cur = symbols[top.pos];
    if (!cur.alive || cur.next < 0) continue;
    const int32_t right_pos = cur.next;
    const Symbol right = symbols[right_pos];
    // Skip entries made stale by an earlier merge of either symbol.
    const Merge* m = find_merge(cur.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;
    cur.id = top.new_id;
    cur.next = right.next;
    symbols[right_pos].alive = false;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (cur.prev >= 0) {
      if (const Merge* pm = find_merge(symbols[cur.prev].id, cur.id)) {
        queue.push({pm->rank, cur.prev, pm->new_id});
      }
    }
    if (cur.next >= 0) {
      if (const Merge* nm = find_merge(cur.id, symbols[cur.next].id)) {
        queue.push({nm->rank, top.pos, nm->new_id});
      }
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(n);
  for (const Symbol& s : symbols) {
    if (s.alive) ids.push_back(s.id);
  }
  return ids;
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto id = token_to_id(word)) {
      out->push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids = merge_word(word);
  out->insert(out->end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < kMaxCacheEntries) cache_.emplace(std::string(word), std::move(ids));
  }
}

}  // namespace kvb::tok
