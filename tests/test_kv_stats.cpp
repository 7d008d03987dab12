// kv-stats (harness/engine/kv_stats.h, cli/kv_stats_cmd.h): per-channel key/value magnitudes,
// outlier channels and the attention-sink mass, checked against planted outliers and a direct
// computation of layer 0, and `kvbench kv-stats` end to end on the embedded model.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/json_io.h"
#include "harness/engine/kv_stats.h"
#include "harness/model/model.h"
#include "tests/methods_test_util.h"
#include "tests/test_util.h"

namespace kvb {
namespace {

namespace fs = std::filesystem;

std::vector<int64_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  torch::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  torch::Tensor t = torch::randint(vocab, {n}, g, torch::kLong);
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + n);
}

// Layer 0 computed by hand from the weights: pre-RoPE keys [H_kv, N, D] and the attention
// weights [H_q, N, N] (causal, GQA), independent of Model::forward and the cache.
struct Layer0 {
  torch::Tensor k_pre, probs;
};
Layer0 layer0(const Model& m, const std::vector<int64_t>& ids) {
  const ModelConfig& c = m.config();
  const LayerWeights& w = m.weights().layers[0];
  const int64_t N = static_cast<int64_t>(ids.size()), Hq = c.n_heads, Hkv = c.n_kv_heads,
                D = c.head_dim;
  torch::Tensor x =
      m.weights().embed.index_select(0, torch::tensor(ids, torch::kLong)).unsqueeze(0);
  torch::Tensor h = rms_norm(x, w.attn_norm, c.rms_eps);
  torch::Tensor q = project(h, w.wq, w.bq).view({1, N, Hq, D}).transpose(1, 2);
  torch::Tensor k = project(h, w.wk, w.bk).view({1, N, Hkv, D}).transpose(1, 2);
  torch::Tensor freqs = torch::outer(torch::arange(N, torch::kFloat32), rope_inv_freq(c));
  torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  torch::Tensor qr = apply_rope(q, emb.cos(), emb.sin());
  torch::Tensor kr = apply_rope(k, emb.cos(), emb.sin()).repeat_interleave(Hq / Hkv, 1);
  torch::Tensor s = torch::matmul(qr, kr.transpose(-1, -2)) / std::sqrt(static_cast<double>(D));
  s = s.masked_fill(torch::ones({N, N}, torch::kBool).triu(1), -INFINITY);
  return {k[0], torch::softmax(s, -1)[0]};
}

TEST(KVStats, ChannelStatsOfAKnownBlock) {
  // 3 tokens x 4 channels; channel absmax 1, 2, 3, 40 -> median 2.5, threshold 4 x 2.5 = 10.
  torch::Tensor x =
      torch::tensor({1.0f, -2.0f, 3.0f, 40.0f, 0.5f, 1.0f, -1.0f, -20.0f, 0.0f, 0.0f, 0.0f, 5.0f})
          .view({3, 4});
  const ChannelStats s = channel_stats(x, 4.0);
  EXPECT_EQ(s.max_abs, (std::vector<double>{1, 2, 3, 40}));
  EXPECT_NEAR(s.mean_abs[3], 65.0 / 3, 1e-9);
  EXPECT_NEAR(s.mean_abs[0], 0.5, 1e-9);
  EXPECT_DOUBLE_EQ(s.median_absmax, 2.5);
  EXPECT_DOUBLE_EQ(s.max_absmax, 40);
  EXPECT_DOUBLE_EQ(s.ratio, 16);
  EXPECT_EQ(s.outlier_channels, (std::vector<int64_t>{3}));
  EXPECT_EQ(s.outlier_entries, 2);  // 40 and 20; 5 is under 10
  // Odd width: the middle value; nothing over 4 x it.
  const ChannelStats o = channel_stats(x.narrow(1, 0, 3), 4.0);
  EXPECT_DOUBLE_EQ(o.median_absmax, 2);
  EXPECT_TRUE(o.outlier_channels.empty());
  EXPECT_EQ(o.outlier_entries, 0);
}

class KVStatsModel : public ::testing::Test {
 protected:
  KVStatsModel() : model_(Model::random(test::tiny_model_config(), 5)) {}
  // Scales key channel `ch` of KV head `head` in `layer` by `f` (a planted outlier).
  void plant(int layer, int64_t head, int64_t ch, double f) {
    torch::NoGradGuard ng;
    const int64_t D = model_.config().head_dim;
    model_.mutable_weights().layers[static_cast<size_t>(layer)].wk[head * D + ch].mul_(f);
  }
  Model model_;
};

TEST_F(KVStatsModel, FindsExactlyThePlantedKeyOutlierChannels) {
  plant(0, 1, 5, 30.0);
  plant(2, 0, 11, 30.0);
  const std::vector<int64_t> ids = random_ids(100, model_.config().vocab_size, 3);
  KVStatsOptions opt;
  opt.chunk = 32;
  const KVStats st = compute_kv_stats(model_, ids, opt);
  ASSERT_EQ(st.tokens, 100);
  ASSERT_EQ(st.layers.size(), 3u);
  for (size_t l = 0; l < 3; ++l) {
    ASSERT_EQ(st.layers[l].size(), 2u);
    for (size_t h = 0; h < 2; ++h) {
      const HeadKVStats& hs = st.layers[l][h];
      ASSERT_EQ(hs.key_pre_rope.max_abs.size(), 16u);
      std::vector<int64_t> want;
      if (l == 0 && h == 1) want = {5};
      if (l == 2 && h == 0) want = {11};
      EXPECT_EQ(hs.key_pre_rope.outlier_channels, want) << "layer " << l << " head " << h;
      // Values carry no planted outlier.
      EXPECT_TRUE(hs.value.outlier_channels.empty()) << "layer " << l << " head " << h;
      EXPECT_EQ(hs.value.outlier_entries, 0) << "layer " << l << " head " << h;
      if (want.empty()) {
        EXPECT_LT(hs.key_pre_rope.ratio, 4.0);
        continue;
      }
      EXPECT_GT(hs.key_pre_rope.ratio, 4.0);
      EXPECT_GT(hs.key_pre_rope.outlier_entries, 0);
      EXPECT_LE(hs.key_pre_rope.outlier_entries, 100);
      // RoPE mixes channel c with c + D/2 (rotate-half): the outlier stays in that pair.
      const std::set<int64_t> pair{want[0], (want[0] + 8) % 16};
      ASSERT_FALSE(hs.key_post_rope.outlier_channels.empty());
      for (int64_t c : hs.key_post_rope.outlier_channels) EXPECT_TRUE(pair.count(c)) << c;
    }
  }
  // The magnitudes are the keys' own: layer 0 by hand.
  const Layer0 ref = layer0(model_, ids);
  for (int64_t h = 0; h < 2; ++h) {
    const ChannelStats& s = st.layers[0][static_cast<size_t>(h)].key_pre_rope;
    torch::Tensor a = ref.k_pre[h].abs();  // [N, D]
    for (int64_t c = 0; c < 16; ++c) {
      const double mx = a.select(1, c).max().item<double>();
      EXPECT_NEAR(s.max_abs[static_cast<size_t>(c)], mx, 1e-5 * mx) << h << " " << c;
      const double mean = a.select(1, c).mean().item<double>();
      EXPECT_NEAR(s.mean_abs[static_cast<size_t>(c)], mean, 1e-5 * mean) << h << " " << c;
    }
  }
  const double planted = st.layers[0][1].key_pre_rope.max_abs[5];
  EXPECT_DOUBLE_EQ(st.layers[0][1].key_pre_rope.max_absmax, planted);
  EXPECT_GT(planted, 4 * st.layers[0][1].key_pre_rope.median_absmax);
}

TEST_F(KVStatsModel, SinkMassIsLayerZerosDirectWeightOnTheFirstToken) {
  const std::vector<int64_t> ids = random_ids(40, model_.config().vocab_size, 9);
  KVStatsOptions opt;
  opt.chunk = 7;  // chunks: the first token is a view slot after the first one
  opt.sink_skip = 4;
  const KVStats st = compute_kv_stats(model_, ids, opt);
  EXPECT_EQ(st.sink_from, 4);
  double uniform = 0;
  for (int p = 4; p < 40; ++p) uniform += 1.0 / (p + 1);
  EXPECT_NEAR(st.sink_uniform, uniform / 36, 1e-12);
  const Layer0 ref = layer0(model_, ids);
  for (int64_t h = 0; h < 2; ++h) {
    const HeadKVStats& hs = st.layers[0][static_cast<size_t>(h)];
    ASSERT_EQ(hs.sink_mass_q.size(), 2u);
    double group = 0;
    for (int64_t g = 0; g < 2; ++g) {
      const double want = ref.probs[h * 2 + g].select(1, 0).narrow(0, 4, 36).mean().item<double>();
      EXPECT_NEAR(hs.sink_mass_q[static_cast<size_t>(g)], want, 1e-5) << h << " " << g;
      group += want / 2;
    }
    EXPECT_NEAR(hs.sink_mass, group, 1e-5);
  }
  for (const auto& layer : st.layers)
    for (const HeadKVStats& hs : layer) {
      EXPECT_GE(hs.sink_mass, 0.0);
      EXPECT_LE(hs.sink_mass, 1.0);
    }
  // The chunking changes nothing; queries before sink_from are left out.
  opt.chunk = 256;
  const KVStats whole = compute_kv_stats(model_, ids, opt);
  for (size_t l = 0; l < 3; ++l)
    for (size_t h = 0; h < 2; ++h) {
      EXPECT_NEAR(whole.layers[l][h].sink_mass, st.layers[l][h].sink_mass, 1e-5);
      EXPECT_NEAR(whole.layers[l][h].key_post_rope.max_absmax,
                  st.layers[l][h].key_post_rope.max_absmax, 1e-4);
    }
  opt.sink_skip = 0;
  const KVStats all = compute_kv_stats(model_, ids, opt);
  const double with_first = ref.probs[0].select(1, 0).mean().item<double>();  // query 0: 1.0
  EXPECT_NEAR(all.layers[0][0].sink_mass_q[0], with_first, 1e-5);
  EXPECT_GT(all.layers[0][0].sink_mass_q[0], st.layers[0][0].sink_mass_q[0]);
}

TEST_F(KVStatsModel, MaxTokensAndContextBoundWhatIsFed) {
  const std::vector<int64_t> ids = random_ids(200, model_.config().vocab_size, 1);
  KVStatsOptions opt;
  opt.max_tokens = 30;
  EXPECT_EQ(compute_kv_stats(model_, ids, opt).tokens, 30);
  opt.max_tokens = 0;  // the context, 128
  const KVStats st = compute_kv_stats(model_, ids, opt);
  EXPECT_EQ(st.tokens, 128);
  EXPECT_EQ(st.first_token, ids[0]);
  EXPECT_THROW(compute_kv_stats(model_, std::vector<int64_t>{}, opt), InputError);
  EXPECT_THROW(compute_kv_stats(model_, std::vector<int64_t>{1, 2, 97}, opt),
               InputError);  // vocab 97
}

// ---- the command ----------------------------------------------------------------------------

std::string ref_model() { return test::source_path("models/kvb-ref-s"); }

const char kText[] =
    "The river ran past the old mill, and the miller counted the sacks twice before the rain. "
    "In the morning the children carried bread to the village square, where a painter sat "
    "waiting for the light. Nobody remembered the name of the bridge, but everyone crossed it. ";

// The page's per-layer charts: <svg> roots carrying data-chart="kv-channels".
int count_charts(const std::string& html) {
  const std::string open =
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"kvb-chart\" "
      "data-chart=\"kv-channels\"";
  int n = 0;
  for (size_t p = html.find(open); p != std::string::npos; p = html.find(open, p + 1)) ++n;
  return n;
}

class KVStatsCli : public ::testing::Test {
 protected:
  void SetUp() override {
    text_ = tmp_.path("t<&>'.txt");  // a name that must be escaped in the page
    write_file(text_, kText);
  }
  test::TempDir tmp_;
  std::string text_;
};

TEST_F(KVStatsCli, TableJsonAndHtmlOnTheEmbeddedModel) {
  const std::string json = tmp_.path("s.json"), html = tmp_.path("s.html");
  const auto r =
      test::run_kvbench("kv-stats --model " + test::q(ref_model()) + " --text " + test::q(text_) +
                        " --json " + test::q(json) + " --html " + test::q(html));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  // One table row per layer and KV head after the header.
  EXPECT_NE(r.out.find("layer head |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("key pre-RoPE"), std::string::npos) << r.out;
  for (const char* row : {"\n    0    0 |", "\n    0    1 |", "\n    2    1 |"})
    EXPECT_NE(r.out.find(row), std::string::npos) << row << " in " << r.out;
  EXPECT_EQ(r.out.find("\n    3    0 |"), std::string::npos) << r.out;

  const nlohmann::json j = nlohmann::json::parse(test::slurp(json));
  const int64_t n_bytes = static_cast<int64_t>(sizeof kText) - 1;
  EXPECT_EQ(j.at("tokens").get<int64_t>(), n_bytes + 1);  // bytes + BOS
  EXPECT_EQ(j.at("first_token").get<int64_t>(), 256);     // kvb-ref-s's BOS
  EXPECT_EQ(j.at("n_layers").get<int>(), 3);
  EXPECT_EQ(j.at("n_kv_heads").get<int>(), 2);
  EXPECT_EQ(j.at("head_dim").get<int>(), 32);
  ASSERT_EQ(j.at("layers").size(), 3u);
  for (const auto& layer : j.at("layers")) {
    ASSERT_EQ(layer.at("heads").size(), 2u);
    for (const auto& h : layer.at("heads")) {
      for (const char* kind : {"key_pre_rope", "key_post_rope", "value"}) {
        const auto& k = h.at(kind);
        ASSERT_EQ(k.at("max_abs").size(), 32u) << kind;
        ASSERT_EQ(k.at("mean_abs").size(), 32u) << kind;
        double mx = 0;
        for (const auto& v : k.at("max_abs")) mx = std::max(mx, v.get<double>());
        EXPECT_GT(mx, 0);
        EXPECT_DOUBLE_EQ(k.at("max_absmax").get<double>(), mx) << kind;
        for (size_t c = 0; c < 32; ++c)
          EXPECT_LE(k.at("mean_abs")[c].get<double>(), k.at("max_abs")[c].get<double>());
      }
      const double sink = h.at("sink_mass").get<double>();
      EXPECT_GE(sink, 0);
      EXPECT_LE(sink, 1);
      EXPECT_EQ(h.at("sink_mass_per_query_head").size(), 4u);  // 8 query heads / 2
    }
  }

  const std::string page = test::slurp(html);
  EXPECT_EQ(page.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(count_charts(page), 3);  // one per layer
  EXPECT_NE(page.find("data-series=\"key pre-RoPE\""), std::string::npos);
  EXPECT_NE(page.find("data-series=\"value\""), std::string::npos);
  EXPECT_NE(page.find("t&lt;&amp;&gt;&#39;.txt"), std::string::npos);
  EXPECT_EQ(page.find("t<&>"), std::string::npos);
  // Self-contained: no address but the SVG namespace's, no script.
  std::string rest = page;
  const std::string ns = "xmlns=\"http://www.w3.org/2000/svg\"";
  for (size_t p = rest.find(ns); p != std::string::npos; p = rest.find(ns))
    rest.erase(p, ns.size());
  for (const char* bad : {"http:", "https:", "src=", "href=", "<script"})
    EXPECT_EQ(rest.find(bad), std::string::npos) << bad;
  EXPECT_NE(page.find("<tr><td class=\"n\">2</td><td class=\"n\">1</td>"), std::string::npos);

  // --max-tokens bounds what is fed.
  const auto m = test::run_kvbench("kv-stats --model " + test::q(ref_model()) + " --text " +
                                   test::q(text_) + " --max-tokens 50 --json " + test::q(json));
  ASSERT_EQ(m.code, 0) << m.err;
  EXPECT_EQ(nlohmann::json::parse(test::slurp(json)).at("tokens").get<int64_t>(), 50);
}

TEST_F(KVStatsCli, ChromiumRendersThePage) {
  if (std::system("command -v chromium >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "chromium is not on PATH; the headless rendering check needs it";
  const std::string html = tmp_.path("page.html");
  const auto r = test::run_kvbench("kv-stats --model " + test::q(ref_model()) + " --text " +
                                   test::q(text_) + " --html " + test::q(html));
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string cmd =
      "timeout 120 chromium --headless=new --no-sandbox --disable-gpu "
      "--disable-background-networking --no-first-run --user-data-dir=" +
      test::q(tmp_.path("profile")) +
      " --enable-logging=stderr --v=0 --host-resolver-rules='MAP * ~NOTFOUND' --dump-dom " +
      test::q("file://" + html) + " >" + test::q(tmp_.path("dom")) + " 2>" +
      test::q(tmp_.path("err"));
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const std::string dom = test::slurp(tmp_.path("dom")), err = test::slurp(tmp_.path("err"));
  EXPECT_EQ(err.find(":CONSOLE"), std::string::npos) << err;
  EXPECT_EQ(err.find("Uncaught"), std::string::npos) << err;
  // The parsed page holds the three charts with their series and the table's six rows.
  EXPECT_EQ(count_charts(dom), 3) << dom.substr(0, 2000);
  size_t polylines = 0;
  for (size_t p = dom.find("<polyline class=\"kvb-series\""); p != std::string::npos;
       p = dom.find("<polyline class=\"kvb-series\"", p + 1))
    ++polylines;
  EXPECT_EQ(polylines, 9u);  // 3 layers x (keys pre-RoPE, keys post-RoPE, values)
  size_t rows = 0;
  for (size_t p = dom.find("<tr><td class=\"n\">"); p != std::string::npos;
       p = dom.find("<tr><td class=\"n\">", p + 1))
    ++rows;
  EXPECT_EQ(rows, 6u);
}

TEST_F(KVStatsCli, BadInputIsOneLineExitTwoAndWritesNothing) {
  const std::string json = tmp_.path("keep.json"), html = tmp_.path("keep.html");
  write_file(json, "keep me");
  auto run = [&](const std::string& model, const std::string& text, const std::string& extra) {
    return test::run_kvbench("kv-stats --model " + test::q(model) + " --text " + test::q(text) +
                             " --json " + test::q(json) + " --html " + test::q(html) + " " + extra);
  };
  auto expect_error = [&](const test::CmdResult& r, const std::string& names,
                          const std::string& what) {
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find(names), std::string::npos) << "'" << names << "' not in " << r.err;
    EXPECT_NE(r.err.find(what), std::string::npos) << "'" << what << "' not in " << r.err;
    EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
    EXPECT_EQ(test::slurp(json), "keep me");
    EXPECT_FALSE(fs::exists(html));
    EXPECT_FALSE(fs::exists(json + ".tmp"));
  };
  expect_error(run(tmp_.path("no-model"), text_, ""), tmp_.path("no-model"), "not a model");
  expect_error(run(ref_model(), tmp_.path("missing.txt"), ""), tmp_.path("missing.txt"),
               "cannot open");
  write_file(tmp_.path("empty.txt"), "");
  expect_error(run(ref_model(), tmp_.path("empty.txt"), ""), tmp_.path("empty.txt"), "empty");
  expect_error(run(ref_model(), tmp_.path(""), ""), tmp_.path(""), "folder");
  for (const char* bad : {"0", "-3", "ten"})
    expect_error(run(ref_model(), text_, std::string("--max-tokens ") + bad), "--max-tokens", bad);
  // A model whose tokenizer knows none of the text's characters: no tokens.
  const std::string m = tmp_.path("m");
  ModelConfig c = test::tiny_model_config();
  Model::random(c, 1).save(m);
  write_file(m + "/tokenizer.json",
             R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}})");
  write_file(tmp_.path("zzz.txt"), "zzz");
  expect_error(run(m, tmp_.path("zzz.txt"), ""), tmp_.path("zzz.txt"), "no tokens");
  // An output in a folder that does not exist: refused before the model runs.
  const auto r =
      test::run_kvbench("kv-stats --model " + test::q(ref_model()) + " --text " + test::q(text_) +
                        " --json " + test::q(tmp_.path("nowhere/s.json")));
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(tmp_.path("nowhere/s.json")), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp_.path("nowhere")));
}

}  // namespace
}  // namespace kvb
