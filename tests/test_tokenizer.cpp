// Unit tests of harness/tokenizer: the byte tokenizer, small hand-written tokenizer.json files,
// malformed files, and the llama2.c tokenizer conversion against llama2.c's own encode and the
// reference outputs in ../shared/reference/stories260K.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "common/check.h"
#include "harness/tokenizer/hf_tokenizer.h"
#include "harness/tokenizer/llama2c_tokenizer.h"
#include "harness/tokenizer/tokenizer.h"
#include "harness/tokenizer/unicode_nfc.h"

#ifndef KVB_SHARED_DIR
#define KVB_SHARED_DIR "../shared"
#endif

namespace kvb {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Ids = std::vector<int32_t>;

// A fresh directory under the system temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("kvb_tok_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string write(const std::string& name, const std::string& text) const {
    const std::string p = (path_ / name).string();
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ---- byte tokenizer ----------------------------------------------------------------------------

TEST(ByteTokenizer, RoundTripsEveryByte) {
  auto tok = make_byte_tokenizer();
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const Ids ids = tok->encode(all, true);
  ASSERT_EQ(ids.size(), 257u);
  EXPECT_EQ(ids[0], 256);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[b + 1], b);
  EXPECT_EQ(tok->decode(ids, true), all);
  EXPECT_EQ(tok->decode(ids, false), "<s>" + all);
  EXPECT_EQ(tok->encode("hi", false), (Ids{'h', 'i'}));
  EXPECT_EQ(tok->decode({256, 'o', 'k', 257}, false), "<s>ok</s>");
  EXPECT_EQ(tok->decode({256, 'o', 'k', 257}, true), "ok");
  EXPECT_EQ(tok->vocab_size(), 258);
  EXPECT_EQ(tok->bos_id(), 256);
  EXPECT_EQ(tok->eos_id(), 257);
  EXPECT_EQ(tok->id_to_token('a'), "a");
  EXPECT_EQ(tok->id_to_token(10), "<0x0A>");
  EXPECT_EQ(make_byte_tokenizer(300)->vocab_size(), 300);
  EXPECT_THROW(make_byte_tokenizer(100), InputError);
}

// ---- small hand-written tokenizer.json files --------------------------------------------------

// A GPT-2 style byte-level tokenizer over the letters a-e, space ("Ġ") and a few merges.
json tiny_byte_level() {
  json vocab = json::object();
  int id = 0;
  for (const char* t :
       {"a", "b", "c", "d", "e", "Ġ", "!", "Ċ", "ab", "abc", "Ġa", "Ġab", "cc", "ccc", "cccc"}) {
    vocab[t] = id++;
  }
  json j = {{"added_tokens",
             {{{"id", 15}, {"content", "<|bos|>"}, {"special", true}, {"normalized", false}},
              {{"id", 16}, {"content", "<|bos|>x"}, {"special", false}, {"normalized", false}}}},
            {"normalizer", nullptr},
            {"pre_tokenizer",
             {{"type", "Sequence"},
              {"pretokenizers",
               {{{"type", "Split"},
                 {"pattern", {{"Regex", R"( ?\p{L}+|\s+|[^\s\p{L}]+)"}}},
                 {"behavior", "Isolated"},
                 {"invert", false}},
                {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
            {"post_processor",
             {{"type", "TemplateProcessing"},
              {"single", {{{"SpecialToken", {{"id", "<|bos|>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
              {"special_tokens", {{"<|bos|>", {{"id", "<|bos|>"}, {"ids", {15}}}}}}}},
            {"decoder", {{"type", "ByteLevel"}}},
            {"model",
             {{"type", "BPE"},
              {"vocab", vocab},
              // Mixed "a b" strings and [a, b] pairs; "c c" before "cc cc" and "cc c".
              {"merges", {"a b", {"ab", "c"}, {"Ġ", "ab"}, "c c", "cc cc", "cc c"}}}}};
  return j;
}

TEST(HfTokenizer, ByteLevelBpeMergesByRank) {
  auto tok = make_hf_tokenizer(tiny_byte_level(), "tiny.json");
  EXPECT_EQ(tok->encode("abc", false), (Ids{9}));
  EXPECT_EQ(tok->encode("abc ab", false), (Ids{9, 11}));
  // "ccccc": c c merges left to right (cc cc c), then cc+cc -> cccc: [cccc, c].
  EXPECT_EQ(tok->encode("ccccc", false), (Ids{14, 2}));
  EXPECT_EQ(tok->encode("ccc", false), (Ids{13}));
  EXPECT_EQ(tok->encode("abc", true), (Ids{15, 9}));
  // Added tokens: leftmost-longest, emitted whole.
  EXPECT_EQ(tok->encode("a<|bos|>xa<|bos|>", false), (Ids{0, 16, 0, 15}));
  EXPECT_EQ(tok->decode({15, 9, 11, 7}, false), "<|bos|>abc ab\n");
  EXPECT_EQ(tok->decode({15, 9, 11, 7}, true), "abc ab\n");
  EXPECT_EQ(tok->bos_id(), 15);
  EXPECT_FALSE(tok->eos_id().has_value());
  EXPECT_EQ(tok->vocab_size(), 17);
  EXPECT_EQ(tok->id_to_token(11), "Ġab");
  EXPECT_EQ(tok->id_to_token(16), "<|bos|>x");
}

TEST(HfTokenizer, IgnoreMergesTakesWholeWordsFromTheVocab) {
  json j = tiny_byte_level();
  // Without merges "ab c" the word "abc" only exists as a vocab entry.
  j["model"]["merges"] = {"a b"};
  EXPECT_EQ(make_hf_tokenizer(j, "t.json")->encode("abc", false), (Ids{8, 2}));
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ(make_hf_tokenizer(j, "t.json")->encode("abc", false), (Ids{9}));
}

// A SentencePiece-style tokenizer: ▁ for spaces, byte fallback, BOS template.
json tiny_sentencepiece() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  int id = 259;
  for (const char* t : {"▁", "h", "i", "▁h", "▁hi", "é"}) vocab[t] = id++;
  return {{"added_tokens",
           {{{"id", 0}, {"content", "<unk>"}, {"special", true}, {"normalized", false}},
            {{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
            {{"id", 2}, {"content", "</s>"}, {"special", true}, {"normalized", false}}}},
          {"normalizer",
           {{"type", "Sequence"},
            {"normalizers",
             {{{"type", "Prepend"}, {"prepend", "▁"}},
              {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}}},
          {"pre_tokenizer", nullptr},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single", {{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
            {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}}}}}}},
          {"decoder",
           {{"type", "Sequence"},
            {"decoders",
             {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
              {{"type", "ByteFallback"}},
              {{"type", "Fuse"}},
              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
          {"model",
           {{"type", "BPE"},
            {"unk_token", "<unk>"},
            {"fuse_unk", true},
            {"byte_fallback", true},
            {"vocab", vocab},
            {"merges", {"▁ h", "▁h i"}}}}};
}

TEST(HfTokenizer, SentencePieceStyleByteFallbackAndDecode) {
  auto tok = make_hf_tokenizer(tiny_sentencepiece(), "sp.json");
  // "hi hé!" -> ▁hi ▁h é <0x21>
  EXPECT_EQ(tok->encode("hi hé!", true), (Ids{1, 263, 262, 264, 3 + '!'}));
  // "ü" is not in the vocabulary: two byte tokens.
  EXPECT_EQ(tok->encode("ü", false), (Ids{259, 3 + 0xC3, 3 + 0xBC}));
  EXPECT_EQ(tok->decode({1, 263, 262, 264, 3 + '!'}, true), "hi hé!");
  EXPECT_EQ(tok->decode({1, 263, 262, 264, 3 + '!'}, false), "<s> hi hé!");
  EXPECT_EQ(tok->decode({259, 3 + 0xC3, 3 + 0xBC}, true), "ü");
  // A broken UTF-8 byte run decodes to one U+FFFD per byte.
  EXPECT_EQ(tok->decode({3 + 0xC3, 260}, true), "\xEF\xBF\xBDh");
  // Added tokens split the raw text first; each side is normalized on its own.
  EXPECT_EQ(tok->encode("hi<s>hi", false), (Ids{263, 1, 263}));
  EXPECT_EQ(tok->encode("", true), (Ids{1}));
  EXPECT_EQ(tok->bos_id(), 1);
}

TEST(HfTokenizer, ConfigDecidesBosEos) {
  TempDir dir;
  const std::string path = dir.write("tokenizer.json", tiny_sentencepiece().dump());
  dir.write("tokenizer_config.json", json{{"add_bos_token", true},
                                          {"add_eos_token", true},
                                          {"bos_token", "<s>"},
                                          {"eos_token", {{"content", "</s>"}}}}
                                         .dump());
  auto tok = load_tokenizer(path);
  EXPECT_EQ(tok->encode("hi", true), (Ids{1, 263, 2}));
  EXPECT_EQ(tok->encode("hi", false), (Ids{263}));
  EXPECT_EQ(tok->eos_id(), 2);
  dir.write("tokenizer_config.json", json{{"add_bos_token", false}, {"bos_token", nullptr}}.dump());
  tok = load_tokenizer(path);
  EXPECT_EQ(tok->encode("hi", true), (Ids{263}));
  EXPECT_FALSE(tok->bos_id().has_value());
}

TEST(HfTokenizer, InvalidUtf8IsReadAsReplacementCharacters) {
  auto tok = make_hf_tokenizer(tiny_sentencepiece(), "sp.json");
  // The stray byte 0xFF reads as U+FFFD (EF BF BD), which falls back to its three bytes.
  const Ids want{262, 3 + 0xEF, 3 + 0xBF, 3 + 0xBD, 261};
  EXPECT_EQ(tok->encode("h\xFFi", false), want);
  EXPECT_EQ(tok->encode("h\xEF\xBF\xBDi", false), want);
}

TEST(Nfc, ComposesReordersAndHandlesHangul) {
  EXPECT_EQ(tok::to_nfc("cafe\xCC\x81"), "caf\xC3\xA9");                // e + U+0301 -> é
  EXPECT_EQ(tok::to_nfc("a\xCC\x81\xCC\xA3"), "\xE1\xBA\xA1\xCC\x81");  // a + acute + dot below
  EXPECT_EQ(tok::to_nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // jamo -> 각
  EXPECT_EQ(tok::to_nfc("\xE2\x84\xAB"), "\xC3\x85");  // Å (U+212B) -> Å
  EXPECT_EQ(tok::to_nfc("plain ascii"), "plain ascii");
}

// ---- malformed files ---------------------------------------------------------------------------

// load_tokenizer(path) must throw InputError with one line naming the file and `expect`.
void expect_input_error(const std::string& path, const std::string& expect) {
  try {
    load_tokenizer(path);
    ADD_FAILURE() << "no error for " << path << " (expected '" << expect << "')";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find(expect), std::string::npos)
        << "message: " << msg << "\nexpected: " << expect;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(HfTokenizer, MalformedFilesThrowInputErrorNamingTheFile) {
  TempDir dir;
  expect_input_error((dir.path() / "missing.json").string(), "no such file");
  expect_input_error(dir.write("notjson.json", "{\"model\": [1, 2,\n"), "invalid JSON");
  expect_input_error(dir.write("array.json", "[1, 2]"),
                     "(top level): expected an object, got an array");
  expect_input_error(dir.write("nomodel.json", "{}"), "model: missing");

  const auto with = [&](const std::string& name, const std::function<void(json&)>& edit) {
    json j = tiny_byte_level();
    edit(j);
    return dir.write(name, j.dump());
  };
  expect_input_error(with("wordpiece.json", [](json& j) { j["model"]["type"] = "WordPiece"; }),
                     "model.type: \"WordPiece\" is not supported (BPE)");
  expect_input_error(with("vocab.json", [](json& j) { j["model"]["vocab"] = json::array(); }),
                     "model.vocab: expected an object, got an array");
  expect_input_error(with("vocabid.json", [](json& j) { j["model"]["vocab"]["a"] = "x"; }),
                     "model.vocab.a: expected an integer in [0, 1048575], got a string \"x\"");
  expect_input_error(with("nomerges.json", [](json& j) { j["model"].erase("merges"); }),
                     "model.merges: missing");
  expect_input_error(with("merge.json", [](json& j) { j["model"]["merges"][1] = 7; }),
                     "model.merges[1]: expected a string \"a b\" or a pair");
  expect_input_error(with("mergeunk.json", [](json& j) { j["model"]["merges"][0] = "a zz"; }),
                     "model.merges[0]: names a token that is not in model.vocab (\"zz\")");
  expect_input_error(with("pretok.json",
                          [](json& j) {
                            j["pre_tokenizer"] = {{"type", "Whitespace"}};
                          }),
                     "pre_tokenizer.type: \"Whitespace\" is not supported");
  expect_input_error(with("norm.json",
                          [](json& j) {
                            j["normalizer"] = {{"type", "Lowercase"}};
                          }),
                     "normalizer.type: \"Lowercase\" is not supported");
  expect_input_error(with("dec.json",
                          [](json& j) {
                            j["decoder"] = {{"type", "WordPiece"}};
                          }),
                     "decoder.type: \"WordPiece\" is not supported");
  expect_input_error(with("post.json",
                          [](json& j) {
                            j["post_processor"] = {{"type", "Fancy"}};
                          }),
                     "post_processor.type: \"Fancy\" is not supported");
  expect_input_error(
      with("regex.json",
           [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(a"; }),
      "cannot compile regex");
  expect_input_error(with("added.json", [](json& j) { j["added_tokens"][0].erase("content"); }),
                     "added_tokens[0].content: missing");

  // A tokenizer_config.json beside the file is read too, and named in its errors.
  const fs::path sub = dir.path() / "withconfig";
  fs::create_directories(sub);
  const std::string tok_path = (sub / "tokenizer.json").string();
  std::ofstream(tok_path) << tiny_byte_level().dump();
  std::ofstream((sub / "tokenizer_config.json").string()) << json{{"bos_token", "<nope>"}}.dump();
  try {
    load_tokenizer(tok_path);
    ADD_FAILURE() << "no error for a bos_token that is not a token";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find((sub / "tokenizer_config.json").string() +
                                         ": bos_token \"<nope>\" is not a token"),
              std::string::npos)
        << e.what();
  }
}

// ---- llama2.c tokenizer ------------------------------------------------------------------------

const std::string kShared = KVB_SHARED_DIR;
const std::string kTok512 = kShared + "/models/stories260K/tok512.bin";
const std::string kCases = kShared + "/reference/stories260K/cases.json";
const std::string kWikiText = kShared + "/data/wikitext-2-raw/wiki.test.raw";

// llama2.c's tokenizer and its encode(), written from run.c's algorithm: BOS, a dummy-prefix " "
// token when the text is not empty, one token per UTF-8 code point (else its bytes + 3), then
// repeatedly merge the leftmost adjacent pair whose concatenation has the highest score.
struct Llama2cReference {
  std::vector<std::string> pieces;  // as stored: ' ' for spaces, "\n<s>\n" for BOS
  std::vector<float> scores;
  std::unordered_map<std::string, int> lookup;

  Llama2cReference(const std::string& path, int vocab_size) {
    std::ifstream in(path, std::ios::binary);
    int32_t max_len = 0;
    in.read(reinterpret_cast<char*>(&max_len), 4);
    for (int i = 0; i < vocab_size; ++i) {
      float score = 0;
      int32_t len = 0;
      in.read(reinterpret_cast<char*>(&score), 4);
      in.read(reinterpret_cast<char*>(&len), 4);
      std::string s(static_cast<size_t>(len), '\0');
      in.read(s.data(), len);
      scores.push_back(score);
      lookup.emplace(s, i);
      pieces.push_back(std::move(s));
    }
  }
  int find(const std::string& s) const {
    auto it = lookup.find(s);
    return it == lookup.end() ? -1 : it->second;
  }
  Ids encode(const std::string& text) const {
    Ids tokens{1};
    if (!text.empty()) tokens.push_back(find(" "));
    for (size_t i = 0; i < text.size();) {
      size_t j = i + 1;
      while (j < text.size() && (static_cast<uint8_t>(text[j]) & 0xC0) == 0x80 && j - i < 4) ++j;
      const std::string cp = text.substr(i, j - i);
      if (int id = find(cp); id >= 0) {
        tokens.push_back(id);
      } else {
        for (char c : cp) tokens.push_back(static_cast<uint8_t>(c) + 3);
      }
      i = j;
    }
    while (true) {
      float best_score = -1e10f;
      int best_id = -1;
      size_t best_idx = 0;
      for (size_t i = 0; i + 1 < tokens.size(); ++i) {
        const int id = find(pieces[tokens[i]] + pieces[tokens[i + 1]]);
        if (id != -1 && scores[id] > best_score) {
          best_score = scores[id];
          best_id = id;
          best_idx = i;
        }
      }
      if (best_id == -1) break;
      tokens[best_idx] = best_id;
      tokens.erase(tokens.begin() + static_cast<ptrdiff_t>(best_idx) + 1);
    }
    return tokens;
  }
};

bool have_shared() { return fs::exists(kTok512) && fs::exists(kCases) && fs::exists(kWikiText); }

TEST(Llama2cTokenizer, MatchesReferenceCases) {
  if (!have_shared())
    GTEST_SKIP() << "shared data not found under " << kShared << " (needs " << kTok512 << ", "
                 << kCases << ")";
  auto tok = make_hf_tokenizer(llama2c_tokenizer_to_hf(kTok512, 512), kTok512);
  const Llama2cReference ref(kTok512, 512);
  const json cases = json::parse(read_text(kCases))["cases"];
  ASSERT_FALSE(cases.empty());
  for (const json& c : cases) {
    const std::string prompt = c["prompt"].get<std::string>();
    const Ids input_ids = c["input_ids"].get<Ids>();
    const Ids encoded = tok->encode(prompt, true);
    EXPECT_EQ(encoded, ref.encode(prompt)) << "prompt: " << prompt;
    ASSERT_LE(encoded.size(), input_ids.size());
    EXPECT_EQ(encoded, Ids(input_ids.begin(), input_ids.begin() + encoded.size()))
        << "prompt: '" << prompt << "'";
    // run.c prints every token after BOS (dropping the first piece's leading space, which our
    // Strip decoder does too), then "\n". It also prints the token it sampled last but did not
    // feed, so the text may run one piece past input_ids.
    const std::string decoded = tok->decode(Ids(input_ids.begin() + 1, input_ids.end()), true);
    const std::string text = c["text"].get<std::string>();
    ASSERT_EQ(text.rfind(decoded, 0), 0u) << "decoded:\n" << decoded << "\ntext:\n" << text;
    const std::string rest = text.substr(decoded.size());
    ASSERT_FALSE(rest.empty());
    EXPECT_EQ(rest.back(), '\n');
    if (rest.size() > 1) {
      // The last, unfed token: one vocabulary piece.
      const Ids last = tok->encode(rest.substr(0, rest.size() - 1), false);
      EXPECT_LE(last.size(), 3u) << "unexpected tail '" << rest << "'";
    }
  }
  EXPECT_EQ(tok->encode("Once upon a time", true), (Ids{1, 403, 407, 261, 378}))
      << "encodes as cases.json's second case begins";
}

TEST(Llama2cTokenizer, MatchesLlama2cEncodeOnWikiText) {
  if (!have_shared())
    GTEST_SKIP() << "shared data not found under " << kShared << " (needs " << kTok512 << ", "
                 << kWikiText << ")";
  auto tok = make_hf_tokenizer(llama2c_tokenizer_to_hf(kTok512, 512), kTok512);
  const Llama2cReference ref(kTok512, 512);
  std::ifstream in(kWikiText, std::ios::binary);
  std::string line;
  int n = 0, mismatches = 0;
  for (; n < 300 && std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const Ids ours = tok->encode(line, true), theirs = ref.encode(line);
    if (ours != theirs && ++mismatches <= 5) {
      ADD_FAILURE() << "line " << n + 1 << ": " << line << "\n ours:     " << json(ours).dump()
                    << "\n llama2.c: " << json(theirs).dump();
    }
  }
  EXPECT_EQ(n, 300);
  EXPECT_EQ(mismatches, 0);
}

TEST(Llama2cTokenizer, WrittenFilesLoadBack) {
  if (!have_shared()) GTEST_SKIP() << "shared data not found: " << kTok512;
  TempDir dir;
  write_llama2c_tokenizer_files(llama2c_tokenizer_to_hf(kTok512, 512), dir.path().string());
  auto tok = load_tokenizer((dir.path() / "tokenizer.json").string());
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->id_to_token(3 + 0x0A), "<0x0A>");
  const std::string text = "Lily saw a big dog.\nIt was happy!";
  const Ids ids = tok->encode(text, true);
  EXPECT_EQ(ids, Llama2cReference(kTok512, 512).encode(text));
  EXPECT_EQ(tok->decode(ids, true), text);
}

TEST(Llama2cTokenizer, BadFilesThrowInputError) {
  TempDir dir;
  const std::string missing = (dir.path() / "nope.bin").string();
  EXPECT_THROW(llama2c_tokenizer_to_hf(missing, 512), InputError);
  const std::string tiny = dir.write("tiny.bin", std::string("\x07\x00\x00\x00", 4) + "garbage");
  try {
    llama2c_tokenizer_to_hf(tiny, 512);
    ADD_FAILURE() << "no error for a truncated file";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()).rfind(tiny + ": ", 0), 0u) << e.what();
  }
  if (fs::exists(kTok512)) {
    EXPECT_THROW(llama2c_tokenizer_to_hf(kTok512, 500), InputError);  // wrong vocab size
  }
}

}  // namespace
}  // namespace kvb
