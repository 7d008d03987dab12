// Forward-pass correctness on small random models: a plain reference implementation written
// independently here (K/V repeated per query head, full score matrix, explicit mask) against
// the engine's path (grouped queries, cached past, chunked prefill).
#include <gtest/gtest.h>

#include <torch/types.h>

#include "harness/model/model.h"
#include "methods/quant/full.h"
#include "tests/test_util.h"

namespace kvb {
namespace {

ModelConfig tiny(const std::string& arch, int64_t heads, int64_t kv_heads, bool tied) {
  ModelConfig c;
  c.architecture = arch;
  c.model_type = "llama";
  c.vocab_size = 97;
  c.hidden_size = 48;
  c.intermediate_size = 80;
  c.n_layers = 3;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.head_dim = 16;  // head_dim * heads != hidden for heads=4 (Qwen3-style explicit head_dim)
  c.max_position = 128;
  c.rms_eps = 1e-6;
  c.rope_theta = 10000;
  c.tie_word_embeddings = tied;
  c.attention_bias = arch == "Qwen2ForCausalLM";
  c.qk_norm = arch == "Qwen3ForCausalLM";
  return c;
}

// Reference forward over the whole sequence at once, written from the HF modeling code's math.
torch::Tensor reference_logits(const Model& m, const torch::Tensor& ids) {  // ids [1, T]
  const ModelConfig& c = m.config();
  const ModelWeights& w = m.weights();
  const int64_t T = ids.size(1), H = c.n_heads, Hk = c.n_kv_heads, D = c.head_dim;
  auto norm = [&](const torch::Tensor& x, const torch::Tensor& g) {
    return x / torch::sqrt(x.pow(2).mean(-1, true) + c.rms_eps) * g;
  };
  torch::Tensor inv = rope_inv_freq(c).to(torch::kFloat64);
  torch::Tensor ang = torch::arange(T, torch::kFloat64).unsqueeze(1) * inv.unsqueeze(0);  // [T, D/2]
  torch::Tensor cos = torch::cat({ang.cos(), ang.cos()}, -1).to(torch::kFloat32);
  torch::Tensor sin = torch::cat({ang.sin(), ang.sin()}, -1).to(torch::kFloat32);
  auto rope = [&](const torch::Tensor& x) {  // [H, T, D]
    torch::Tensor x1 = x.narrow(-1, 0, D / 2), x2 = x.narrow(-1, D / 2, D / 2);
    return x * cos + torch::cat({-x2, x1}, -1) * sin;
  };
  torch::Tensor x = w.embed.index_select(0, ids[0]);  // [T, d]
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layers[l];
    torch::Tensor h = norm(x, L.attn_norm);
    torch::Tensor q = h.matmul(L.wq.t()), k = h.matmul(L.wk.t()), v = h.matmul(L.wv.t());
    if (L.bq.defined()) {
      q = q + L.bq;
      k = k + L.bk;
      v = v + L.bv;
    }
    q = q.view({T, H, D}).transpose(0, 1);  // [H, T, D]
    k = k.view({T, Hk, D}).transpose(0, 1);
    v = v.view({T, Hk, D}).transpose(0, 1);
    if (L.q_norm.defined()) {
      q = norm(q, L.q_norm);
      k = norm(k, L.k_norm);
    }
    q = rope(q);
    k = rope(k).repeat_interleave(H / Hk, 0);  // [H, T, D]
    v = v.repeat_interleave(H / Hk, 0);
    torch::Tensor s = q.matmul(k.transpose(1, 2)) / std::sqrt(static_cast<double>(D));
    torch::Tensor mask = torch::ones({T, T}, torch::kBool).triu(1);
    s = s.masked_fill(mask, -INFINITY);
    torch::Tensor o = torch::softmax(s, -1).matmul(v).transpose(0, 1).reshape({T, H * D});
    x = x + o.matmul(L.wo.t());
    torch::Tensor f = norm(x, L.ffn_norm);
    x = x + (torch::silu(f.matmul(L.w_gate.t())) * f.matmul(L.w_up.t())).matmul(L.w_down.t());
  }
  return norm(x, w.final_norm).matmul(w.lm_head.t());  // [T, V]
}

torch::Tensor engine_logits(const Model& m, const torch::Tensor& ids, int64_t chunk) {
  FullMethod full;
  auto cache = full.make_state(m.shape());
  std::vector<torch::Tensor> rows;
  ForwardOptions fo;
  fo.all_logits = true;
  const int64_t T = ids.size(1);
  for (int64_t s = 0; s < T; s += chunk) {
    const int64_t t = std::min(chunk, T - s);
    rows.push_back(m.forward(ids.narrow(1, s, t), torch::arange(s, s + t), *cache, fo)[0]);
  }
  return torch::cat(rows, 0);  // [T, V]
}

struct Case {
  std::string arch;
  int64_t heads, kv_heads;
  bool tied;
  std::string rope;
};

class ForwardParity : public ::testing::TestWithParam<Case> {};

TEST_P(ForwardParity, EngineMatchesReferenceForEveryChunking) {
  const Case& pc = GetParam();
  ModelConfig c = tiny(pc.arch, pc.heads, pc.kv_heads, pc.tied);
  if (pc.rope == "llama3") {
    c.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 64};
  } else if (pc.rope == "linear") {
    c.rope_scaling = {"linear", 2.0, 1.0, 4.0, 8192};
  }
  Model m = Model::random(c, 7);
  torch::Tensor ids = torch::randint(0, c.vocab_size, {1, 37}, torch::kLong);
  torch::Tensor ref = reference_logits(m, ids);
  for (int64_t chunk : {37, 1, 5, 16}) {
    torch::Tensor got = engine_logits(m, ids, chunk);
    double err = (got - ref).abs().max().item<double>();
    EXPECT_LT(err, 1e-5) << pc.arch << " H=" << pc.heads << " Hkv=" << pc.kv_heads << " chunk=" << chunk;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Architectures, ForwardParity,
    ::testing::Values(Case{"LlamaForCausalLM", 4, 2, true, ""},        // GQA, tied
                      Case{"LlamaForCausalLM", 4, 1, false, ""},       // MQA
                      Case{"LlamaForCausalLM", 4, 4, false, "llama3"},  // MHA, Llama 3.1 RoPE
                      Case{"MistralForCausalLM", 4, 2, false, "linear"},
                      Case{"Qwen2ForCausalLM", 4, 2, true, ""},        // q/k/v bias
                      Case{"Qwen3ForCausalLM", 4, 2, true, ""}),       // q/k norm
    [](const ::testing::TestParamInfo<Case>& info) {
      const Case& c = info.param;
      std::string name = c.arch.substr(0, c.arch.find("For")) + "_H" + std::to_string(c.heads) + "_KV" +
                         std::to_string(c.kv_heads) + (c.tied ? "_tied" : "") + (c.rope.empty() ? "" : "_" + c.rope);
      return name;
    });

TEST(Model, SaveLoadRoundTripIsExact) {
  test::TempDir dir;
  for (const char* arch : {"Qwen2ForCausalLM", "Qwen3ForCausalLM", "LlamaForCausalLM"}) {
    ModelConfig c = tiny(arch, 4, 2, std::string(arch) != "LlamaForCausalLM");
    c.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 64};
    Model m = Model::random(c, 3);
    std::string path = dir.path(arch);
    m.save(path);
    Model back = Model::load(path);
    EXPECT_EQ(back.config().to_json(), m.config().to_json());
    torch::Tensor ids = torch::randint(0, c.vocab_size, {1, 9}, torch::kLong);
    EXPECT_TRUE(torch::equal(engine_logits(m, ids, 9), engine_logits(back, ids, 9))) << arch;
  }
}

TEST(Model, Llama3RopeScalingKeepsHighAndDividesLowFrequencies) {
  ModelConfig c = tiny("LlamaForCausalLM", 4, 4, false);
  c.head_dim = 128;
  c.rope_theta = 500000;
  torch::Tensor base = rope_inv_freq(c);
  c.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 8192};
  torch::Tensor scaled = rope_inv_freq(c);
  const double high_wl = 8192 / 4.0, low_wl = 8192 / 1.0;
  int kept = 0, divided = 0, blended = 0;
  for (int64_t i = 0; i < 64; ++i) {
    double f = base[i].item<double>(), g = scaled[i].item<double>(), wl = 2 * M_PI / f;
    if (wl < high_wl) {
      EXPECT_EQ(f, g);
      ++kept;
    } else if (wl > low_wl) {
      EXPECT_NEAR(g, f / 8.0, 1e-12 + 1e-6 * f);
      ++divided;
    } else {
      EXPECT_LT(g, f);
      EXPECT_GT(g, f / 8.0);
      ++blended;
    }
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
}

TEST(Model, ParameterCountMatchesTensors) {
  ModelConfig c = tiny("Qwen2ForCausalLM", 4, 2, false);
  Model m = Model::random(c, 1);
  int64_t n = m.weights().embed.numel() + m.weights().lm_head.numel() + m.weights().final_norm.numel();
  for (const auto& L : m.weights().layers)
    for (const auto* t : {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.bq, &L.bk, &L.bv, &L.ffn_norm,
                          &L.w_gate, &L.w_up, &L.w_down})
      n += t->defined() ? t->numel() : 0;
  EXPECT_EQ(c.n_params(), n);
}

}  // namespace
}  // namespace kvb
