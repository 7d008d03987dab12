// A decoder-only transformer (Llama / Mistral / Qwen2 / Qwen3 family) held as libtorch tensors,
// with attention computed explicitly so that KV-cache methods see keys, values, queries and
// attention weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "harness/model/config.h"
#include "methods/kv_method.h"

namespace kvb {

struct LayerWeights {
  torch::Tensor attn_norm;              // [d]
  torch::Tensor wq, wk, wv, wo;         // [H_q*D, d], [H_kv*D, d], [H_kv*D, d], [d, H_q*D]
  torch::Tensor bq, bk, bv;             // [H_q*D], [H_kv*D], [H_kv*D] or undefined (Qwen2 only)
  torch::Tensor q_norm, k_norm;         // [D] or undefined (Qwen3 only)
  torch::Tensor ffn_norm;               // [d]
  torch::Tensor w_gate, w_up, w_down;   // [ff, d], [ff, d], [d, ff]
};

struct ModelWeights {
  torch::Tensor embed;       // [V, d]
  std::vector<LayerWeights> layers;
  torch::Tensor final_norm;  // [d]
  torch::Tensor lm_head;     // [V, d] (the embedding when tied)
};

struct ForwardOptions {
  bool all_logits = false;  // logits for every position of the chunk, else only the last one
};

class Model {
 public:
  Model(ModelConfig config, ModelWeights weights, torch::ScalarType dtype, torch::Device device);

  // Loads an HF directory (config.json + safetensors). dtype: compute dtype of the weights.
  static Model load(const std::string& dir, torch::ScalarType dtype = torch::kFloat32,
                    torch::Device device = torch::kCPU);
  // Random weights (normal, std 0.02; norms 1) for benchmarks and tests; deterministic in seed.
  static Model random(const ModelConfig& config, uint64_t seed,
                      torch::ScalarType dtype = torch::kFloat32, torch::Device device = torch::kCPU);
  // Writes config.json + model.safetensors (fp32 unless the weights are bf16/fp16).
  void save(const std::string& dir) const;

  // One chunk of T tokens at absolute positions pos[0..T) through every layer; the cache is read
  // through `cache.view()` and extended with `cache.append()`. Returns logits [B, T, V] (or
  // [B, 1, V] unless opt.all_logits), in fp32.
  torch::Tensor forward(const torch::Tensor& ids,  // [B, T] int64
                        const torch::Tensor& pos,  // [T] int64
                        KVCacheState& cache, const ForwardOptions& opt = {}) const;

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  ModelWeights& mutable_weights() { return weights_; }
  ModelShape shape() const;
  torch::ScalarType dtype() const { return dtype_; }
  torch::Device device() const { return device_; }

 private:
  torch::Tensor attention(int layer, const torch::Tensor& x, const torch::Tensor& pos,
                          KVCacheState& cache) const;
  torch::Tensor mlp(int layer, const torch::Tensor& x) const;
  void ensure_rope(int64_t max_pos) const;  // extends cos/sin caches to cover positions < max_pos

  ModelConfig config_;
  ModelWeights weights_;
  torch::ScalarType dtype_;
  torch::Device device_;
  mutable torch::Tensor cos_cache_, sin_cache_;  // [P, D] compute dtype
  torch::Tensor inv_freq_;                       // [D/2] fp32
};

// y = x W^T + b for x [..., in], W [out, in], b [out] or undefined.
torch::Tensor project(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);
// RMSNorm as HF computes it: x * rsqrt(mean(x^2) + eps) in fp32, then scaled by w.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps);
// Inverse frequencies [D/2] for the config's RoPE (theta, linear or llama3 scaling).
torch::Tensor rope_inv_freq(const ModelConfig& c);
// Applies rotate-half RoPE: x [B, H, T, D], cos/sin [T, D].
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

}  // namespace kvb
