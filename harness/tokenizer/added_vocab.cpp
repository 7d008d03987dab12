#include "harness/tokenizer/added_vocab.h"

#include <algorithm>

#include "common/error_text.h"
#include "harness/tokenizer/bpe_model.h"
#include "harness/tokenizer/normalizers.h"
#include "harness/tokenizer/pcre_regex.h"
#include "harness/tokenizer/utf8.h"

namespace kvb::tok {
namespace {

// Start of the last character of text[0, end) (end > 0).
size_t last_char_start(std::string_view text, size_t end) {
  size_t p = end - 1;
  while (p > 0 && (static_cast<uint8_t>(text[p]) & 0xC0) == 0x80) --p;
  return p;
}

}  // namespace

AddedVocabulary::AddedVocabulary() : by_first_byte_(2, std::vector<std::vector<size_t>>(256)) {}

AddedVocabulary::AddedVocabulary(const std::optional<JsonNode>& added_tokens,
                                 const Normalizer* normalizer)
    : AddedVocabulary() {
  if (!added_tokens) return;
  for (const JsonNode& t : added_tokens->array().items()) {
    t.object();
    AddedToken tok;
    tok.content = t.at("content").str();
    const JsonNode id = t.at("id");
    tok.id = static_cast<int32_t>(id.integer(0, kMaxTokenIds - 1));
    tok.special = t.boolean("special", false);
    tok.single_word = t.boolean("single_word", false);
    tok.lstrip = t.boolean("lstrip", false);
    tok.rstrip = t.boolean("rstrip", false);
    tok.normalized = t.boolean("normalized", !tok.special);
    if (!utf8::is_valid(tok.content)) t.at("content").expected("valid UTF-8");
    if (const AddedToken* other = find_by_id(tok.id)) {
      id.fail("id " + std::to_string(tok.id) + " is given to both " + quote_input(other->content) +
              " and " + quote_input(tok.content));
    }
    tok.match = tok.content;
    if (tok.normalized && normalizer != nullptr) normalizer->normalize(&tok.match);
    index_by_id_[tok.id] = tokens_.size();
    tokens_.push_back(std::move(tok));
  }
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const AddedToken& t = tokens_[i];
    if (t.match.empty()) continue;
    by_first_byte_[t.normalized ? 1 : 0][static_cast<uint8_t>(t.match[0])].push_back(i);
    (t.normalized ? has_normalized_ : has_raw_) = true;
    if (t.single_word && !word_char_) {
      word_char_ = std::make_unique<PcreRegex>(R"(\w)", false, context_of(*added_tokens));
    }
  }
  for (auto& table : by_first_byte_) {
    for (auto& bucket : table) {
      std::stable_sort(bucket.begin(), bucket.end(), [&](size_t a, size_t b) {
        return tokens_[a].match.size() > tokens_[b].match.size();
      });
    }
  }
}

AddedVocabulary::~AddedVocabulary() = default;
AddedVocabulary::AddedVocabulary(AddedVocabulary&&) noexcept = default;
AddedVocabulary& AddedVocabulary::operator=(AddedVocabulary&&) noexcept = default;

const AddedToken* AddedVocabulary::longest_match_at(std::string_view text, size_t pos,
                                                    bool normalized) const {
  const auto& bucket = by_first_byte_[normalized ? 1 : 0][static_cast<uint8_t>(text[pos])];
  for (size_t i : bucket) {
    if (text.substr(pos).starts_with(tokens_[i].match)) return &tokens_[i];
  }
  return nullptr;
}

void AddedVocabulary::split(std::string_view text, bool normalized,
                            std::vector<TextSegment>* out) const {
  size_t emitted = 0;  // text[0, emitted) is already in `out`
  size_t pos = 0;
  const bool any = normalized ? has_normalized_ : has_raw_;
  while (any && pos < text.size()) {
    const AddedToken* tok = longest_match_at(text, pos, normalized);
    if (tok == nullptr) {
      ++pos;
      continue;
    }
    size_t begin = pos, end = pos + tok->match.size();
    pos = end;  // as with HF's non-overlapping matcher, a rejected match is not searched again
    if (tok->single_word) {
      const bool word_before =
          begin > 0 && word_char_->matches_at_start(text.substr(last_char_start(text, begin)));
      const bool word_after = end < text.size() && word_char_->matches_at_start(text.substr(end));
      if (word_before || word_after) continue;
    }
    size_t len = 0;
    if (tok->lstrip) {
      while (begin > emitted) {
        const size_t p = last_char_start(text, begin);
        if (!utf8::is_white_space(utf8::decode_at(text, p, &len))) break;
        begin = p;
      }
    }
    if (tok->rstrip) {
      while (end < text.size() && utf8::is_white_space(utf8::decode_at(text, end, &len)))
        end += len;
      pos = end;
    }
    if (begin > emitted) out->push_back({text.substr(emitted, begin - emitted), -1});
    out->push_back({text.substr(begin, end - begin), tok->id});
    emitted = end;
  }
  if (emitted < text.size()) out->push_back({text.substr(emitted), -1});
}

const AddedToken* AddedVocabulary::find_by_id(int32_t id) const {
  auto it = index_by_id_.find(id);
  return it == index_by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedVocabulary::find_by_content(std::string_view content) const {
  for (const AddedToken& t : tokens_) {
    if (t.content == content) return t.id;
  }
  return std::nullopt;
}

}  // namespace kvb::tok
