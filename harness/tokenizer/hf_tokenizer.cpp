#include "harness/tokenizer/hf_tokenizer.h"

#include <filesystem>

#include "common/check.h"
#include "common/error_text.h"
#include "common/json_reader.h"
#include "harness/model/config.h"
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
  void read_config(const JsonNode& config);

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
  const JsonNode root(j, source);
  root.object();
  const JsonNode model = root.at("model");
  model.object();
  std::string type;
  if (const auto t = model.find("type")) {
    type = t->str();
    if (type != "BPE") type_not_supported(*t, type, {"BPE"});
  } else if (!(model.has("vocab") && model.has("merges"))) {
    model.at("type");  // old files leave the type out of BPE models only: "model.type: missing"
  }
  // Encoding one text is what kvbench does: truncation would cut it, fixed padding lengthen it.
  if (auto t = root.find("truncation")) t->expected("null (truncation is not supported)");
  if (auto pad = root.find("padding")) {
    pad->object();
    const JsonNode strategy = pad->at("strategy");
    if (!strategy.is_string() || strategy.str() != "BatchLongest") {
      strategy.expected("\"BatchLongest\" (padding to a fixed length is not supported)");
    }
  }
  model_ = std::make_unique<BpeModel>(model);
  normalizer_ = make_normalizer(root.find("normalizer"));
  added_ = AddedVocabulary(root.find("added_tokens"), normalizer_.get());
  pre_tokenizer_ = make_pre_tokenizer(root.find("pre_tokenizer"));
  decoder_ = make_decoder(root.find("decoder"));
  specials_ = read_post_processor(root.find("post_processor"));

  vocab_size_ = model_->id_limit();
  for (const AddedToken& t : added_.tokens()) vocab_size_ = std::max(vocab_size_, t.id + 1);
  for (const std::vector<int32_t>* list : {&specials_.prefix, &specials_.suffix}) {
    for (int32_t id : *list) {
      if (id < 0 || id >= vocab_size_) {
        root.at("post_processor")
            .fail("adds token id " + std::to_string(id) + ", outside the vocabulary (ids 0.." +
                  std::to_string(vocab_size_ - 1) + ")");
      }
      // An id inside the range that no token holds (a gap in the vocabulary) would become the
      // tokenizer's BOS/EOS without a string (fuzz_tokenizer_json found it).
      if (added_.find_by_id(id) == nullptr && model_->id_to_token(id) == nullptr) {
        root.at("post_processor")
            .fail("adds token id " + std::to_string(id) +
                  ", which no token of the vocabulary or added_tokens holds");
      }
    }
  }
  // Without a tokenizer_config.json, the post-processor's first / last special token.
  if (!specials_.prefix.empty()) bos_ = specials_.prefix.front();
  if (!specials_.suffix.empty()) eos_ = specials_.suffix.back();
  if (!config.is_null()) read_config(JsonNode(config, config_source));
}

// tokenizer_config.json: bos_token / eos_token name the tokens; add_bos_token / add_eos_token,
// when present, decide what encode(add_special = true) adds (as LlamaTokenizerFast does).
void HfTokenizer::read_config(const JsonNode& config) {
  config.object();
  const auto token_field = [&](const JsonNode& v) -> std::string {
    if (v.is_string()) return v.str();
    if (v.is_object()) return v.at("content").str();
    v.expected("a string, an object with \"content\", or null");
  };
  const auto resolve = [&](const std::string& key, std::optional<int32_t>* dst) {
    if (!config.raw().contains(key)) return;  // not stated: keep what the post-processor says
    dst->reset();
    if (auto v = config.find(key)) {
      const std::string name = token_field(*v);
      *dst = token_to_id(name);
      if (!*dst) {
        throw InputError(config.source() + ": " + key + " " + quote_input(name) +
                         " is not a token of the tokenizer");
      }
    }
  };
  resolve("bos_token", &bos_);
  resolve("eos_token", &eos_);
  const auto add_bos = config.find("add_bos_token"), add_eos = config.find("add_eos_token");
  if (add_bos || add_eos) {
    specials_ = {};
    if (add_bos && add_bos->boolean()) {
      if (!bos_) add_bos->fail("true but there is no bos_token");
      specials_.prefix.push_back(*bos_);
    }
    if (add_eos && add_eos->boolean()) {
      if (!eos_) add_eos->fail("true but there is no eos_token");
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
  std::error_code ec;
  KVB_INPUT_CHECK(fs::exists(path, ec), path, ": no such file");
  KVB_INPUT_CHECK(!fs::is_directory(path, ec), path, ": is a directory, not a tokenizer.json");
  const nlohmann::json j = read_json_input(path);
  const fs::path dir = fs::path(path).parent_path();
  const std::string config_path = (dir / "tokenizer_config.json").string();
  nlohmann::json config;
  if (fs::exists(config_path, ec)) config = read_json_input(config_path);
  auto tok = make_hf_tokenizer(j, path, config, config_path);
  // Beside a model's config.json, every id the tokenizer can produce must index its embedding.
  const std::string model_config = (dir / "config.json").string();
  if (fs::exists(model_config, ec)) {
    check_tokenizer_fits_model(
        *tok, path, load_model_config(dir.empty() ? "." : dir.string()).vocab_size, model_config);
  }
  return tok;
}

void check_tokenizer_fits_model(const Tokenizer& tok, const std::string& tokenizer_path,
                                int64_t vocab_size, const std::string& config_path) {
  const int32_t n = tok.vocab_size();
  if (n <= vocab_size) return;
  const int32_t id = n - 1;  // the largest id the tokenizer holds
  throw InputError(tokenizer_path + ": token id " + std::to_string(id) + " (" +
                   quote_input(tok.id_to_token(id)) + ") >= vocab_size " +
                   std::to_string(vocab_size) + " of " + config_path);
}

}  // namespace kvb
