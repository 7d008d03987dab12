// The committed reference model (models/kvb-ref-s) retrieves, and KV-cache compression behaves
// on it as the literature says: 4-bit KIVI keeps retrieval within 5 points; StreamingLLM with a
// window of 1/8 of the context loses every needle outside its window and finds most of those
// inside; SnapKV with the question in its observation window keeps far needles at the same 1/8
// budget where StreamingLLM loses all of them (most of them on this model: see the figures in
// the assertions).
// Everything runs through the NIAH suite's own code (grid, prompts, greedy answers, scoring) on
// held-out generated haystacks (a seed the trainer never draws).
#include <gtest/gtest.h>

#include <filesystem>

#include "datasets/needle.h"
#include "datasets/prose.h"
#include "harness/model/model.h"
#include "harness/tokenizer/tokenizer.h"
#include "methods/registry.h"
#include "suites/niah.h"
#include "tests/test_util.h"

namespace kvb {
namespace {
namespace fs = std::filesystem;

constexpr int64_t kCtx = 2048;              // the model's context (BOS + 2047 bytes)
constexpr int64_t kWindow = kCtx / 8 - 4;   // StreamingLLM: 4 sinks + 252 recent = 256 slots
constexpr uint64_t kSeed = 6020261123ULL;   // grid seed (prompts differ from every training seed)

struct Ref {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
};

// Loaded once per process (ctest runs each test in a process of its own).
const Ref* ref() {
  static const Ref* r = [] {
    const std::string dir = test::source_path("models/kvb-ref-s");
    if (!fs::exists(fs::path(dir) / "model.safetensors")) return static_cast<Ref*>(nullptr);
    auto* x = new Ref;
    x->model = std::make_unique<Model>(Model::load(dir));
    x->tok = load_tokenizer(dir + "/tokenizer.json");
    return x;
  }();
  return r;
}

NiahParams grid_params(std::vector<double> depths, int64_t samples) {
  NiahParams p;
  p.context_lengths = {kCtx};
  p.depths = std::move(depths);
  p.spacing = "list";
  p.samples_per_cell = samples;
  p.max_new_tokens = 10;
  return p;
}

std::vector<NiahPoint> grid(const NiahParams& p) {
  const Haystack hay = make_haystack(*ref()->tok, generate_prose(12000, kSeed));
  return build_niah_grid(*ref()->tok, hay, p, kSeed);
}

nlohmann::json run(const std::string& spec, const std::vector<NiahPoint>& g, const NiahParams& p) {
  return run_niah(*ref()->model, *ref()->tok, *make_method(spec), g, p);
}

// Where a sample's needle sits relative to a window of `window` recent tokens when the first
// answer token is produced: +1 entirely inside, -1 entirely before it, 0 straddling.
int side(const nlohmann::json& s, const NiahPoint& pt, int64_t window) {
  const int64_t prompt = s["prompt_tokens"].get<int64_t>();
  const int64_t begin = s["needles"][0]["token_pos"].get<int64_t>();
  const int64_t end = begin + static_cast<int64_t>(
                                  ref()->tok->encode(" " + pt.sample.needles[0].text, false).size());
  if (begin >= prompt - window) return 1;
  if (end <= prompt - window) return -1;
  return 0;
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

#define NEED_REF_MODEL()                                                                    \
  if (ref() == nullptr) GTEST_SKIP() << "models/kvb-ref-s/model.safetensors not committed"

TEST(RefModel, FullCacheRetrievesAndKiviFourStaysWithinFivePoints) {
  NEED_REF_MODEL();
  const NiahParams p = grid_params(grid_depths(10, "linear"), 4);
  const auto g = grid(p);
  const nlohmann::json full = run("full", g, p), kivi = run("kivi(bits=4)", g, p);
  const double f = full["score"], k4 = kivi["score"];
  std::printf("needle at %lld tokens, %zu prompts: full %.3f, kivi4 %.3f\n",
              static_cast<long long>(kCtx), g.size(), f, k4);
  // The comparison means something only if the full cache retrieves (measured on recipe v16,
  // each sample with its own haystack window: full 0.975, KIVI-4 0.950; when every sample's
  // haystack began at sentence 0: 0.950 and 0.925).
  EXPECT_GE(f, 0.8) << "kvb-ref-s with the full cache should find the needle";
  EXPECT_GE(k4, f - 0.05) << "KIVI-4 keeps retrieval within 5 points of the full cache";
  // KIVI-4 really compresses: its cache holds well under a third of full fp32's bytes.
  EXPECT_LT(kivi["max_memory_bytes"].get<double>(), full["max_memory_bytes"].get<double>() / 3);
}

TEST(RefModel, StreamingEighthWindowLosesNeedlesOutsideAndKeepsMostOfThoseInside) {
  NEED_REF_MODEL();
  const NiahParams p = grid_params({0.0, 0.2, 0.4, 0.6, 0.8, 0.97, 1.0}, 4);
  const auto g = grid(p);
  const std::string streaming =
      "streaming(sink=4,window=" + std::to_string(kWindow) + ")";
  const nlohmann::json full = run("full", g, p), st = run(streaming, g, p);
  std::vector<double> full_in, full_out, st_in, st_out;
  for (size_t i = 0; i < g.size(); ++i) {
    const nlohmann::json& s = st["samples"][i];
    const int where = side(s, g[i], kWindow);
    const double fs_ = full["samples"][i]["score"], ss = s["score"];
    if (where > 0) full_in.push_back(fs_), st_in.push_back(ss);
    if (where < 0) full_out.push_back(fs_), st_out.push_back(ss);
  }
  std::printf("%s: inside the window %zu prompts, full %.3f streaming %.3f; outside %zu prompts, "
              "full %.3f streaming %.3f\n", streaming.c_str(), st_in.size(), mean(full_in),
              mean(st_in), st_out.size(), mean(full_out), mean(st_out));
  ASSERT_GE(st_in.size(), 6u) << "the grid puts needles inside the window";
  ASSERT_GE(st_out.size(), 18u) << "and outside it";
  // Measured on recipe v16: full 0.95 outside / 1.0 inside; streaming 0.0 outside / 1.0 inside
  // (20 and 8 prompts).
  // The model was never trained on a truncated cache; an earlier recipe (v4) found 5 of 8 inside,
  // missing a later digit once the rest of the context was gone, so the bar stays at 0.5.
  EXPECT_GE(mean(full_out), 0.8) << "the full cache finds the far needles";
  EXPECT_LE(mean(st_out), 0.05) << "evicted needles cannot be answered";
  EXPECT_GE(mean(st_in), 0.5) << "needles inside the window are kept and mostly found";
  EXPECT_GE(mean(st_in), mean(st_out) + 0.4);
  EXPECT_LE(st["memory"]["slots"].get<int64_t>(), 12 * (kWindow + 4));  // 3 layers x 2 KV heads x K,V
}

TEST(RefModel, SnapKvWithTheQuestionObservedKeepsTheNeedleWhereStreamingLosesIt) {
  NEED_REF_MODEL();
  // Needles far outside a 1/8-context recent window; the same 256-slot budget for both.
  const NiahParams p = grid_params({0.0, 0.25, 0.5, 0.75}, 5);
  const auto g = grid(p);
  const nlohmann::json st = run("streaming(sink=4,window=" + std::to_string(kWindow) + ")", g, p),
                       snap = run("snapkv(budget=" + std::to_string(kCtx / 8) + ",window=32)", g, p);
  std::vector<double> st_far, snap_far;
  for (size_t i = 0; i < g.size(); ++i) {
    if (side(st["samples"][i], g[i], kWindow) >= 0) continue;
    st_far.push_back(st["samples"][i]["score"]);
    snap_far.push_back(snap["samples"][i]["score"]);
  }
  std::printf("budget %lld: %zu far needles, streaming %.3f, snapkv %.3f\n",
              static_cast<long long>(kCtx / 8), st_far.size(), mean(st_far), mean(snap_far));
  ASSERT_GE(st_far.size(), 18u);
  EXPECT_LE(mean(st_far), 0.05);
  // Measured on recipe v16: streaming 0.0, snapkv 0.9 on these 20 far needles (v10: 0.8).
  EXPECT_GE(mean(snap_far), 0.3) << "the question's attention keeps the needle";
  // Same budget: SnapKV holds no more tokens than StreamingLLM does.
  EXPECT_LE(snap["memory"]["payload_bytes"].get<int64_t>(),
            st["memory"]["payload_bytes"].get<int64_t>() * 11 / 10);
}

}  // namespace
}  // namespace kvb
