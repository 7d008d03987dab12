// Model hyper-parameters read from an HF config.json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvb {

// Limits on a model's config.json (and on a llama2.c checkpoint header, which becomes one). Each
// is refused with one kvb::InputError line naming the file and the field, before anything is
// allocated from it:
//
//   field                          allowed                       why
//   vocab_size                     [1, 1048576] (2^20)           kMaxVocab
//   hidden_size                    [1, 65536]                    kMaxHidden
//   intermediate_size              [1, 262144] (2^18)            kMaxIntermediate
//   num_hidden_layers              [1, 1024]                     kMaxLayers
//   num_attention_heads            [1, 1024]                     kMaxHeads
//   num_key_value_heads            [1, 1024], divides num_attention_heads
//   head_dim (or hidden/heads)     [2, 1024], even               kMaxHeadDim; when absent,
//                                                                hidden_size % heads == 0
//   max_position_embeddings        [1, 16777216] (2^24)          kMaxPosition
//   rope_theta                     [1, 1e12]
//   rms_norm_eps                   [1e-12, 1]
//   rope_scaling                   null, or type default | linear | llama3 (others refused);
//     factor                       [1e-6, 1e6]
//     low_freq_factor < high_freq_factor, each in [1e-6, 1e6] (llama3)
//     original_max_position_embeddings [1, 2^24] (llama3)
//   bos_token_id / eos_token_id    an id or a list of at most 64, each in [0, vocab_size)
//   architectures                  [LlamaForCausalLM | MistralForCausalLM | Qwen2ForCausalLM |
//                                   Qwen3ForCausalLM, ...]: the first one is used
//   model_type                     llama | mistral | qwen2 | qwen3 (or absent)
//   hidden_act                     silu (or its alias swish), or absent: the MLP is SiLU-gated
//   mlp_bias                       false or absent (MLP biases are not implemented)
//   use_sliding_window             false or absent (Qwen2's sliding-window layers are not
//                                  implemented)
//   tie_word_embeddings, attention_bias   booleans
//   sliding_window                 null or [0, 2^31 - 1] (informational: attention is full)
//
// With these, every tensor the config implies has fewer than 2^40 elements and every product
// the model computes from the sizes fits in int64. The weights themselves are bounded by the
// safetensors files they are read from: a tensor's shape is compared with the config's before
// it is allocated.
inline constexpr int64_t kMaxVocab = int64_t{1} << 20;
inline constexpr int64_t kMaxHidden = 65536;
inline constexpr int64_t kMaxIntermediate = int64_t{1} << 18;
inline constexpr int64_t kMaxLayers = 1024;
inline constexpr int64_t kMaxHeads = 1024;
inline constexpr int64_t kMaxHeadDim = 1024;
inline constexpr int64_t kMaxPosition = int64_t{1} << 24;

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
// Throws kvb::InputError "<path>: <field>: <problem>" on anything missing, mistyped, out of the
// limits above or inconsistent.
ModelConfig load_model_config(const std::string& model_dir);
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& where);

}  // namespace kvb
