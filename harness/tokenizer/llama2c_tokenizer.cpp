#include "harness/tokenizer/llama2c_tokenizer.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <unordered_map>

#include "common/check.h"
#include "common/json_io.h"
#include "harness/tokenizer/utf8.h"

namespace kvb {
namespace {

constexpr const char* kSpaceMark = "\xE2\x96\x81";  // U+2581 "▁", SentencePiece's space
constexpr int kNumSpecial = 3;                      // <unk>, <s>, </s>
constexpr int kFirstPiece = kNumSpecial + 256;      // after the byte tokens

struct Piece {
  std::string text;  // as in tokenizer.json ("▁" for spaces)
  float score;
};

std::vector<Piece> read_pieces(const std::string& path, int vocab_size) {
  KVB_INPUT_CHECK(vocab_size > kFirstPiece, path, ": vocab_size ", vocab_size,
                  " is too small for a llama2.c tokenizer (3 specials + 256 bytes + pieces)");
  const std::string data = read_file(path);
  size_t off = 0;
  const auto take = [&](void* dst, size_t n, const char* what) {
    KVB_INPUT_CHECK(off + n <= data.size(), path, ": truncated at byte ", off, " reading ", what,
                    " (is vocab_size ", vocab_size, " right?)");
    std::memcpy(dst, data.data() + off, n);
    off += n;
  };
  int32_t max_len = 0;
  take(&max_len, 4, "max_token_length");
  KVB_INPUT_CHECK(max_len > 0 && max_len < 4096, path, ": max_token_length ", max_len,
                  " is not plausible; not a llama2.c tokenizer file?");
  std::vector<Piece> pieces(vocab_size);
  for (int i = 0; i < vocab_size; ++i) {
    int32_t len = 0;
    take(&pieces[i].score, 4, "a score");
    take(&len, 4, "a token length");
    KVB_INPUT_CHECK(len >= 0 && len <= max_len, path, ": token ", i, " has length ", len,
                    " (max_token_length ", max_len, ")");
    std::string bytes(static_cast<size_t>(len), '\0');
    take(bytes.data(), bytes.size(), "token bytes");
    pieces[i].text = std::move(bytes);
  }
  KVB_INPUT_CHECK(off == data.size(), path, ": ", data.size() - off, " bytes left after ",
                  vocab_size, " tokens (is vocab_size right?)");

  pieces[0].text = "<unk>";
  pieces[1].text = "<s>";
  pieces[2].text = "</s>";
  for (int b = 0; b < 256; ++b) {
    char expect[8];
    std::snprintf(expect, sizeof(expect), "<0x%02X>", b);
    KVB_INPUT_CHECK(pieces[kNumSpecial + b].text == expect, path, ": token ", kNumSpecial + b,
                    " should be the byte token ", expect);
  }
  for (int i = kFirstPiece; i < vocab_size; ++i) {
    std::string& t = pieces[i].text;
    KVB_INPUT_CHECK(!t.empty() && tok::utf8::is_valid(t), path, ": token ", i,
                    " is empty or not valid UTF-8");
    std::string converted;
    for (char c : t) {
      if (c == ' ') {
        converted += kSpaceMark;
      } else {
        converted.push_back(c);
      }
    }
    t = std::move(converted);
  }
  return pieces;
}

}  // namespace

nlohmann::json llama2c_tokenizer_to_hf(const std::string& tok_bin_path, int vocab_size) {
  const std::vector<Piece> pieces = read_pieces(tok_bin_path, vocab_size);
  std::unordered_map<std::string, int> piece_id;  // ordinary pieces only
  nlohmann::json vocab = nlohmann::json::object();
  for (int i = 0; i < vocab_size; ++i) {
    KVB_INPUT_CHECK(!vocab.contains(pieces[i].text), tok_bin_path, ": token ", i, " ('",
                    pieces[i].text, "') appears twice");
    vocab[pieces[i].text] = i;
    if (i >= kFirstPiece) piece_id.emplace(pieces[i].text, i);
  }

  // Every split of an ordinary piece (at character boundaries) into two ordinary pieces.
  struct MergeRow {
    float score;
    int merged, left, right;
  };
  std::vector<MergeRow> rows;
  for (int i = kFirstPiece; i < vocab_size; ++i) {
    const std::string& t = pieces[i].text;
    size_t len = 0;
    tok::utf8::decode_at(t, 0, &len);
    for (size_t cut = len; cut < t.size(); cut += len) {
      auto l = piece_id.find(t.substr(0, cut)), r = piece_id.find(t.substr(cut));
      if (l != piece_id.end() && r != piece_id.end()) {
        rows.push_back({pieces[i].score, i, l->second, r->second});
      }
      tok::utf8::decode_at(t, cut, &len);
    }
  }
  std::stable_sort(rows.begin(), rows.end(), [](const MergeRow& a, const MergeRow& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.merged != b.merged) return a.merged < b.merged;
    return a.left != b.left ? a.left < b.left : a.right < b.right;
  });
  nlohmann::json merges = nlohmann::json::array();
  for (const MergeRow& m : rows) merges.push_back({pieces[m.left].text, pieces[m.right].text});

  nlohmann::json added = nlohmann::json::array();
  for (int i = 0; i < kNumSpecial; ++i) {
    added.push_back({{"id", i},
                     {"content", pieces[i].text},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  const nlohmann::json space_pattern = {{"String", " "}};
  const nlohmann::json mark_pattern = {{"String", kSpaceMark}};
  nlohmann::json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "Prepend"}, {"prepend", kSpaceMark}},
        {{"type", "Replace"}, {"pattern", space_pattern}, {"content", kSpaceMark}}}}};
  j["pre_tokenizer"] = nullptr;
  const nlohmann::json bos_item = {{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}};
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {bos_item, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"pair",
       {bos_item,
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
        {{"SpecialToken", {{"id", "<s>"}, {"type_id", 1}}}},
        {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}};
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Replace"}, {"pattern", mark_pattern}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", "<unk>"},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", true},
                {"byte_fallback", true},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", merges}};
  return j;
}

nlohmann::json llama2c_tokenizer_config() {
  return {{"add_bos_token", true}, {"add_eos_token", false},
          {"bos_token", "<s>"},    {"eos_token", "</s>"},
          {"unk_token", "<unk>"},  {"clean_up_tokenization_spaces", false},
          {"legacy", true},        {"tokenizer_class", "LlamaTokenizer"}};
}

void write_llama2c_tokenizer_files(const nlohmann::json& tokenizer_json,
                                   const std::string& out_dir) {
  namespace fs = std::filesystem;
  write_file((fs::path(out_dir) / "tokenizer.json").string(), tokenizer_json.dump(1) + "\n");
  write_file((fs::path(out_dir) / "tokenizer_config.json").string(),
             llama2c_tokenizer_config().dump(2) + "\n");
}

}  // namespace kvb
