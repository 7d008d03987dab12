// Perplexity in decode mode: the full cache against itself, chunking invariance, the window
// accounting, and quantized caches at 8 and 2 bits on stories260K (WikiText-2 and generated text).
#include <gtest/gtest.h>

#include <cmath>

#include "datasets/prose.h"
#include "datasets/text.h"
#include "common/check.h"
#include "harness/model/model.h"
#include "harness/tokenizer/tokenizer.h"
#include "methods/registry.h"
#include "suites/perplexity.h"
#include "tests/suite_test_util.h"

namespace kvb {
namespace {

struct Tiny {
  Model model = Model::random(test::tiny_suite_config(258), 3);
  std::unique_ptr<Tokenizer> tok = make_byte_tokenizer(258);
};

PerplexityResult run(const Model& m, const std::string& spec, const PerplexityText& t,
                     const PerplexityParams& p) {
  return run_perplexity(m, *make_method(spec), *make_method("full"), t, p);
}

TEST(SuitePerplexity, FullAgainstItselfHasZeroKlAndFullAgreement) {
  Tiny x;
  PerplexityParams p{96, 64, 8, 3};
  PerplexityText t = tokenize_for_perplexity(*x.tok, generate_prose(400, 5), p);
  PerplexityResult r = run(x.model, "full", t, p);
  EXPECT_EQ(r.kl_mean, 0.0);
  EXPECT_EQ(r.kl_p99, 0.0);
  EXPECT_EQ(r.kl_max, 0.0);
  EXPECT_EQ(r.top1_agreement, 1.0);
  EXPECT_EQ(r.ppl, r.ref_ppl);
  EXPECT_GT(r.ppl, 1.0);
  EXPECT_GT(r.ppl_se, 0.0);
  EXPECT_EQ(r.windows, 3);
  // Window 1 scores all 95 text tokens (BOS predicts the first); the next two score `stride` each.
  EXPECT_EQ(r.tokens, 95 + 64 + 64);
}

TEST(SuitePerplexity, ChunkOneAndChunk64GiveTheSamePerplexityForFull) {
  Tiny x;
  PerplexityParams p1{200, 0, 1, 2}, p64{200, 0, 64, 2};
  PerplexityText t = tokenize_for_perplexity(*x.tok, generate_prose(400, 6), p1);
  PerplexityResult a = run(x.model, "full", t, p1), b = run(x.model, "full", t, p64);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.tokens, 2 * 199);
  EXPECT_NEAR(a.ppl, b.ppl, 1e-6 * a.ppl) << a.ppl << " vs " << b.ppl;
  EXPECT_EQ(a.kl_mean, 0.0);
}

TEST(SuitePerplexity, EveryTokenIsScoredOnceOverAllWindows) {
  Tiny x;
  const std::string text = generate_prose(60, 7);
  for (int64_t stride : {40, 63}) {
    PerplexityParams p{64, stride, 16, 0};
    PerplexityText t = tokenize_for_perplexity(*x.tok, text, p);
    ASSERT_EQ(t.prefix.size(), 1u);  // BOS
    PerplexityResult r = run(x.model, "full", t, p);
    EXPECT_EQ(r.tokens, static_cast<int64_t>(t.ids.size())) << "stride " << stride;
  }
  // A stride longer than the window's text tokens would skip tokens: rejected.
  PerplexityParams bad{64, 64, 16, 0};
  PerplexityText t = tokenize_for_perplexity(*x.tok, text, bad);
  EXPECT_THROW(run(x.model, "full", t, bad), InputError);
}

TEST(SuitePerplexity, EvictionChangesTheDistributionsAndIsMeasuredAgainstFull) {
  Tiny x;
  PerplexityParams p{128, 0, 16, 1};
  PerplexityText t = tokenize_for_perplexity(*x.tok, generate_prose(200, 8), p);
  PerplexityResult r = run(x.model, "streaming(sink=4,window=16)", t, p);
  EXPECT_GT(r.kl_mean, 0.0);
  EXPECT_GT(r.kl_p99, 0.0);
  EXPECT_LE(r.kl_p99, r.kl_max);
  EXPECT_LT(r.top1_agreement, 1.0 + 1e-12);
  EXPECT_EQ(r.memory.tokens_seen, 128);
  EXPECT_LT(r.memory.slots, 2 * 2 * 128);  // fewer than layers x kv heads x tokens
}

// int(bits=8) barely moves the distribution; int(bits=2) moves it by orders of magnitude more.
void expect_quant_gap(const std::string& model_dir, const std::string& text,
                      const std::string& what) {
  Model m = Model::load(model_dir);
  auto tok = load_tokenizer(model_dir + "/tokenizer.json");
  PerplexityParams p{256, 0, 64, 2};
  PerplexityText t = tokenize_for_perplexity(*tok, text, p);
  PerplexityResult r8 = run(m, "int(bits=8)", t, p), r2 = run(m, "int(bits=2)", t, p);
  std::printf(
      "%s: int8 KL %.3g (p99 %.3g, top1 %.4f, ppl %.4f), int2 KL %.3g (p99 %.3g, top1 %.4f, ppl "
      "%.4f), "
      "full ppl %.4f\n",
      what.c_str(), r8.kl_mean, r8.kl_p99, r8.top1_agreement, r8.ppl, r2.kl_mean, r2.kl_p99,
      r2.top1_agreement, r2.ppl, r8.ref_ppl);
  EXPECT_LT(r8.kl_mean, 1e-3) << what;
  EXPECT_GT(r2.kl_mean, 100 * r8.kl_mean) << what;
  EXPECT_GT(r8.top1_agreement, 0.97) << what;
  EXPECT_LT(r2.top1_agreement, r8.top1_agreement) << what;
  EXPECT_NEAR(r8.ppl, r8.ref_ppl, 0.01 * r8.ref_ppl) << what;
}

TEST(SuitePerplexity, Int8SmallAndInt2LargeKlOnStories260KGeneratedText) {
  const std::string dir = test::stories260k_dir();
  if (dir.empty())
    GTEST_SKIP() << KVB_SHARED_DIR << "/models/stories260K missing: skipping the stories260K part";
  expect_quant_gap(dir, generate_prose(1500, 11), "generated prose");
}

TEST(SuitePerplexity, Int8SmallAndInt2LargeKlOnStories260KWikiText2) {
  const std::string dir = test::stories260k_dir();
  if (dir.empty() || !test::shared_has("data/wikitext-2-raw/wiki.test.raw"))
    GTEST_SKIP()
        << KVB_SHARED_DIR
        << " lacks models/stories260K or data/wikitext-2-raw: skipping the WikiText-2 part";
  std::string text = load_wikitext2(test::shared_path("data/wikitext-2-raw/wiki.test.raw"));
  EXPECT_EQ(text.find('\r'), std::string::npos);
  expect_quant_gap(dir, text, "WikiText-2");
}

}  // namespace
}  // namespace kvb
