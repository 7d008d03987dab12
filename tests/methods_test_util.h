// Helpers for the method tests: synthetic K/V streams driven straight into a cache state (the
// engine's call order without a model), and a tiny random model for logits comparisons.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

#include "harness/model/model.h"
#include "methods/kv_method.h"

namespace kvb::test {

inline ModelShape method_shape(int64_t layers, int64_t hq, int64_t hkv, int64_t d) {
  ModelShape s;
  s.n_layers = layers;
  s.n_head_q = hq;
  s.n_head_kv = hkv;
  s.head_dim = d;
  s.max_position = 1 << 16;
  return s;
}

// Every layer's appended keys/values in append order, so tests can look up what a slot holds.
struct SyntheticStream {
  ModelShape shape;
  torch::Generator gen;
  std::vector<torch::Tensor> k, v;  // per layer [1, H_kv, N, D]
  int64_t n = 0;

  SyntheticStream(const ModelShape& s, uint64_t seed)
      : shape(s), gen(at::make_generator<at::CPUGeneratorImpl>(seed)), k(static_cast<size_t>(s.n_layers)),
        v(static_cast<size_t>(s.n_layers)) {}

  // Appends T tokens to every layer in the engine's order (view, append, observe); when the
  // state wants attention it gets random causal softmax weights of the right shape.
  void feed(KVCacheState& st, int64_t t) {
    const int64_t hq = shape.n_head_q, hkv = shape.n_head_kv, d = shape.head_dim;
    torch::Tensor pos = torch::arange(n, n + t, torch::kLong);
    for (int l = 0; l < shape.n_layers; ++l) {
      const int64_t s = st.view(l).slots();
      torch::Tensor kk = torch::randn({1, hkv, t, d}, gen), vv = torch::randn({1, hkv, t, d}, gen);
      torch::Tensor q = torch::randn({1, hq, t, d}, gen);
      st.append(l, KVAppend{kk, kk, vv, pos, q});
      k[l] = k[l].defined() ? torch::cat({k[l], kk}, 2) : kk;
      v[l] = v[l].defined() ? torch::cat({v[l], vv}, 2) : vv;
      if (st.wants_attention(l)) {
        torch::Tensor logits = torch::randn({1, hq, t, s + t}, gen);
        torch::Tensor mask = torch::ones({t, t}, torch::kBool).triu(1);
        logits.narrow(3, s, t).masked_fill_(mask, -std::numeric_limits<float>::infinity());
        st.observe(l, torch::softmax(logits, -1));
      }
    }
    n += t;
  }

  void feed_chunked(KVCacheState& st, int64_t total, int64_t chunk) {
    for (int64_t done = 0; done < total; done += chunk) feed(st, std::min(chunk, total - done));
  }
};

// The source positions a state's head holds in a layer (batch row 0).
inline std::set<int64_t> held_positions(const KVCacheState& st, int layer, int64_t head) {
  KVView v = st.view(layer);
  std::set<int64_t> s;
  for (int64_t i = 0; i < v.slots(); ++i) s.insert(v.pos[0][head][i].item<int64_t>());
  return s;
}

inline ModelConfig tiny_model_config() {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 97;
  c.hidden_size = 48;
  c.intermediate_size = 80;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.max_position = 128;
  c.rms_eps = 1e-6;
  c.rope_theta = 10000;
  c.tie_word_embeddings = true;
  return c;
}

// Logits [N, V] for every input: the prompt in chunks, end_prefill(), then the rest one token
// at a time (fed, not sampled, so every method sees the same inputs).
inline torch::Tensor run_logits(const Model& m, KVCacheState& st, const torch::Tensor& ids,  // [1, N]
                                int64_t prompt, int64_t chunk) {
  c10::InferenceMode guard;
  ForwardOptions fo;
  fo.all_logits = true;
  std::vector<torch::Tensor> rows;
  for (int64_t s = 0; s < prompt; s += chunk) {
    const int64_t t = std::min(chunk, prompt - s);
    rows.push_back(m.forward(ids.narrow(1, s, t), torch::arange(s, s + t), st, fo)[0]);
  }
  st.end_prefill();
  for (int64_t i = prompt; i < ids.size(1); ++i)
    rows.push_back(m.forward(ids.narrow(1, i, 1), torch::arange(i, i + 1), st, fo)[0]);
  return torch::cat(rows, 0);
}

}  // namespace kvb::test
