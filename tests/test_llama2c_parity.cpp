// Parity with llama2.c's own run.c on stories260K: logits within 1e-4 max-abs and identical
// greedy text, for every case in ../shared/reference/stories260K/cases.json, through the CLI
// (import-llama2c, then generate --dump-logits) and through the library token by token.
#include <gtest/gtest.h>

#include <cstring>

#include <nlohmann/json.hpp>

#include "common/json_io.h"
#include "harness/model/model.h"
#include "methods/quant/full.h"
#include "tests/test_util.h"

namespace kvb {
namespace {

class Llama2cParity : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::shared_has("models/stories260K/stories260K.bin") ||
        !test::shared_has("reference/stories260K/cases.json"))
      return;
    dir_ = new test::TempDir();
    auto r = test::run_kvbench("import-llama2c --checkpoint " +
                               test::q(test::shared_path("models/stories260K/stories260K.bin")) +
                               " --tokenizer " + test::q(test::shared_path("models/stories260K/tok512.bin")) +
                               " --out " + test::q(dir_->path("stories260K")));
    import_code_ = r.code;
    import_err_ = r.err;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!dir_) GTEST_SKIP() << "../shared/models/stories260K or ../shared/reference/stories260K missing";
    ASSERT_EQ(import_code_, 0) << import_err_;
    cases_ = read_json_file(test::shared_path("reference/stories260K/cases.json"));
  }
  static std::vector<float> read_f32(const std::string& path) {
    std::string b = test::slurp(path);
    std::vector<float> v(b.size() / 4);
    std::memcpy(v.data(), b.data(), v.size() * 4);
    return v;
  }
  static std::string model_dir() { return dir_->path("stories260K"); }

  static test::TempDir* dir_;
  static int import_code_;
  static std::string import_err_;
  nlohmann::json cases_;
};
test::TempDir* Llama2cParity::dir_ = nullptr;
int Llama2cParity::import_code_ = -1;
std::string Llama2cParity::import_err_;

TEST_F(Llama2cParity, CliGreedyTextAndDumpedLogitsMatchRunC) {
  const int64_t vocab = cases_["vocab_size"].get<int64_t>();
  ASSERT_EQ(cases_["cases"].size(), 4u);
  for (size_t ci = 0; ci < cases_["cases"].size(); ++ci) {
    const auto& c = cases_["cases"][ci];
    const std::string prompt = c["prompt"].get<std::string>();
    const auto ids = c["input_ids"].get<std::vector<int64_t>>();
    const int64_t n_pos = c["n_positions"].get<int64_t>();
    std::string dump = dir_->path("case" + std::to_string(ci) + ".f32");
    // run.c feeds 200 positions (prompt included) and prints the token after the last one too.
    auto tok = test::run_kvbench("tokenize --tokenizer " + test::q(model_dir() + "/tokenizer.json") +
                                 " --text " + test::q(prompt));
    ASSERT_EQ(tok.code, 0) << tok.err;
    const auto prompt_ids = nlohmann::json::parse(tok.out).get<std::vector<int64_t>>();
    ASSERT_LE(prompt_ids.size(), ids.size());
    EXPECT_TRUE(std::equal(prompt_ids.begin(), prompt_ids.end(), ids.begin())) << "prompt ids differ: " << prompt;
    const int64_t max_new = 200 - static_cast<int64_t>(prompt_ids.size()) + 1;
    auto r = test::run_kvbench("generate --model " + test::q(model_dir()) + " --prompt " + test::q(prompt) +
                               " --max-new-tokens " + std::to_string(max_new) + " --json --dump-logits " +
                               test::q(dump));
    ASSERT_EQ(r.code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    // Fed positions: prompt + every generated token but the last (or all, when stopped at BOS).
    std::vector<int64_t> fed = j["prompt_tokens"].get<std::vector<int64_t>>();
    auto gen = j["tokens"].get<std::vector<int64_t>>();
    fed.insert(fed.end(), gen.begin(), gen.end() - (j["stopped"].get<bool>() ? 0 : 1));
    EXPECT_EQ(fed, ids) << "case " << ci;
    EXPECT_EQ(j["text"].get<std::string>() + "\n", c["text"].get<std::string>()) << "case " << ci;

    std::vector<float> got = read_f32(dump), want = read_f32(test::shared_path("reference/stories260K/" +
                                                                               c["logits_file"].get<std::string>()));
    ASSERT_EQ(static_cast<int64_t>(want.size()), n_pos * vocab);
    ASSERT_EQ(got.size(), want.size()) << "case " << ci;
    double max_err = 0;
    for (size_t i = 0; i < got.size(); ++i) max_err = std::max(max_err, std::abs(double(got[i]) - want[i]));
    EXPECT_LE(max_err, 1e-4) << "case " << ci;
    std::printf("case %zu: %lld positions, max |logit - run.c| = %.3g\n", ci, static_cast<long long>(n_pos), max_err);
  }
}

TEST_F(Llama2cParity, TokenByTokenDecodeMatchesRunC) {
  Model m = Model::load(model_dir());
  const int64_t vocab = cases_["vocab_size"].get<int64_t>();
  c10::InferenceMode guard;
  for (const auto& c : cases_["cases"]) {
    const auto ids = c["input_ids"].get<std::vector<int64_t>>();
    std::vector<float> want = read_f32(test::shared_path("reference/stories260K/" + c["logits_file"].get<std::string>()));
    FullMethod full;
    auto cache = full.make_state(m.shape());
    double max_err = 0;
    for (size_t t = 0; t < ids.size(); ++t) {
      torch::Tensor l = m.forward(torch::tensor({ids[t]}).view({1, 1}),
                                  torch::tensor({static_cast<int64_t>(t)}), *cache)[0][0];
      torch::Tensor w = torch::from_blob(want.data() + t * vocab, {vocab}, torch::kFloat32);
      max_err = std::max(max_err, (l - w).abs().max().item<double>());
    }
    EXPECT_LE(max_err, 1e-4);
  }
}

}  // namespace
}  // namespace kvb
