#include "harness/tokenizer/hf_tokenizer.h"

#include <filesystem>

#include "common/check.h"
#include "common/json_io.h"
#include "harness/tokenizer/added_vocab.h"
#include "harness/tokenizer/bpe_model.h"
#include "harness/tokenizer/decoders.h"
#include "harness/tokenizer/json_fields.h"
#include "harness/tokenizer/normalizers.h"
#include "harness/tokenizer/post_processor.h"
#include "harness/tokenizer/pre_tokenizers.h"
#include "harness/tokenizer/utf8.h"

namespace kvb::tok {
namespace {

// The pipeline of HF tokenizers: added tokens are split off the raw text, each other segment is
// normalized, pre-tokenized and run through the BPE model; the post-processor adds specials.
class HfTokenizer final : public Tokenizer {
 public:
  HfTokenizer(const nlohmann::json& j, const std::string& source, const nlohmann::json& config,
              const std::string& config_source);

  std::vector<int32_t> encode(const std::string& text, bool add_special) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override;
  int32_t vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> bos_id() const override { return bos_; }
  std::optional<int32_t> eos_id() const override { return eos_; }
  std::string id_to_token(int32_t id) const override;

 private:
  // Appends the ids of a text segment that holds no raw added token.
  void encode_segment(std::string_view text, std::vector<int32_t>* ids) const;
  std::optional<int32_t> token_to_id(std::string_view token) const;
  void read_config(const nlohmann::json& config, const std::string& source);

  std::unique_ptr<BpeModel> model_;
  AddedVocabulary added_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Decoder> decoder_;
  SpecialIds specials_;  // added around the text by encode(add_special = true)
  std::optional<int32_t> bos_, eos_;
  int32_t vocab_size_ = 0;
};

HfTokenizer::HfTokenizer(const nlohmann::json& j, const std::string& source,
                         const nlohmann::json& config, const std::string& config_source) {
  const JsonFields f(source);
  if (!j.is_object()) f.fail("the top level must be a JSON object");
  const nlohmann::json& model = f.require(j, "", "model", JsonKind::kObject);
  std::string type;
  if (const auto t = f.optional_string(model, "model", "type")) {
    type = *t;
  } else if (model.contains("vocab") && model.contains("merges")) {
    type = "BPE";  // old files leave the type out
  } else {
    f.fail("field 'model.type' is missing");
  }
  if (type != "BPE") f.fail("model.type '" + type + "' is not supported (BPE only)");
  model_ = std::make_unique<BpeModel>(model, source);
  normalizer_ = make_normalizer(j.value("normalizer", nlohmann::json()), "normalizer", f);
  added_ = AddedVocabulary(j.value("added_tokens", nlohmann::json()), f, normalizer_.get());
  pre_tokenizer_ =
      make_pre_tokenizer(j.value("pre_tokenizer", nlohmann::json()), "pre_tokenizer", f);
  decoder_ = make_decoder(j.value("decoder", nlohmann::json()), "decoder", f);
  specials_ = read_post_processor(j.value("post_processor", nlohmann::json()), "post_processor", f);

  vocab_size_ = model_->id_limit();
  for (const AddedToken& t : added_.tokens()) vocab_size_ = std::max(vocab_size_, t.id + 1);
  for (const std::vector<int32_t>* list : {&specials_.prefix, &specials_.suffix}) {
    for (int32_t id : *list) {
      if (id < 0 || id >= vocab_size_) {
        f.fail("post_processor adds id " + std::to_string(id) + ", outside the vocabulary");
      }
    }
  }
  // Without a tokenizer_config.json, the post-processor's first / last special token.
  if (!specials_.prefix.empty()) bos_ = specials_.prefix.front();
  if (!specials_.suffix.empty()) eos_ = specials_.suffix.back();
  if (!config.is_null()) read_config(config, config_source);
}

// tokenizer_config.json: bos_token / eos_token name the tokens; add_bos_token / add_eos_token,
// when present, decide what encode(add_special = true) adds (as LlamaTokenizerFast does).
void HfTokenizer::read_config(const nlohmann::json& config, const std::string& source) {
  const JsonFields c(source);
  if (!config.is_object()) c.fail("the top level must be a JSON object");
  const auto token_field = [&](const std::string& key) -> std::optional<std::string> {
    auto it = config.find(key);
    if (it == config.end() || it->is_null()) return std::nullopt;
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object()) return c.require_string(*it, key, "content");
    c.fail("field '" + key + "' must be a string, an object with \"content\", or null");
  };
  const auto resolve = [&](const std::string& key, std::optional<int32_t>* dst) {
    auto it = config.find(key);
    if (it == config.end()) return;  // not stated: keep what the post-processor says
    dst->reset();
    if (auto name = token_field(key)) {
      *dst = token_to_id(*name);
      if (!*dst) c.fail(key + " '" + *name + "' is not a token of the tokenizer");
    }
  };
  resolve("bos_token", &bos_);
  resolve("eos_token", &eos_);
  const nlohmann::json* add_bos = c.optional(config, "", "add_bos_token", JsonKind::kBool);
  const nlohmann::json* add_eos = c.optional(config, "", "add_eos_token", JsonKind::kBool);
  if (add_bos != nullptr || add_eos != nullptr) {
    specials_ = {};
    if (add_bos != nullptr && add_bos->get<bool>()) {
      if (!bos_) c.fail("add_bos_token is true but there is no bos_token");
      specials_.prefix.push_back(*bos_);
    }
    if (add_eos != nullptr && add_eos->get<bool>()) {
      if (!eos_) c.fail("add_eos_token is true but there is no eos_token");
      specials_.suffix.push_back(*eos_);
    }
  }
}

std::optional<int32_t> HfTokenizer::token_to_id(std::string_view token) const {
  if (auto id = added_.find_by_content(token)) return id;
  return model_->token_to_id(token);
}

void HfTokenizer::encode_segment(std::string_view text, std::vector<int32_t>* ids) const {
  std::string normalized(text);
  if (normalizer_) normalizer_->normalize(&normalized);
  std::vector<TextSegment> segments;
  if (added_.has_normalized_tokens()) {
    added_.split(normalized, true, &segments);
  } else if (!normalized.empty()) {
    segments.push_back({normalized, -1});
  }
  std::vector<std::string> pieces;
  for (const TextSegment& s : segments) {
    if (s.id >= 0) {
      ids->push_back(s.id);
      continue;
    }
    pieces.assign(1, std::string(s.text));
    if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(&pieces);
    for (const std::string& p : pieces) model_->tokenize(p, ids);
  }
}

std::vector<int32_t> HfTokenizer::encode(const std::string& text, bool add_special) const {
  // Invalid UTF-8 is read the way Python's errors="replace" / Rust's from_utf8_lossy read it.
  const std::string lossy = utf8::is_valid(text) ? std::string() : utf8::to_valid_lossy(text);
  const std::string_view valid = lossy.empty() ? std::string_view(text) : std::string_view(lossy);
  std::vector<int32_t> ids;
  ids.reserve(valid.size() / 3 + 4);
  if (add_special) ids = specials_.prefix;
  std::vector<TextSegment> segments;
  added_.split(valid, false, &segments);
  for (const TextSegment& s : segments) {
    if (s.id >= 0) {
      ids.push_back(s.id);
    } else {
      encode_segment(s.text, &ids);
    }
  }
  if (add_special) ids.insert(ids.end(), specials_.suffix.begin(), specials_.suffix.end());
  return ids;
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (const AddedToken* t = added_.find_by_id(id)) {
      if (!(skip_special && t->special)) tokens.push_back(t->content);
    } else if (const std::string* s = model_->id_to_token(id)) {
      tokens.push_back(*s);
    }  // ids outside the vocabulary are dropped, as HF drops them
  }
  if (!decoder_) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  decoder_->decode_chain(&tokens);
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

std::string HfTokenizer::id_to_token(int32_t id) const {
  if (const AddedToken* t = added_.find_by_id(id)) return t->content;
  const std::string* s = model_->id_to_token(id);
  KVB_CHECK(s != nullptr, "token id ", id, " is not in the vocabulary");
  return *s;
}

}  // namespace
}  // namespace kvb::tok

namespace kvb {

std::unique_ptr<Tokenizer> make_hf_tokenizer(const nlohmann::json& tokenizer_json,
                                             const std::string& source,
                                             const nlohmann::json& config,
                                             const std::string& config_source) {
  return std::make_unique<tok::HfTokenizer>(tokenizer_json, source, config, config_source);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  KVB_INPUT_CHECK(fs::exists(path), path, ": no such file");
  KVB_INPUT_CHECK(!fs::is_directory(path), path, ": is a directory, not a tokenizer.json");
  const nlohmann::json j = read_json_file(path);
  const std::string config_path = (fs::path(path).parent_path() / "tokenizer_config.json").string();
  nlohmann::json config;
  if (fs::exists(config_path)) config = read_json_file(config_path);
  return make_hf_tokenizer(j, path, config, config_path);
}

}  // namespace kvb
