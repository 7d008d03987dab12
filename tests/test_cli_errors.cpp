// Bad input through the real binary: one clear line naming the file and the problem, exit 2.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/json_io.h"
#include "harness/model/model.h"
#include "tests/test_util.h"

namespace kvb {
namespace {

namespace fs = std::filesystem;

ModelConfig small_config() {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 258;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.max_position = 64;
  c.tie_word_embeddings = true;
  return c;
}

void expect_one_line_error(const test::CmdResult& r, const std::string& must_contain,
                           const std::string& keyword) {
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(must_contain), std::string::npos) << "'" << must_contain << "' not in: " << r.err;
  EXPECT_NE(r.err.find(keyword), std::string::npos) << "'" << keyword << "' not in: " << r.err;
  EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
}

class CliErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = dir_.path("m");
    Model::random(small_config(), 1).save(model_);
  }
  test::CmdResult generate(const std::string& extra = "") {
    return test::run_kvbench("generate --model " + test::q(model_) + " --prompt hi --max-new-tokens 2 " + extra);
  }
  void write(const std::string& path, const std::string& bytes) { write_file(path, bytes); }
  test::TempDir dir_;
  std::string model_;
};

TEST_F(CliErrors, MissingDirectoryAndConfig) {
  auto r = test::run_kvbench("info --model " + test::q(dir_.path("nope")));
  expect_one_line_error(r, dir_.path("nope"), "not a model directory");
  fs::remove(model_ + "/config.json");
  expect_one_line_error(generate(), model_ + "/config.json", "missing");
}

TEST_F(CliErrors, BrokenConfigJson) {
  write(model_ + "/config.json", "{\"architectures\": [\"LlamaForCausalLM\"], ");
  expect_one_line_error(generate(), model_ + "/config.json", "invalid JSON");
  write(model_ + "/config.json", R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 258})");
  expect_one_line_error(generate(), model_ + "/config.json", "hidden_size");
  auto j = small_config().to_json();
  j["architectures"] = {"GPT2LMHeadModel"};
  write(model_ + "/config.json", j.dump());
  expect_one_line_error(generate(), model_ + "/config.json", "not supported");
  j = small_config().to_json();
  j["num_key_value_heads"] = 3;
  write(model_ + "/config.json", j.dump());
  expect_one_line_error(generate(), model_ + "/config.json", "not a multiple");
}

TEST_F(CliErrors, ShapeMismatchAgainstConfig) {
  auto j = small_config().to_json();
  j["intermediate_size"] = 96;
  write(model_ + "/config.json", j.dump());
  auto r = generate();
  expect_one_line_error(r, model_ + "/model.safetensors", "mlp.gate_proj.weight");
  EXPECT_NE(r.err.find("config.json"), std::string::npos) << r.err;
}

TEST_F(CliErrors, TruncatedAndCorruptSafetensors) {
  std::string st = model_ + "/model.safetensors";
  std::string bytes = test::slurp(st);
  write(st, bytes.substr(0, bytes.size() / 2));
  expect_one_line_error(generate(), st, "");
  write(st, bytes.substr(0, 5));
  expect_one_line_error(generate(), st, "");
  std::string big = bytes;
  big[0] = '\xff';
  big[1] = '\xff';
  big[2] = '\xff';
  write(st, big);
  expect_one_line_error(generate(), st, "header");
  fs::remove(st);
  expect_one_line_error(generate(), model_, "model.safetensors");
}

TEST_F(CliErrors, MissingAndBrokenTokenizer) {
  expect_one_line_error(generate(), model_ + "/tokenizer.json", "");
  write(model_ + "/tokenizer.json", "[1, 2");
  expect_one_line_error(generate(), model_ + "/tokenizer.json", "JSON");
  write(model_ + "/tokenizer.json", R"({"model": {"type": "WordPiece", "vocab": {}}})");
  expect_one_line_error(generate(), model_ + "/tokenizer.json", "WordPiece");
  auto r = test::run_kvbench("tokenize --tokenizer " + test::q(model_ + "/tokenizer.json") + " --text x");
  expect_one_line_error(r, model_ + "/tokenizer.json", "WordPiece");
}

TEST_F(CliErrors, BadLlama2cCheckpoint) {
  std::string ck = dir_.path("bad.bin");
  write(ck, std::string(10, '\0'));
  auto r = test::run_kvbench("import-llama2c --checkpoint " + test::q(ck) + " --tokenizer x --out " +
                             test::q(dir_.path("o")));
  expect_one_line_error(r, ck, "too short");
  int32_t hdr[7] = {64, 172, 5, 8, 4, 512, 512};
  std::string h(reinterpret_cast<const char*>(hdr), sizeof hdr);
  write(ck, h + std::string(1000, '\0'));
  r = test::run_kvbench("import-llama2c --checkpoint " + test::q(ck) + " --tokenizer x --out " +
                        test::q(dir_.path("o")));
  expect_one_line_error(r, ck, "does not match its header");
  EXPECT_FALSE(fs::exists(dir_.path("o")));
}

TEST_F(CliErrors, BadMethodSpecs) {
  for (const char* spec : {"kivi(bits=3x)", "nosuch()", "snapkv(budget=-1)", "full(dtype=fp16", "full(dtype=fp8)",
                           "full(foo=1)"}) {
    auto r = generate(std::string("--method ") + test::q(spec));
    expect_one_line_error(r, std::string("spec '") + spec + "'", "");
  }
}

// --completion-only prints what was generated, without the prompt (and the same tokens).
TEST_F(CliErrors, GenerateCompletionOnly) {
  const std::string base = "generate --model " + test::q(test::source_path("models/kvb-ref-s")) +
                           " --prompt 'The pass key is' --max-new-tokens 6";
  auto whole = test::run_kvbench(base), part = test::run_kvbench(base + " --completion-only");
  ASSERT_EQ(whole.code, 0) << whole.err;
  ASSERT_EQ(part.code, 0) << part.err;
  ASSERT_EQ(whole.out.substr(0, 15), "The pass key is");
  EXPECT_EQ(whole.out.substr(15), part.out);
  EXPECT_GT(part.out.size(), 1u);
}

// `kvbench mixture` writes a training-mixture prompt that stops where the answer starts; bad
// arguments get one line and exit 2.
TEST_F(CliErrors, MixtureDocument) {
  auto r = test::run_kvbench("mixture --task passkey --bytes 700 --depth 0.2 --seed 3");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string tail = "\n\nWhat is the pass key? The pass key is";
  ASSERT_GE(r.out.size(), tail.size());
  EXPECT_EQ(r.out.substr(r.out.size() - tail.size()), tail);
  const size_t at = r.out.find("The pass key is ");
  ASSERT_NE(at, std::string::npos);
  EXPECT_LT(static_cast<double>(at), 0.35 * 700) << "the key sits near the requested depth";
  auto whole = test::run_kvbench("mixture --task passkey --bytes 700 --depth 0.2 --seed 3 --whole");
  ASSERT_EQ(whole.code, 0);
  EXPECT_EQ(whole.out.size(), 700u);
  EXPECT_EQ(whole.out.substr(0, r.out.size()), r.out);
  EXPECT_EQ(whole.out.substr(r.out.size()), " " + r.out.substr(at + 16, 5) + ".");
  expect_one_line_error(test::run_kvbench("mixture --task keyvalue"), "--task", "unknown task 'keyvalue' (needle, passkey, kv, vars, prefix, copy)");
  expect_one_line_error(test::run_kvbench("mixture --depth 0.5"), "--depth", "needs --task");
  expect_one_line_error(test::run_kvbench("mixture --task kv --bytes 30"), "mixture", "too short");
}

}  // namespace
}  // namespace kvb
