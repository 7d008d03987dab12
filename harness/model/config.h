// Model hyper-parameters read from an HF config.json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvb {

struct RopeScaling {
  std::string type;  // "" (none), "linear", "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_max_position = 8192;  // llama3
};

struct ModelConfig {
  std::string architecture;  // LlamaForCausalLM | MistralForCausalLM | Qwen2ForCausalLM | Qwen3ForCausalLM
  std::string model_type;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position = 0;
  double rms_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections carry a bias (Qwen2)
  bool qk_norm = false;         // RMSNorm on q and k per head before RoPE (Qwen3)
  int64_t sliding_window = 0;   // informational (Mistral); 0 = none
  std::vector<int64_t> bos_ids, eos_ids;  // from config.json / generation_config.json
  std::string torch_dtype;      // as stored ("float32", "bfloat16", ...)

  // Parameters counted from the shapes (embeddings included once when tied).
  int64_t n_params() const;
  // KV-cache bytes one token costs at fp16 across all layers: 2 * L * H_kv * D * 2.
  int64_t kv_bytes_per_token_fp16() const { return 2 * n_layers * n_kv_heads * head_dim * 2; }
  nlohmann::json to_json() const;  // HF config.json
};

// Parses an HF config.json (and generation_config.json beside it when present).
// Throws kvb::InputError "<path>: <problem>" on anything missing or inconsistent.
ModelConfig load_model_config(const std::string& model_dir);
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& where);

}  // namespace kvb
