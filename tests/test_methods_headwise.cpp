// Head-wise (ragged) selectors: DuoAttention and RazorAttention (methods/evict/headwise.h).
// Each head keeps exactly what its role says (retrieval: everything; streaming: sink + recent,
// plus RazorAttention's compensation token, the mean of what it dropped), memory() is the sum of
// what the heads hold, promises are exact with full/int storage and bounds with KIVI, and the
// calibration artifact is written, reused, keyed by model and spec, and named by a run's record.
#include <gtest/gtest.h>

#include <sqlite3.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "common/check.h"
#include "common/hash.h"
#include "common/json_io.h"
#include "harness/engine/calibration.h"
#include "harness/model/model.h"
#include "methods/head_split_store.h"
#include "methods/registry.h"
#include "tests/methods_test_util.h"
#include "tests/suite_test_util.h"

namespace kvb {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// 2 layers x 2 KV heads of dim 16; roles=rs: (layer 0, head 0) and (1, 0) retrieval, the
// others streaming.
const ModelShape kShape = test::method_shape(2, 4, 2, 16);

std::set<int64_t> range(int64_t a, int64_t b) {
  std::set<int64_t> s;
  for (int64_t i = a; i < b; ++i) s.insert(i);
  return s;
}

// The stored positions of head h in layer l (no padding, no compensation slot).
std::set<int64_t> stored_positions(const KVCacheState& st, int l, int64_t h) {
  std::set<int64_t> s = test::held_positions(st, l, h);
  s.erase(-1);
  s.erase(kCompensationPos);
  return s;
}

// 30 tokens in one chunk (a keep with keep_len), then 20 decoded (drop_one, -1 in retrieval heads).
void feed_prompt_and_decode(KVCacheState& st, test::SyntheticStream& in) {
  in.feed(st, 30);
  for (int i = 0; i < 20; ++i) in.feed(st, 1);
}

TEST(MethodHeadwise, DuoKeepsEverythingInRetrievalHeadsAndSinkPlusRecentInStreamingHeads) {
  auto m = make_method("duoattention(sink=3,recent=10,roles=rs)");
  auto st = m->make_state(kShape);
  test::SyntheticStream in(kShape, 3);
  feed_prompt_and_decode(*st, in);
  std::set<int64_t> streaming = range(0, 3);
  for (int64_t p = 40; p < 50; ++p) streaming.insert(p);
  for (int l = 0; l < 2; ++l) {
    EXPECT_EQ(stored_positions(*st, l, 0), range(0, 50)) << "layer " << l;
    EXPECT_EQ(stored_positions(*st, l, 1), streaming) << "layer " << l;
  }
  // Bytes: each head holds its own slots (fp32 keys and values); streaming heads that dropped
  // hold explicit positions (8 bytes a slot).
  const int64_t slot_bytes = 2 * 16 * 4;
  MemoryUse mu = st->memory();
  EXPECT_EQ(mu.slots, 2 * (50 + 13));
  EXPECT_EQ(mu.payload_bytes, 2 * (50 + 13) * slot_bytes);
  EXPECT_EQ(mu.metadata_bytes, 2 * 13 * 8);
  // Memory really shrinks against the full cache.
  auto full = make_method("full")->make_state(kShape);
  test::SyntheticStream in2(kShape, 3);
  feed_prompt_and_decode(*full, in2);
  EXPECT_EQ(full->memory().payload_bytes, 4 * 50 * slot_bytes);
  EXPECT_LT(mu.payload_bytes, full->memory().payload_bytes);
  // The view pads streaming heads (position -1, bias -inf) and holds what was appended.
  KVView v = st->view(1);
  ASSERT_EQ(v.slots(), 50);
  ASSERT_TRUE(v.logit_bias.defined());
  for (int64_t i = 13; i < 50; ++i) {
    EXPECT_EQ(v.pos[0][1][i].item<int64_t>(), -1);
    EXPECT_TRUE(std::isinf(v.logit_bias[0][1][i].item<float>()));
  }
}

TEST(MethodHeadwise, DuoStreamingEverywhereIsStreamingLLM) {
  auto duo = make_method("duoattention(sink=4,recent=12,roles=s)")->make_state(kShape);
  auto sllm = make_method("streaming(sink=4,window=12)")->make_state(kShape);
  test::SyntheticStream a(kShape, 8), b(kShape, 8);
  for (int64_t t : {40, 1, 1, 17, 1}) {
    a.feed(*duo, t);
    b.feed(*sllm, t);
    for (int l = 0; l < 2; ++l)
      for (int64_t h = 0; h < 2; ++h)
        EXPECT_EQ(stored_positions(*duo, l, h), test::held_positions(*sllm, l, h));
  }
}

TEST(MethodHeadwise, RazorCompensationTokenIsTheMeanOfTheDroppedKeysAndValues) {
  auto m = make_method("razorattention(sink=3,recent=10,roles=rs)");
  auto st = m->make_state(kShape);
  test::SyntheticStream in(kShape, 4);
  feed_prompt_and_decode(*st, in);
  std::set<int64_t> streaming = range(0, 3);
  for (int64_t p = 40; p < 50; ++p) streaming.insert(p);
  torch::Tensor dropped = torch::arange(3, 40, torch::kLong);  // positions 3 .. 39
  for (int l = 0; l < 2; ++l) {
    EXPECT_EQ(stored_positions(*st, l, 0), range(0, 50));
    EXPECT_EQ(stored_positions(*st, l, 1), streaming);
    KVView v = st->view(l);
    ASSERT_EQ(v.slots(), 50);
    // Head 1: 13 stored slots, then the compensation slot, then padding.
    EXPECT_EQ(v.pos[0][1][13].item<int64_t>(), kCompensationPos);
    EXPECT_NEAR(v.logit_bias[0][1][13].item<float>(), std::log(37.0), 1e-6);
    torch::Tensor want_k = in.k[l][0][1].index_select(0, dropped).mean(0);
    torch::Tensor want_v = in.v[l][0][1].index_select(0, dropped).mean(0);
    EXPECT_LT((v.k[0][1][13] - want_k).abs().max().item<double>(), 1e-5) << "layer " << l;
    EXPECT_LT((v.v[0][1][13] - want_v).abs().max().item<double>(), 1e-5) << "layer " << l;
    EXPECT_EQ(v.pos[0][1][14].item<int64_t>(), -1);
    EXPECT_TRUE(std::isinf(v.logit_bias[0][1][14].item<float>()));
    // Retrieval heads have no compensation slot.
    for (int64_t i = 0; i < 50; ++i) EXPECT_GE(v.pos[0][0][i].item<int64_t>(), 0);
  }
  // The compensation slot is a slot: a key and a value in fp32 and an 8-byte count.
  const int64_t slot_bytes = 2 * 16 * 4;
  MemoryUse mu = st->memory();
  EXPECT_EQ(mu.slots, 2 * (50 + 13 + 1));
  EXPECT_EQ(mu.payload_bytes, 2 * (50 + 13 + 1) * slot_bytes);
  EXPECT_EQ(mu.metadata_bytes, 2 * (13 * 8 + 8));
  // A snapshot keeps its own compensation.
  auto copy = st->clone();
  in.feed(*st, 1);
  EXPECT_NEAR(copy->view(0).logit_bias[0][1][13].item<float>(), std::log(37.0), 1e-6);
  EXPECT_NEAR(st->view(0).logit_bias[0][1][13].item<float>(), std::log(38.0), 1e-6);
}

TEST(MethodHeadwise, RazorCompensationIsReadWithItsCount) {
  // A head that dropped tokens attends to sink + recent and the compensation token weighted by
  // the count: attention over [stored, comp] with bias log(n) equals attention over the stored
  // slots plus n copies of the mean token.
  auto st = make_method("razorattention(sink=1,recent=2,roles=s)")->make_state(kShape);
  test::SyntheticStream in(kShape, 9);
  in.feed(*st, 10);
  KVView v = st->view(0);
  ASSERT_EQ(v.slots(), 4);
  torch::Tensor q = torch::randn({16});
  torch::Tensor logits = v.k[0][0].matmul(q) + v.logit_bias[0][0];
  torch::Tensor out = torch::softmax(logits, 0).matmul(v.v[0][0]);
  torch::Tensor k = torch::cat({v.k[0][0].narrow(0, 0, 3), v.k[0][0][3].expand({7, 16})});
  torch::Tensor vv = torch::cat({v.v[0][0].narrow(0, 0, 3), v.v[0][0][3].expand({7, 16})});
  torch::Tensor want = torch::softmax(k.matmul(q), 0).matmul(vv);
  EXPECT_LT((out - want).abs().max().item<double>(), 1e-5);
}

void expect_exact_promise(const std::string& spec, int64_t tokens, int64_t chunk) {
  SCOPED_TRACE(spec);
  auto m = make_method(spec);
  ASSERT_TRUE(m->promise_is_exact());
  auto st = m->make_state(kShape);
  test::SyntheticStream in(kShape, 5);
  in.feed_chunked(*st, tokens, chunk);
  st->end_prefill();
  const MemoryUse got = st->memory();
  const std::optional<MemoryUse> want = m->promised_memory(kShape, tokens);
  ASSERT_TRUE(want.has_value());
  EXPECT_EQ(got.slots, want->slots);
  EXPECT_EQ(got.payload_bytes, want->payload_bytes);
  EXPECT_EQ(got.metadata_bytes, want->metadata_bytes);
}

TEST(MethodHeadwise, PromisesAreExactWithFullAndIntStorage) {
  for (const char* base : {"duoattention(sink=4,recent=20,roles=rs)",
                           "razorattention(sink=4,recent=20,roles=rs)",
                           "duoattention(sink=4,recent=20,roles=srs)",
                           "razorattention(sink=2,recent=9,roles=s)"})
    for (const std::string storage : {"", "+full(dtype=fp16)", "+int(bits=4)", "+int(bits=8,group=8)"})
      for (auto [tokens, chunk] : {std::pair<int64_t, int64_t>{20, 20}, {100, 1}, {300, 64}})
        expect_exact_promise(base + storage, tokens, chunk);
}

TEST(MethodHeadwise, ComposedWithKiviThePromiseIsABound) {
  for (const char* spec : {"duoattention(sink=4,recent=40,roles=rs)+kivi(bits=2)",
                           "razorattention(sink=4,recent=40,roles=rs)+kivi(bits=2)"}) {
    SCOPED_TRACE(spec);
    auto m = make_method(spec);
    EXPECT_FALSE(m->promise_is_exact());
    for (int64_t tokens : {50, 400}) {
      auto st = m->make_state(kShape);
      test::SyntheticStream in(kShape, 6);
      in.feed_chunked(*st, tokens, 32);
      const MemoryUse got = st->memory();
      const MemoryUse want = *m->promised_memory(kShape, tokens);
      EXPECT_EQ(got.slots, want.slots);
      EXPECT_LE(got.payload_bytes, want.payload_bytes);
      EXPECT_LE(got.payload_bytes + got.metadata_bytes, want.payload_bytes + want.metadata_bytes);
    }
  }
}

TEST(MethodHeadwise, CalibratedPromiseCountsStreamingHeadsFromSparsity) {
  // 2 layers x 2 KV heads: sparsity 0.5 streams round(2) heads, 0.25 round(1) — the same totals
  // as explicit patterns with as many streaming heads; heads=0.75 keeps round(3) retrieval heads, the default 0.15 round(0.6) = 1.
  const std::pair<const char*, const char*> same[] = {
      {"duoattention(sink=4,recent=8,sparsity=0.5)", "duoattention(sink=4,recent=8,roles=rs)"},
      {"duoattention(sink=4,recent=8,sparsity=0.25)", "duoattention(sink=4,recent=8,roles=srrr)"},
      {"razorattention(sink=4,recent=8,heads=0.75)", "razorattention(sink=4,recent=8,roles=srrr)"},
      {"razorattention(sink=4,recent=8)", "razorattention(sink=4,recent=8,roles=rsss)"}};
  for (auto [calibrated, pattern] : same)
    for (int64_t tokens : {10, 100}) {
      const MemoryUse a = *make_method(calibrated)->promised_memory(kShape, tokens);
      const MemoryUse b = *make_method(pattern)->promised_memory(kShape, tokens);
      EXPECT_EQ(a.slots, b.slots) << calibrated;
      EXPECT_EQ(a.payload_bytes, b.payload_bytes) << calibrated;
      EXPECT_EQ(a.metadata_bytes, b.metadata_bytes) << calibrated;
    }
}

TEST(MethodHeadwise, SpecsCanonicalizeAndRefuseWhatTheyCannotMean) {
  EXPECT_EQ(make_method("duoattention")->spec(),
            "duoattention(recent=256,roles=calibrated,sink=64,sparsity=0.5)");
  EXPECT_EQ(make_method("razorattention")->spec(),
            "razorattention(heads=0.15,recent=1024,roles=calibrated,sink=4)");
  EXPECT_EQ(make_method("duoattention(roles=rs)")->spec(),
            "duoattention(recent=256,roles=rs,sink=64,sparsity=auto)");
  EXPECT_THROW(make_method("duoattention(roles=rs,sparsity=0.5)"), InputError);
  EXPECT_THROW(make_method("razorattention(roles=rs,heads=0.5)"), InputError);
  EXPECT_THROW(make_method("duoattention(roles=rx)"), InputError);
  EXPECT_THROW(make_method("duoattention(sparsity=1.5)"), InputError);
  EXPECT_THROW(make_method("duoattention(recent=0)"), InputError);
  EXPECT_THROW(make_method("duoattention(roles=rs)+h2o(budget=8)"), InputError);  // ragged: alone
  // Calibrated roles are never guessed: no state before calibrate().
  EXPECT_THROW(make_method("duoattention")->make_state(kShape), InputError);
  EXPECT_THROW(make_method("razorattention+kivi")->make_state(kShape), InputError);
}

// A calibration context on the tiny random model whose `run` counts its calls.
struct CountingContext {
  Model model = Model::random(test::tiny_model_config(), 17);
  int calls = 0;
  CalibrationContext make(const std::string& dir, const std::string& model_id) {
    CalibrationContext ctx = make_calibration_context(model, model_id, dir);
    auto inner = ctx.run;
    ctx.run = [this, inner](KVCacheState& st, const std::vector<int64_t>& ids, int64_t prompt) {
      ++calls;
      return inner(st, ids, prompt);
    };
    return ctx;
  }
};

TEST(MethodHeadwise, DuoCalibrationIsWrittenReusedAndKeyedByModelAndSpec) {
  test::TempDir dir;
  CountingContext cc;
  const std::string spec = "duoattention(sink=4,recent=16,sparsity=0.5)";
  auto m = make_method(spec);
  m->calibrate(cc.make(dir.path("cal"), "model-a"));
  // 3 layers x 2 KV heads: the full cache and each head alone streaming, on 2 prompts.
  EXPECT_EQ(cc.calls, 2 * (1 + 6));
  const auto arts = m->calibration_artifacts();
  ASSERT_EQ(arts.size(), 1u);
  EXPECT_TRUE(arts[0].computed);
  EXPECT_EQ(arts[0].stage, make_method(spec)->spec());
  ASSERT_TRUE(fs::exists(arts[0].path));
  EXPECT_EQ(fs::path(arts[0].path).parent_path(), fs::path(dir.path("cal")) / "duoattention");
  EXPECT_NE(arts[0].path.find("model-a"), std::string::npos);
  EXPECT_EQ(arts[0].hash, hex64(fnv1a64(read_file(arts[0].path))));
  const json a = json::parse(read_file(arts[0].path));
  EXPECT_EQ(a["method"], "duoattention");
  EXPECT_EQ(a["model_id"], "model-a");
  const std::string roles = a["roles"].get<std::string>();
  ASSERT_EQ(roles.size(), 6u);
  EXPECT_EQ(std::count(roles.begin(), roles.end(), 's'), 3);
  // The streaming heads are those whose streaming costs the answer least.
  const std::vector<double> drop = a["scores"].get<std::vector<double>>();
  double most_streaming = -1e300, least_retrieval = 1e300;
  for (size_t i = 0; i < 6; ++i) {
    if (roles[i] == 's') most_streaming = std::max(most_streaming, drop[i]);
    else least_retrieval = std::min(least_retrieval, drop[i]);
  }
  EXPECT_LE(most_streaming, least_retrieval);
  // The calibrated method runs and keeps sink + recent in exactly its streaming heads.
  auto st = m->make_state(cc.model.shape());
  test::SyntheticStream in(cc.model.shape(), 2);
  in.feed(*st, 60);
  for (int l = 0; l < 3; ++l)
    for (int64_t h = 0; h < 2; ++h)
      EXPECT_EQ(stored_positions(*st, l, h).size(), roles[l * 2 + h] == 's' ? 20u : 60u);
  EXPECT_EQ(st->memory().slots, m->promised_memory(cc.model.shape(), 60)->slots);

  // A second calibration (another method object, the same spec and model) reads the artifact:
  // nothing runs, the file is untouched.
  const auto mtime = fs::last_write_time(arts[0].path);
  const std::string bytes = read_file(arts[0].path);
  cc.calls = 0;
  auto again = make_method(spec);
  again->calibrate(cc.make(dir.path("cal"), "model-a"));
  EXPECT_EQ(cc.calls, 0);
  ASSERT_EQ(again->calibration_artifacts().size(), 1u);
  EXPECT_FALSE(again->calibration_artifacts()[0].computed);
  EXPECT_EQ(again->calibration_artifacts()[0].path, arts[0].path);
  EXPECT_EQ(again->calibration_artifacts()[0].hash, arts[0].hash);
  EXPECT_EQ(fs::last_write_time(arts[0].path), mtime);
  EXPECT_EQ(read_file(arts[0].path), bytes);
  // Another model or another spec is another artifact.
  auto other_model = make_method(spec);
  other_model->calibrate(cc.make(dir.path("cal"), "model-b"));
  EXPECT_GT(cc.calls, 0);
  EXPECT_NE(other_model->calibration_artifacts()[0].path, arts[0].path);
  cc.calls = 0;
  auto other_spec = make_method("duoattention(sink=4,recent=16,sparsity=0.25)");
  other_spec->calibrate(cc.make(dir.path("cal"), "model-a"));
  EXPECT_GT(cc.calls, 0);
  EXPECT_NE(other_spec->calibration_artifacts()[0].path, arts[0].path);
  const json b = json::parse(read_file(other_spec->calibration_artifacts()[0].path));
  const std::string r2 = b["roles"].get<std::string>();
  EXPECT_EQ(std::count(r2.begin(), r2.end(), 's'), 2);  // round(0.25 x 6)
  // A damaged artifact is calibrated again and replaced.
  write_file(arts[0].path, "{not json");
  cc.calls = 0;
  auto repaired = make_method(spec);
  repaired->calibrate(cc.make(dir.path("cal"), "model-a"));
  EXPECT_GT(cc.calls, 0);
  EXPECT_EQ(read_file(arts[0].path), bytes);  // deterministic
  // Explicit roles calibrate nothing.
  auto fixed = make_method("duoattention(roles=rs)");
  cc.calls = 0;
  fixed->calibrate(cc.make(dir.path("cal"), "model-a"));
  EXPECT_EQ(cc.calls, 0);
  EXPECT_TRUE(fixed->calibration_artifacts().empty());
}

TEST(MethodHeadwise, RazorCalibrationScoresEchoAndInductionHeads) {
  test::TempDir dir;
  CountingContext cc;
  const std::string spec = "razorattention(sink=4,recent=16,heads=0.5)+kivi(bits=2)";
  auto m = make_method(spec);
  m->calibrate(cc.make(dir.path("cal"), "model-a"));
  EXPECT_EQ(cc.calls, 2);  // one repeated sequence per sample, attention recorded
  const auto arts = m->calibration_artifacts();
  ASSERT_EQ(arts.size(), 1u);
  EXPECT_EQ(arts[0].stage, "razorattention(heads=0.5,recent=16,roles=calibrated,sink=4)");
  const json a = json::parse(read_file(arts[0].path));
  const std::string roles = a["roles"].get<std::string>();
  EXPECT_EQ(std::count(roles.begin(), roles.end(), 'r'), 3);  // round(0.5 x 6)
  ASSERT_EQ(a["echo_scores"].size(), 6u);
  ASSERT_EQ(a["induction_scores"].size(), 6u);
  EXPECT_EQ(a["repeat_tokens"], 64);  // max_position 128 / 2
  // Scores are attention weights: in [0, 1].
  for (const auto& x : a["induction_scores"]) EXPECT_TRUE(x >= 0.0 && x <= 1.0);
  // Retrieval heads (none by echo at 3 heads: round(3/15) = 0) are the top induction scores.
  const std::vector<double> ind = a["induction_scores"].get<std::vector<double>>();
  double least_r = 1e300, most_s = -1e300;
  for (size_t i = 0; i < 6; ++i) {
    if (roles[i] == 'r') least_r = std::min(least_r, ind[i]);
    else most_s = std::max(most_s, ind[i]);
  }
  EXPECT_GE(least_r, most_s);
  // Reused.
  cc.calls = 0;
  auto again = make_method(spec);
  again->calibrate(cc.make(dir.path("cal"), "model-a"));
  EXPECT_EQ(cc.calls, 0);
  EXPECT_EQ(again->calibration_artifacts()[0].hash, arts[0].hash);
  // The calibrated chain runs; the promise is a bound with KIVI.
  auto st = again->make_state(cc.model.shape());
  test::SyntheticStream in(cc.model.shape(), 2);
  in.feed(*st, 60);
  EXPECT_LE(st->memory().payload_bytes, again->promised_memory(cc.model.shape(), 60)->payload_bytes);
}

TEST(MethodHeadwise, ARunRecordsTheCalibrationArtifactOfEachCell) {
  test::TempDir dir;
  json cfg = test::small_suite_config(dir, {.methods = {"duoattention(sink=4,recent=16)", "full"}});
  cfg["runs"] = json::array({cfg["runs"][0]});  // perplexity only
  write_file(dir.path("suite.json"), cfg.dump(2));
  const std::string db = dir.path("res/r.db");
  auto r = test::run_kvbench("run --suite " + test::q(dir.path("suite.json")) + " --db " +
                             test::q(db));
  ASSERT_EQ(r.code, 0) << r.err;
  auto records = [&] {
    sqlite3* h = nullptr;
    EXPECT_EQ(sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(h, "SELECT record FROM cells ORDER BY id", -1, &s, nullptr);
    std::vector<json> out;
    while (sqlite3_step(s) == SQLITE_ROW)
      out.push_back(json::parse(reinterpret_cast<const char*>(sqlite3_column_text(s, 0))));
    sqlite3_finalize(s);
    sqlite3_close(h);
    return out;
  };
  std::vector<json> recs = records();
  ASSERT_EQ(recs.size(), 2u);
  ASSERT_TRUE(recs[0].contains("calibration")) << recs[0].dump();
  EXPECT_FALSE(recs[1].contains("calibration"));  // full
  const json& cal = recs[0]["calibration"][0];
  EXPECT_EQ(cal["stage"], "duoattention(recent=16,roles=calibrated,sink=4,sparsity=0.5)");
  const std::string path = cal["path"].get<std::string>();
  // Beside the database by default, keyed by the model's weights hash.
  EXPECT_EQ(fs::path(path).parent_path(), fs::path(dir.path("res")) / "calibration" / "duoattention");
  EXPECT_NE(path.find(recs[0]["model_hash"].get<std::string>()), std::string::npos);
  EXPECT_EQ(cal["hash"], hex64(fnv1a64(read_file(path))));
  // Another run of the same config reuses the artifact (the file is not rewritten).
  const auto mtime = fs::last_write_time(path);
  r = test::run_kvbench("run --suite " + test::q(dir.path("suite.json")) + " --db " + test::q(db) +
                        " --run-name again");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(fs::last_write_time(path), mtime);
  recs = records();
  ASSERT_EQ(recs.size(), 4u);
  EXPECT_EQ(recs[2]["calibration"], recs[0]["calibration"]);
}

}  // namespace
}  // namespace kvb
