// kvquant (methods/quant/kvquant.cpp): the k-means datatype, dense-and-sparse outliers, sinks,
// pre-RoPE keys rotated by the model at their source positions, exact byte accounting, the
// offline calibration's artifact (reuse, invalidation, damaged files) and `kvbench calibrate`.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/check.h"
#include "common/json_io.h"
#include "harness/engine/calibration.h"
#include "harness/model/model.h"
#include "methods/quant/kvquant.h"
#include "methods/registry.h"
#include "tests/methods_test_util.h"
#include "tests/suite_test_util.h"
#include "tests/test_util.h"

namespace kvb {
namespace {

namespace fs = std::filesystem;

TEST(MethodKVQuant, KmeansCodebookBeatsUniformLevelsOnSkewedData) {
  torch::manual_seed(3);
  // Skewed toward -1: most mass near the bottom of [-1, 1], a long thin tail upward.
  torch::Tensor r = torch::empty({20000}).exponential_(1.0);
  torch::Tensor x = (2 * r / r.max() - 1).contiguous();
  for (int bits : {2, 3, 4}) {
    const int64_t levels = int64_t{1} << bits;
    torch::Tensor cb = weighted_kmeans_1d(x, torch::Tensor(), levels);
    ASSERT_EQ(cb.size(0), levels);
    EXPECT_TRUE((cb.narrow(0, 1, levels - 1) >= cb.narrow(0, 0, levels - 1)).all().item<bool>());
    torch::Tensor uni = torch::linspace(-1, 1, levels);
    auto mse = [&](const torch::Tensor& c) {
      return (c.index({nearest_level(x, c).to(torch::kLong)}) - x).square().mean().item<double>();
    };
    EXPECT_LT(mse(cb), 0.5 * mse(uni)) << bits << " bits";
  }
  // Weights pull centroids: all weight on the upper half puts every level there.
  torch::Tensor w = (x > 0).to(torch::kFloat32);
  EXPECT_GT(weighted_kmeans_1d(x, w, 4).min().item<double>(), 0.0);
}

TEST(MethodKVQuant, PackedCodesRoundTrip) {
  for (int bits : {2, 3, 4}) {
    torch::Tensor c = torch::randint(0, 1 << bits, {2, 3, 5, 24}, torch::kLong);
    torch::Tensor p = kvquant_pack(c.to(torch::kUInt8), bits);
    EXPECT_EQ(p.size(3), 24 * bits / 8);
    EXPECT_TRUE(kvquant_unpack(p, bits, 24).equal(c)) << bits;
  }
  EXPECT_EQ(kvquant_outliers_per_vector(0.01, 64), 1);
  EXPECT_EQ(kvquant_outliers_per_vector(0.01, 128), 2);
  EXPECT_EQ(kvquant_outliers_per_vector(0.01, 100), 1);
  EXPECT_EQ(kvquant_outliers_per_vector(0.05, 64), 4);
  EXPECT_EQ(kvquant_outliers_per_vector(0, 64), 0);
}

KVAppend chunk(const torch::Tensor& k, const torch::Tensor& v, int64_t from) {
  return KVAppend{k, k, v, torch::arange(from, from + k.size(2), torch::kLong), {}};
}

TEST(MethodKVQuant, OutliersAreTheTopFractionPerVectorAndExactInFp16) {
  const ModelShape shape = test::method_shape(1, 2, 2, 64);
  // outliers=0.05: ceil(3.2) = 4 per vector; no sinks.
  auto st = make_method("kvquant(bits=2,calib=prompt,outliers=0.05,sink=0,pre_rope=false)")
                ->make_state(shape);
  torch::manual_seed(5);
  torch::Tensor k0 = torch::randn({1, 2, 64, 64}), v0 = torch::randn({1, 2, 64, 64});
  st->append(0, chunk(k0, v0, 0));  // calibrates the layer on ordinary data
  // Then tokens with 4 planted spikes each, at random channels, far outside every range.
  torch::Tensor k1 = torch::randn({1, 2, 16, 64}) * 0.5, v1 = torch::randn({1, 2, 16, 64}) * 0.5;
  torch::Tensor spikes = std::get<1>(torch::rand({1, 2, 16, 64}).sort(-1)).narrow(3, 0, 4);
  torch::Tensor big = (torch::randn({1, 2, 16, 4}).sign() * (40 + torch::rand({1, 2, 16, 4}) * 20));
  k1.scatter_(3, spikes, big);
  v1.scatter_(3, spikes, -big);
  st->append(0, chunk(k1, v1, 64));
  KVView view = st->view(0);
  torch::Tensor gk = view.k.narrow(2, 64, 16).gather(3, spikes);
  torch::Tensor gv = view.v.narrow(2, 64, 16).gather(3, spikes);
  EXPECT_TRUE(gk.equal(big.to(torch::kHalf).to(torch::kFloat32)));
  EXPECT_TRUE(gv.equal((-big).to(torch::kHalf).to(torch::kFloat32)));
  // Elsewhere the spikes did not spoil the values' per-token scale (error of a 2-bit code).
  torch::Tensor rest = torch::ones({1, 2, 16, 64}, torch::kBool).scatter_(3, spikes, false);
  const double ev = (view.v.narrow(2, 64, 16) - v1).abs().masked_select(rest).mean().item<double>();
  EXPECT_LT(ev, 0.35);
  // Exactly 4 per vector were kept: the bytes say so (fp16 value + int16 index, K and V).
  const MemoryUse m = st->memory();
  const int64_t rows = 2 * 80;
  EXPECT_EQ(m.payload_bytes, rows * (2 * 64 * 2 / 8 + 2 * 4 * 2));
  EXPECT_EQ(m.metadata_bytes, rows * (2 * 4 * 2 + 4) + 2 * 4 * 4 + 2 * 64 * 8);
}

TEST(MethodKVQuant, SinkTokensAreHeldExactlyInFp16) {
  const ModelShape shape = test::method_shape(2, 2, 1, 32);
  for (const char* spec : {"kvquant(bits=2,calib=prompt,sink=3)",
                           "streaming(sink=3,window=5)+kvquant(bits=2,calib=prompt,sink=3)"}) {
    SCOPED_TRACE(spec);
    auto st = make_method(spec)->make_state(shape);
    test::SyntheticStream in(shape, 9);
    in.feed(*st, 2);  // sinks arrive over two chunks
    in.feed(*st, 10);
    for (int i = 0; i < 4; ++i) in.feed(*st, 1);
    for (int l = 0; l < 2; ++l) {
      KVView v = st->view(l);
      for (int64_t j = 0; j < 3; ++j) {
        ASSERT_EQ(v.pos[0][0][j].item<int64_t>(), j);
        EXPECT_TRUE(v.k[0][0][j].equal(in.k[l][0][0][j].to(torch::kHalf).to(torch::kFloat32)));
        EXPECT_TRUE(v.v[0][0][j].equal(in.v[l][0][0][j].to(torch::kHalf).to(torch::kFloat32)));
      }
      const int64_t p = v.pos[0][0][3].item<int64_t>();
      EXPECT_FALSE(v.k[0][0][3].equal(in.k[l][0][0][p].to(torch::kHalf).to(torch::kFloat32)));
    }
  }
}

// The model's view with keys rotated by the state itself at the view's source positions: what
// view_keys_pre_rope() asks the model to do.
class RotateInView : public KVCacheState {
 public:
  // The tables built as the model builds its own (Model::ensure_rope: 256 rows at first), so the
  // rotation is bitwise the model's and quantization decisions downstream do not flip.
  RotateInView(std::unique_ptr<KVCacheState> inner, const ModelConfig& c)
      : inner_(std::move(inner)) {
    torch::Tensor f = torch::outer(torch::arange(256, torch::kFloat32), rope_inv_freq(c));
    torch::Tensor emb = torch::cat({f, f}, -1);
    cos_ = emb.cos();
    sin_ = emb.sin();
  }
  void append(int layer, const KVAppend& a) override { inner_->append(layer, a); }
  KVView view(int layer) const override {
    KVView v = inner_->view(layer);
    EXPECT_TRUE(inner_->view_keys_pre_rope(layer));
    if (v.slots() == 0) return v;
    torch::Tensor p = v.pos.clamp_min(0).reshape({-1});
    const auto sh = v.k.sizes();
    v.k = apply_rope(v.k, cos_.index_select(0, p).view(sh), sin_.index_select(0, p).view(sh));
    return v;
  }
  MemoryUse memory() const override { return inner_->memory(); }
  MemoryUse memory(int l) const override { return inner_->memory(l); }
  std::unique_ptr<KVCacheState> clone() const override { return nullptr; }

 private:
  std::unique_ptr<KVCacheState> inner_;
  torch::Tensor cos_, sin_;  // [256, D]
};

TEST(MethodKVQuant, PreRopeKeysAreRotatedAtTheirSourcePositions) {
  const ModelConfig c = test::tiny_model_config();
  Model model = Model::random(c, 23);
  torch::manual_seed(1);
  torch::Tensor ids = torch::randint(0, c.vocab_size, {1, 48}, torch::kLong);
  for (const char* spec : {"kvquant(bits=3,calib=prompt)",
                           "streaming(sink=4,window=12)+kvquant(bits=3,calib=prompt)"}) {
    SCOPED_TRACE(spec);
    auto m = make_method(spec);
    auto st = m->make_state(model.shape());
    RotateInView ref(m->make_state(model.shape()), c);
    torch::Tensor got = test::run_logits(model, *st, ids, 30, 10);
    torch::Tensor want = test::run_logits(model, ref, ids, 30, 10);
    EXPECT_LT((got - want).abs().max().item<double>(), 1e-5);
    // The held keys are the dequantized pre-RoPE keys: not those the model rotated.
    EXPECT_TRUE(st->view_keys_pre_rope(1));
  }
  // pre_rope=false stores post-RoPE keys and asks nothing of the model.
  auto post = make_method("kvquant(bits=3,calib=prompt,pre_rope=false)")->make_state(model.shape());
  EXPECT_FALSE(post->view_keys_pre_rope(0));
  // Quest bounds post-RoPE keys: it cannot read a pre-RoPE store.
  EXPECT_THROW(make_method("quest(page=4,budget=16)+kvquant(calib=prompt)"), InputError);
  EXPECT_NO_THROW(make_method("quest(page=4,budget=16)+kvquant(calib=prompt,pre_rope=false)"));
}

TEST(MethodKVQuant, MemoryIsCountedExactlyAndPromised) {
  const ModelShape shape = test::method_shape(2, 4, 2, 64);
  auto m = make_method("kvquant(bits=3,calib=prompt,outliers=0.02,sink=2)");
  auto st = m->make_state(shape);
  test::SyntheticStream in(shape, 4);
  in.feed_chunked(*st, 100, 33);
  const int64_t h = 2, d = 64, n = 2, s = 100, layers = 2;  // ceil(0.02 x 64) = 2
  const MemoryUse got = st->memory();
  // Codes 3 bits x D for K and V; outlier values fp16; 2 sink rows fp16 K and V.
  EXPECT_EQ(got.payload_bytes, layers * h * (s * (2 * d * 3 / 8 + 2 * n * 2) + 2 * 2 * d * 2));
  // Outlier indices int16; value zero + scale fp16; codebooks 2 x 8 fp32; key zero/scale fp32.
  EXPECT_EQ(got.metadata_bytes, layers * (h * s * (2 * n * 2 + 2 * 2) + 2 * 8 * 4 + h * d * 8));
  const MemoryUse want = *m->promised_memory(shape, 100);
  EXPECT_EQ(want.payload_bytes, got.payload_bytes);
  EXPECT_EQ(want.metadata_bytes, got.metadata_bytes);
  EXPECT_EQ(want.slots, got.slots);
  EXPECT_TRUE(m->promise_is_exact());
  // Behind an eviction: at most what is promised.
  auto chain = make_method("h2o(budget=40)+kvquant(bits=3,calib=prompt,sink=2)");
  auto cs = chain->make_state(shape);
  test::SyntheticStream in2(shape, 4);
  in2.feed_chunked(*cs, 100, 33);
  const MemoryUse cg = cs->memory(), cw = *chain->promised_memory(shape, 100);
  EXPECT_EQ(cg.slots, cw.slots);
  EXPECT_LE(cg.payload_bytes, cw.payload_bytes);
  EXPECT_LE(cg.payload_bytes + cg.metadata_bytes, cw.payload_bytes + cw.metadata_bytes);
}

// A calibration context on the tiny random model whose `run` counts its calls.
struct CountingContext {
  Model model = Model::random(test::tiny_model_config(), 17);
  int calls = 0;
  CalibrationContext make(const std::string& dir, const std::string& model_id,
                          std::vector<int64_t> ids) {
    CalibrationContext ctx = make_calibration_context(model, model_id, dir, std::move(ids), "t");
    auto inner = ctx.run;
    ctx.run = [this, inner](KVCacheState& st, const std::vector<int64_t>& ids, int64_t prompt) {
      ++calls;
      return inner(st, ids, prompt);
    };
    return ctx;
  }
};

std::vector<int64_t> text_ids(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  torch::Tensor t = torch::randint(0, 97, {n}, torch::kLong);
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + n);
}

TEST(MethodKVQuantCalib, ArtifactIsWrittenReusedAndKeyedByModelSpecAndData) {
  test::TempDir dir;
  CountingContext cc;
  const std::string cal = dir.path("cal");
  const std::vector<int64_t> ids = text_ids(300, 1);  // 3 samples of max_position 128 tokens
  auto m = make_method("kvquant(bits=2)");
  EXPECT_THROW(m->make_state(cc.model.shape()), InputError);  // calibrated scales are required
  m->calibrate(cc.make(cal, "model-a", ids));
  EXPECT_EQ(cc.calls, 3);
  const auto arts = m->calibration_artifacts();
  ASSERT_EQ(arts.size(), 1u);
  EXPECT_TRUE(arts[0].computed);
  EXPECT_EQ(arts[0].stage, "kvquant(bits=2,calib=offline,outliers=0.01,pre_rope=true,sink=1)");
  ASSERT_TRUE(fs::exists(arts[0].path));
  const nlohmann::json j = nlohmann::json::parse(read_file(arts[0].path));
  EXPECT_EQ(j["model_id"], "model-a");
  EXPECT_EQ(j["calibration_hash"], calibration_ids_hash(ids));
  EXPECT_EQ(j["layers"].size(), 3u);
  EXPECT_EQ(j["layers"][0]["key_codebook"].size(), 4u);
  // The calibrated method runs.
  auto st = m->make_state(cc.model.shape());
  torch::Tensor x = torch::tensor(std::vector<int64_t>(ids.begin(), ids.begin() + 40)).view({1, 40});
  EXPECT_TRUE(test::run_logits(cc.model, *st, x, 30, 10).isfinite().all().item<bool>());

  // A second calibration (another method object): read, nothing run.
  auto again = make_method("kvquant(bits=2)");
  again->calibrate(cc.make(cal, "model-a", ids));
  EXPECT_EQ(cc.calls, 3);
  ASSERT_EQ(again->calibration_artifacts().size(), 1u);
  EXPECT_FALSE(again->calibration_artifacts()[0].computed);
  EXPECT_EQ(again->calibration_artifacts()[0].hash, arts[0].hash);
  // In a chain the storage stage calibrates the same way and reuses the artifact.
  auto chain = make_method("streaming(window=60)+kvquant(bits=2)");
  chain->calibrate(cc.make(cal, "model-a", ids));
  EXPECT_EQ(cc.calls, 3);
  ASSERT_EQ(chain->calibration_artifacts().size(), 1u);
  EXPECT_EQ(chain->calibration_artifacts()[0].path, arts[0].path);
  EXPECT_NO_THROW(chain->make_state(cc.model.shape()));

  // Another model, other text, another spec: each a new artifact, computed.
  auto other_model = make_method("kvquant(bits=2)");
  other_model->calibrate(cc.make(cal, "model-b", ids));
  EXPECT_TRUE(other_model->calibration_artifacts()[0].computed);
  EXPECT_NE(other_model->calibration_artifacts()[0].path, arts[0].path);
  auto other_text = make_method("kvquant(bits=2)");
  other_text->calibrate(cc.make(cal, "model-a", text_ids(300, 2)));
  EXPECT_TRUE(other_text->calibration_artifacts()[0].computed);
  EXPECT_NE(other_text->calibration_artifacts()[0].path, arts[0].path);
  auto other_spec = make_method("kvquant(bits=3)");
  other_spec->calibrate(cc.make(cal, "model-a", ids));
  EXPECT_TRUE(other_spec->calibration_artifacts()[0].computed);
  EXPECT_NE(other_spec->calibration_artifacts()[0].path, arts[0].path);

  // No text: refused.
  auto no_text = make_method("kvquant(bits=2)");
  EXPECT_THROW(no_text->calibrate(cc.make(cal, "model-a", {})), InputError);
  // calib=prompt calibrates nothing offline.
  auto prompt = make_method("kvquant(bits=2,calib=prompt)");
  prompt->calibrate(cc.make(cal, "model-a", ids));
  EXPECT_TRUE(prompt->calibration_artifacts().empty());
}

TEST(MethodKVQuantCalib, MismatchedArtifactIsRecalibratedDamagedOneIsRefused) {
  test::TempDir dir;
  CountingContext cc;
  const std::string cal = dir.path("cal");
  const std::vector<int64_t> ids = text_ids(100, 1);
  auto m = make_method("kvquant(bits=4)");
  m->calibrate(cc.make(cal, "model-a", ids));
  const std::string path = m->calibration_artifacts()[0].path;
  const int calls = cc.calls;
  // Another identity in the file at this key (copied over, edited): calibrated again, replaced.
  nlohmann::json j = nlohmann::json::parse(read_file(path));
  j["model_id"] = "model-z";
  write_file(path, j.dump());
  auto again = make_method("kvquant(bits=4)");
  again->calibrate(cc.make(cal, "model-a", ids));
  EXPECT_GT(cc.calls, calls);
  EXPECT_TRUE(again->calibration_artifacts()[0].computed);
  EXPECT_EQ(nlohmann::json::parse(read_file(path))["model_id"], "model-a");
  // Damaged: not JSON, or a malformed number: one error naming the file, never used.
  const std::string good = read_file(path);
  for (const std::string& bad : {std::string("{\"method\": \"kvq"), std::string()}) {
    std::string text = bad;
    if (text.empty()) {
      nlohmann::json d = nlohmann::json::parse(good);
      d["layers"][1]["key_scale"][3] = -1.0;
      text = d.dump();
    }
    write_file(path, text);
    auto broken = make_method("kvquant(bits=4)");
    try {
      broken->calibrate(cc.make(cal, "model-a", ids));
      ADD_FAILURE() << "a damaged artifact was used";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("damaged calibration artifact"), std::string::npos);
    }
    EXPECT_THROW(broken->make_state(cc.model.shape()), InputError);
  }
}

TEST(MethodKVQuantCalib, CalibrateCommandReusesAndFailsInOneLine) {
  test::TempDir dir;
  test::make_tiny_model_dir(dir.path("m"));
  write_file(dir.path("text.txt"), "The quick brown fox jumps over the lazy dog. " +
                                       std::string(600, 'a') + " and so on, and so forth.\n");
  const std::string base = "calibrate --model " + test::q(dir.path("m")) +
                           " --method 'kvquant(bits=2)' --out " + test::q(dir.path("cal"));
  auto r = test::run_kvbench(base + " --data " + test::q(dir.path("text.txt")));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("computed"), std::string::npos) << r.out;
  auto r2 = test::run_kvbench(base + " --data " + test::q(dir.path("text.txt")));
  ASSERT_EQ(r2.code, 0) << r2.err;
  EXPECT_NE(r2.out.find("reused"), std::string::npos) << r2.out;
  // Another model (other weights): another artifact, computed.
  test::make_tiny_model_dir(dir.path("m2"), 2);
  auto r3 = test::run_kvbench("calibrate --model " + test::q(dir.path("m2")) +
                              " --method 'kvquant(bits=2)' --out " + test::q(dir.path("cal")) +
                              " --data " + test::q(dir.path("text.txt")));
  ASSERT_EQ(r3.code, 0) << r3.err;
  EXPECT_NE(r3.out.find("computed"), std::string::npos) << r3.out;
  // The artifact damaged: one line naming it, exit 2.
  const std::string out = r2.out;
  const size_t a = out.find("  ") + 2, b = out.find("  ", a);
  const std::string path = out.substr(a, b - a);
  ASSERT_TRUE(fs::exists(path)) << out;
  write_file(path, "{");
  auto r4 = test::run_kvbench(base + " --data " + test::q(dir.path("text.txt")));
  EXPECT_EQ(r4.code, 2) << r4.err;
  EXPECT_EQ(test::count_lines(r4.err), 1) << r4.err;
  EXPECT_NE(r4.err.find(path), std::string::npos) << r4.err;
  // No such data file; a bad spec.
  auto r5 = test::run_kvbench(base + " --data " + test::q(dir.path("nope.txt")));
  EXPECT_EQ(r5.code, 2);
  EXPECT_EQ(test::count_lines(r5.err), 1) << r5.err;
  EXPECT_NE(r5.err.find("nope.txt"), std::string::npos) << r5.err;
  auto r6 = test::run_kvbench("calibrate --model " + test::q(dir.path("m")) +
                              " --method 'kvquant(bits=5)' --data " + test::q(dir.path("text.txt")));
  EXPECT_EQ(r6.code, 2);
  EXPECT_EQ(test::count_lines(r6.err), 1) << r6.err;
}

}  // namespace
}  // namespace kvb
