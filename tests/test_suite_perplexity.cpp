// Perplexity: the full cache against itself, chunking invariance, the window accounting, and
// quantized caches at 8 and 2 bits on stories260K (WikiText-2 and generated text); the paired
// statistics against a reference computed once, prefill mode, cells that are not applicable,
// memory at a full window, the llama.cpp-compatible scoring (stories260K on WikiText-2 against
// llama-perplexity's figure) and the top-k reference of large vocabularies.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>

#include "common/check.h"
#include "datasets/loader.h"
#include "datasets/prose.h"
#include "datasets/text.h"
#include "harness/model/model.h"
#include "harness/tokenizer/tokenizer.h"
#include "methods/registry.h"
#include "suites/perplexity.h"
#include "suites/suite.h"
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

// The perplexity suite's prepared run over `text` (what `kvbench run` does per model, run and
// dataset), with its canonical params.
struct SuiteRun {
  Dataset data;
  nlohmann::json params;
  std::unique_ptr<PreparedRun> run;
  SuiteRun(const Model& m, const Tokenizer& tok, const std::string& text,
           const nlohmann::json& raw) {
    data.type = "text";
    data.is_text = true;
    data.text = text;
    const Suite& s = perplexity_suite();
    params = s.canonical_params(raw, "$.runs[0].params");
    run = s.prepare({m, tok, data, params, "$.runs[0].params", 1});
  }
  CellResult cell(const std::string& spec) const { return run->run_cell(*make_method(spec), {}); }
};

TEST(SuitePerplexity, PairedStatisticsFollowTheirDefinitions) {
  Tiny x;
  PerplexityParams p{128, 0, 16, 3};
  PerplexityText t = tokenize_for_perplexity(*x.tok, generate_prose(600, 21), p);
  PerplexityResult r = run(x.model, "streaming(sink=2,window=24)", t, p);
  const double n = static_cast<double>(r.tokens);
  // ln(PPL_m / PPL_f) is the mean paired difference exactly (token-level normalisation).
  EXPECT_NEAR(r.delta_nll, r.nll - r.ref_nll, 1e-12);
  EXPECT_NEAR(r.delta_nll, std::log(r.ppl / r.ref_ppl), 1e-12);
  EXPECT_EQ(r.metrics_json()["ln_ppl_ratio"], r.delta_nll);
  EXPECT_EQ(r.metrics_json()["ln_ppl_ratio_se"], r.delta_nll_se);
  // The paired SE is far below what two independent SEs would give.
  EXPECT_GT(r.delta_nll_se, 0.0);
  EXPECT_LT(r.delta_nll_se, 0.5 * std::hypot(r.nll_se, r.nll_se));
  // KL: a distribution with its percentiles in order, its SE, top-1 agreement's binomial SE.
  EXPECT_GT(r.kl_mean, 0.0);
  EXPECT_GT(r.kl_se, 0.0);
  EXPECT_LE(r.kl_median, r.kl_p90);
  EXPECT_LE(r.kl_p90, r.kl_p99);
  EXPECT_LE(r.kl_p99, r.kl_p999);
  EXPECT_LE(r.kl_p999, r.kl_max);
  EXPECT_LE(r.kl_mean, r.kl_max);
  EXPECT_NEAR(r.top1_se, std::sqrt(r.top1_agreement * (1 - r.top1_agreement) / n), 1e-15);
  EXPECT_TRUE(std::isfinite(r.dp_mean));
  EXPECT_GE(r.dp_se, 0.0);
  EXPECT_FALSE(r.identical);
  // Every key older databases hold is still there.
  const nlohmann::json m = r.metrics_json();
  for (const char* k : {"ppl",
                        "ppl_se",
                        "nll",
                        "nll_se",
                        "ref_ppl",
                        "ref_nll",
                        "kl_mean",
                        "kl_p99",
                        "kl_max",
                        "top1_agreement",
                        "tokens",
                        "windows",
                        "memory",
                        "seconds",
                        "tokens_per_second",
                        "delta_nll",
                        "delta_nll_se",
                        "kl_mean_se",
                        "kl_median",
                        "kl_p90",
                        "kl_p999",
                        "top1_agreement_se",
                        "dp_mean",
                        "dp_mean_se"})
    EXPECT_TRUE(m.contains(k)) << k;
}

TEST(SuitePerplexity, ReferenceIsComputedOnceAndReusedByEveryCell) {
  Tiny x;
  SuiteRun s(x.model, *x.tok, generate_prose(500, 22),
             {{"ctx", 96}, {"chunk", 8}, {"max_windows", 2}});
  const CellResult a = s.cell("streaming(sink=2,window=16)");
  const CellResult full = s.cell("full");
  const CellResult b = s.cell("int(bits=2)");
  // One reference pass: the same time recorded by every cell; the full cell is that pass.
  ASSERT_TRUE(a.protocol.contains("reference_seconds"));
  EXPECT_EQ(a.protocol["reference_seconds"], full.protocol["reference_seconds"]);
  EXPECT_EQ(a.protocol["reference_seconds"], b.protocol["reference_seconds"]);
  EXPECT_EQ(full.metrics["seconds"], full.protocol["reference_seconds"]);
  EXPECT_EQ(full.metrics["reference"], true);
  EXPECT_EQ(full.metrics["kl_mean"], 0.0);
  EXPECT_EQ(a.metrics["ref_nll"], full.metrics["nll"]);
  EXPECT_EQ(b.metrics["ref_nll"], full.metrics["nll"]);
  // A method's tokens per second count its own pass only.
  for (const CellResult* c : {&a, &b})
    EXPECT_DOUBLE_EQ(c->metrics["tokens_per_second"].get<double>(),
                     c->metrics["tokens"].get<double>() / c->metrics["seconds"].get<double>());
  // The numbers are those of a run with its own reference.
  const PerplexityParams p = parse_perplexity_params(s.params);
  const PerplexityResult direct =
      run(x.model, "int(bits=2)", tokenize_for_perplexity(*x.tok, s.data.text, p), p);
  EXPECT_EQ(b.metrics["kl_mean"], direct.kl_mean);
  EXPECT_EQ(b.metrics["delta_nll"], direct.delta_nll);
  // Nothing is computed for a cell that needs no reference (below: never read back).
  SuiteRun one(x.model, *x.tok, generate_prose(500, 22),
               {{"ctx", 96}, {"chunk", 96}, {"max_windows", 2}});
  EXPECT_FALSE(one.cell("int(bits=8)").protocol.contains("reference_seconds"));
}

TEST(SuitePerplexity, PrefillModeScoresTheTokensAfterThePrompt) {
  Tiny x;
  const PerplexityParams p = parse_perplexity_params(perplexity_suite().canonical_params(
      {{"ctx", 96}, {"chunk", 16}, {"max_windows", 3}, {"mode", "prefill"}}, "$"));
  EXPECT_EQ(p.prefix, 48);  // ctx / 2 by default
  PerplexityText t = tokenize_for_perplexity(*x.tok, generate_prose(600, 23), p);
  const PerplexityPlan plan = plan_perplexity(t, p);
  ASSERT_EQ(plan.windows.size(), 3u);
  for (const auto& w : plan.windows) {
    EXPECT_EQ(w.prompt, 48);
    ASSERT_EQ(w.rows.size(), 96u - 48 - 1);  // rows 48..94 predict tokens 49..95
    EXPECT_EQ(w.rows.front(), 48);
    EXPECT_EQ(w.rows.back(), 94);
  }
  EXPECT_TRUE(plan.reads_back);
  PerplexityResult full = run(x.model, "full", t, p);
  EXPECT_EQ(full.tokens, 3 * 47);
  EXPECT_EQ(full.kl_mean, 0.0);
  EXPECT_EQ(full.ppl, full.ref_ppl);
  PerplexityResult ev = run(x.model, "streaming(sink=2,window=16)", t, p);
  EXPECT_GT(ev.kl_mean, 0.0);
  EXPECT_EQ(ev.memory.tokens_seen, 96);  // every window is fed to its end
  // The prompt's chunking does not change the full cache's numbers.
  PerplexityParams one = p;
  one.chunk = 48;
  EXPECT_NEAR(run(x.model, "full", t, one).ppl, full.ppl, 1e-9 * full.ppl);
  // Parameters: prefix only in prefill mode, within the window.
  const Suite& s = perplexity_suite();
  for (const auto& [bad, msg] : std::vector<std::pair<nlohmann::json, std::string>>{
           {{{"ctx", 96}, {"prefix", 10}}, "$.prefix: only with \"mode\": \"prefill\""},
           {{{"ctx", 96}, {"mode", "prefill"}, {"prefix", 95}}, "$.prefix: 95 must be between 1"},
           {{{"ctx", 96}, {"scoring", "llama.cpp"}, {"stride", 10}},
            "$.stride: must be 0 with \"scoring\": \"llama.cpp\""},
           {{{"ctx", 96}, {"scoring", "llama.cpp"}, {"mode", "prefill"}},
            "$.mode: \"scoring\": \"llama.cpp\" scores decode-mode chunks only"}}) {
    try {
      s.canonical_params(bad, "$");
      ADD_FAILURE() << bad.dump();
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(msg), std::string::npos) << e.what();
    }
  }
  // Defaults stay out of the canonical params (cells recorded before the options keep their key).
  EXPECT_EQ(s.canonical_params({{"ctx", 96}, {"mode", "decode"}, {"scoring", "kvbench"}}, "$"),
            nlohmann::json({{"ctx", 96}, {"stride", 0}, {"chunk", 1}, {"max_windows", 0}}));
  EXPECT_EQ(s.canonical_params({{"ctx", 96}, {"mode", "prefill"}}, "$")["prefix"], 48);
}

// SnapKV compresses at end_prefill(): in prefill mode it measures something and holds what it
// promised (within 1%). Depends on the methods half (SnapKV's promise); see the report.
TEST(SuitePerplexity, PrefillModeSnapKvCompressesAndKeepsItsPromise) {
  Tiny x;
  SuiteRun s(
      x.model, *x.tok, generate_prose(600, 24),
      {{"ctx", 128}, {"chunk", 32}, {"max_windows", 2}, {"mode", "prefill"}, {"prefix", 96}});
  const std::string spec = "snapkv(budget=24,window=8)";
  const CellResult c = s.cell(spec);
  ASSERT_FALSE(not_applicable_reason(c.metrics)) << c.metrics.dump();
  EXPECT_GT(c.metrics["kl_mean"].get<double>(), 0.0);
  EXPECT_EQ(c.protocol["mode"], "prefill");
  EXPECT_EQ(c.protocol["prefix"], 96);
  const auto& mu = c.metrics["memory"];
  const auto promise =
      make_method(spec)->promised_memory(x.model.shape(), mu["tokens_seen"].get<int64_t>(),
                                         torch::kFloat32, mu["prompt_tokens"].get<int64_t>());
  ASSERT_TRUE(promise.has_value());
  const double held = mu["payload_bytes"].get<double>() + mu["metadata_bytes"].get<double>();
  EXPECT_LE(held, 1.01 * static_cast<double>(promise->payload_bytes + promise->metadata_bytes))
      << mu.dump();
}

TEST(SuitePerplexity, DecodeModeSnapKvIsNotApplicable) {
  Tiny x;
  SuiteRun s(x.model, *x.tok, generate_prose(500, 25),
             {{"ctx", 96}, {"chunk", 1}, {"max_windows", 2}});
  const CellResult c = s.cell("snapkv(budget=24,window=8)");
  const auto why = not_applicable_reason(c.metrics);
  ASSERT_TRUE(why.has_value()) << c.metrics.dump();
  // Nothing that reads as fidelity: no KL 0, no 100% top-1.
  for (const char* k : {"kl_mean", "kl_p99", "top1_agreement", "delta_nll"})
    EXPECT_FALSE(c.metrics.contains(k)) << k;
  EXPECT_EQ(cell_summary(perplexity_suite(), c.metrics), "n/a (" + *why + ")");
  // A method that does compress in decode mode is applicable on the same run.
  EXPECT_FALSE(not_applicable_reason(s.cell("streaming(sink=2,window=16)").metrics));
}

// chunk = ctx: a window never reads its own cache back, so a storage method's cache is never
// read: not applicable (not lossless). The reference itself is the reference.
TEST(SuitePerplexity, StoreNeverReadBackIsNotApplicable) {
  Tiny x;
  SuiteRun s(x.model, *x.tok, generate_prose(500, 26),
             {{"ctx", 96}, {"chunk", 96}, {"max_windows", 2}});
  for (const char* spec : {"int(bits=8)", "int(bits=4)", "kivi(bits=2)"}) {
    const CellResult c = s.cell(spec);
    const auto why = not_applicable_reason(c.metrics);
    ASSERT_TRUE(why.has_value()) << spec;
    EXPECT_NE(why->find("reads its cache back"), std::string::npos) << *why;
    EXPECT_FALSE(c.metrics.contains("kl_mean")) << spec;
  }
  const CellResult full = s.cell("full");
  EXPECT_FALSE(not_applicable_reason(full.metrics));
  EXPECT_EQ(full.metrics["reference"], true);
  // With chunks smaller than the window the same store is read and measured.
  SuiteRun read(x.model, *x.tok, generate_prose(500, 26),
                {{"ctx", 96}, {"chunk", 16}, {"max_windows", 2}});
  const CellResult c = read.cell("int(bits=4)");
  EXPECT_FALSE(not_applicable_reason(c.metrics));
  EXPECT_GT(c.metrics["kl_mean"].get<double>(), 0.0);
}

// Bits per token after a full window, averaged over full windows: a text half a window longer
// (whose last window is half full) gives the same figure.
TEST(SuitePerplexity, BitsPerTokenAreMeasuredAtAFullWindow) {
  Tiny x;
  PerplexityParams p{256, 0, 32, 0};
  PerplexityText all = tokenize_for_perplexity(*x.tok, generate_prose(2000, 27), p);
  const size_t L = 255;  // text tokens per window (BOS first)
  ASSERT_GE(all.ids.size(), 3 * L);
  PerplexityText a = all, b = all;
  a.ids.resize(2 * L);
  b.ids.resize(2 * L + L / 2);
  auto bits = [](const PerplexityResult& r) {
    return 8.0 * static_cast<double>(r.memory.payload_bytes + r.memory.metadata_bytes) /
           static_cast<double>(r.memory.tokens_seen);
  };
  const PerplexityResult ra = run(x.model, "kivi(bits=2)", a, p);
  const PerplexityResult rb = run(x.model, "kivi(bits=2)", b, p);
  EXPECT_EQ(ra.windows, 2);
  EXPECT_EQ(rb.windows, 3);
  EXPECT_EQ(ra.memory_measured_at, "full_window_mean");
  EXPECT_EQ(rb.memory_measured_at, "full_window_mean");
  EXPECT_EQ(rb.memory_windows, 2);
  EXPECT_EQ(ra.memory.tokens_seen, 256);
  EXPECT_EQ(rb.memory.tokens_seen, 256);
  std::printf("kivi(bits=2) bits/token: %.3f (2 windows) vs %.3f (2.5 windows)\n", bits(ra),
              bits(rb));
  EXPECT_NEAR(bits(ra), bits(rb), 0.01 * bits(ra));
  // Text shorter than a window: the last (only) window, and the record says so.
  PerplexityText c = all;
  c.ids.resize(L / 2);
  const PerplexityResult rc = run(x.model, "kivi(bits=2)", c, p);
  EXPECT_EQ(rc.memory_measured_at, "last_window");
  EXPECT_EQ(rc.memory.tokens_seen, static_cast<int64_t>(L / 2 + 1));
}

TEST(SuitePerplexity, LlamaCppScoringPlansWhatLlamaPerplexityScores) {
  Tiny x;
  PerplexityParams p =
      parse_perplexity_params({{"ctx", 64}, {"chunk", 64}, {"scoring", "llama.cpp"}});
  const std::string text = generate_prose(200, 28);
  PerplexityText t = tokenize_for_perplexity(*x.tok, text, p);
  ASSERT_EQ(t.prefix.size(), 1u);
  std::vector<int64_t> all(t.prefix);
  all.insert(all.end(), t.ids.begin(), t.ids.end());
  const PerplexityPlan plan = plan_perplexity(t, p);
  ASSERT_EQ(plan.windows.size(), all.size() / 64);  // floor(tokens / ctx) chunks
  for (size_t c = 0; c < plan.windows.size(); ++c) {
    const auto& w = plan.windows[c];
    ASSERT_EQ(w.input.size(), 64u);
    EXPECT_EQ(w.input[0], t.prefix[0]);  // BOS replaces the chunk's first token
    for (size_t j = 1; j < 64; ++j) EXPECT_EQ(w.input[j], all[c * 64 + j]);
    ASSERT_EQ(w.rows.size(), 64u - 1 - 32);  // rows ctx/2 .. ctx-2
    EXPECT_EQ(w.rows.front(), 32);
    EXPECT_EQ(w.rows.back(), 62);
    EXPECT_EQ(w.prompt, 0);
  }
  p.max_windows = 2;
  EXPECT_EQ(plan_perplexity(tokenize_for_perplexity(*x.tok, text, p), p).windows.size(), 2u);
  // Through the suite: scored tokens per chunk, the scoring in the protocol; chunk = ctx never
  // reads a cache back, so a storage method is not applicable there.
  SuiteRun s(x.model, *x.tok, text,
             {{"ctx", 64}, {"chunk", 64}, {"max_windows", 2}, {"scoring", "llama.cpp"}});
  const CellResult full = s.cell("full");
  EXPECT_EQ(full.metrics["tokens"], 2 * 31);
  EXPECT_EQ(full.protocol["scoring"], "llama.cpp");
  EXPECT_TRUE(not_applicable_reason(s.cell("int(bits=8)").metrics).has_value());
}

// llama-perplexity on stories260K, WikiText-2 test (LF line endings), ctx 512, the first 50
// chunks, f32: 125.95.
TEST(SuitePerplexity, LlamaCppScoringGivesLlamaPerplexitysFigureOnStories260K) {
  const std::string dir = test::stories260k_dir();
  if (dir.empty() || !test::shared_has("data/wikitext-2-raw/wiki.test.raw"))
    GTEST_SKIP() << KVB_SHARED_DIR << " lacks models/stories260K or data/wikitext-2-raw";
  const auto t0 = std::chrono::steady_clock::now();
  Model m = Model::load(dir);
  auto tok = load_tokenizer(dir + "/tokenizer.json");
  const std::string text = load_wikitext2(test::shared_path("data/wikitext-2-raw/wiki.test.raw"));
  ASSERT_EQ(text.find('\r'), std::string::npos);
  PerplexityParams p = parse_perplexity_params(
      {{"ctx", 512}, {"chunk", 512}, {"max_windows", 50}, {"scoring", "llama.cpp"}});
  PerplexityText t = tokenize_for_perplexity(*tok, text, p);
  const PerplexityPlan plan = plan_perplexity(t, p);
  ASSERT_EQ(plan.windows.size(), 50u);
  const PerplexityReference ref = compute_perplexity_reference(m, *make_method("full"), plan);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(ref.self.tokens, 50 * 255);
  std::printf(
      "stories260K, WikiText-2, ctx 512, 50 chunks, llama.cpp scoring: ppl %.4f ± %.4f "
      "(%.1f s)\n",
      ref.self.ppl, ref.self.ppl_se, secs);
  EXPECT_NEAR(ref.self.ppl, 125.95, 0.001 * 125.95);
  // kvbench's own scoring on the same text and ctx, for the record (every token after BOS).
  PerplexityParams k = parse_perplexity_params({{"ctx", 512}, {"chunk", 512}, {"max_windows", 50}});
  const PerplexityPlan kp = plan_perplexity(tokenize_for_perplexity(*tok, text, k), k);
  const PerplexityReference kr = compute_perplexity_reference(m, *make_method("full"), kp);
  std::printf("the same, kvbench scoring (50 windows of 511 text tokens): ppl %.4f ± %.4f\n",
              kr.self.ppl, kr.self.ppl_se);
  EXPECT_GT(kr.self.ppl, ref.self.ppl);  // it also scores the hard first tokens of each window
}

// A large vocabulary keeps the reference's top-k log-probs and the rest's mass: KL over those
// k + 1 buckets is a lower bound of the exact KL, close to it; everything else is exact.
TEST(SuitePerplexity, TopKReferenceGivesALowerBoundOfTheKl) {
  Tiny x;
  PerplexityParams p{128, 0, 16, 2};
  PerplexityText t = tokenize_for_perplexity(*x.tok, generate_prose(500, 29), p);
  const PerplexityPlan plan = plan_perplexity(t, p);
  auto full = make_method("full");
  const PerplexityReference exact = compute_perplexity_reference(x.model, *full, plan);
  const PerplexityReference top =
      compute_perplexity_reference(x.model, *full, plan, {}, {.full_vocab_max = 100, .top_k = 64});
  EXPECT_TRUE(exact.full_vocab());
  ASSERT_FALSE(top.full_vocab());
  EXPECT_EQ(top.logprobs.size(1), 64);
  auto m = make_method("streaming(sink=2,window=16)");
  const PerplexityResult a = run_perplexity_pass(x.model, *m, exact, plan);
  const PerplexityResult b = run_perplexity_pass(x.model, *m, top, plan);
  EXPECT_GT(b.kl_mean, 0.0);
  EXPECT_LE(b.kl_mean, a.kl_mean * (1 + 1e-9));
  std::printf("KL exact %.6g, top-64 + tail %.6g\n", a.kl_mean, b.kl_mean);
  EXPECT_EQ(a.nll, b.nll);
  EXPECT_EQ(a.delta_nll, b.delta_nll);
  EXPECT_EQ(a.top1_agreement, b.top1_agreement);
  EXPECT_EQ(a.dp_mean, b.dp_mean);
}

}  // namespace
}  // namespace kvb
