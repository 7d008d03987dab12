// Tokenizers: tokenizer.json (BPE, byte-level and SentencePiece flavours) and a plain byte
// tokenizer for the models kvbench trains itself.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kvb {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Token ids for `text`. With add_special=true, BOS/EOS are added as the tokenizer's
  // post-processor / tokenizer_config.json says (HF `encode(text, add_special_tokens=True)`).
  virtual std::vector<int32_t> encode(const std::string& text, bool add_special = true) const = 0;
  // Text for `ids`. skip_special drops added special tokens (HF `decode(skip_special_tokens)`).
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  // The string of one token as stored in the vocabulary (for debugging and reports).
  virtual std::string id_to_token(int32_t id) const = 0;
};

// Loads `path` (a tokenizer.json). If a tokenizer_config.json sits beside it, BOS/EOS flags
// (add_bos_token / add_eos_token) and the bos/eos token names are taken from it. If a model's
// config.json sits beside it, check_tokenizer_fits_model() is applied against its vocab_size.
// Throws kvb::InputError naming the file on anything malformed. Limits: token ids (model.vocab,
// added_tokens, post_processor) in [0, 2^20); no two vocabulary entries or added tokens with one
// id; truncation null and padding null or BatchLongest; regex matching bounded (PCRE2 match
// limit 10^6 steps per match, refused as a bad pattern beyond).
// Supported (see hf_tokenizer.cpp): model BPE (byte-level and SentencePiece style, byte_fallback,
// ignore_merges); normalizers NFC, Prepend, Replace; pre-tokenizers Split (PCRE2), ByteLevel;
// decoders ByteLevel, Replace, ByteFallback, Fuse, Strip; post-processors TemplateProcessing,
// ByteLevel, Roberta/BertProcessing; Sequence of each. encode() reads invalid UTF-8 as U+FFFD.
// The returned tokenizer is safe to use from several threads.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

// Throws kvb::InputError "<tokenizer_path>: token id N (\"tok\") >= vocab_size M of
// <config_path>" when the tokenizer holds an id the model's embedding has no row for.
void check_tokenizer_fits_model(const Tokenizer& tok, const std::string& tokenizer_path,
                                int64_t vocab_size, const std::string& config_path);

// Bytes 0..255 are ids 0..255; BOS = 256, EOS = 257 (vocab 258 unless given larger).
std::unique_ptr<Tokenizer> make_byte_tokenizer(int32_t vocab_size = 258);

}  // namespace kvb
