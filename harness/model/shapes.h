// Named model shapes for benchmarks and tests (random weights are made on the fly).
#pragma once

#include "harness/model/config.h"

namespace kvb {

// SmolLM2-135M: 30 layers, hidden 576, 9 heads, 3 KV heads, intermediate 1536, vocab 49152, tied.
inline ModelConfig smollm2_135m_shape() {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 49152;
  c.hidden_size = 576;
  c.intermediate_size = 1536;
  c.n_layers = 30;
  c.n_heads = 9;
  c.n_kv_heads = 3;
  c.head_dim = 64;
  c.max_position = 8192;
  c.rms_eps = 1e-5;
  c.rope_theta = 100000.0;
  c.tie_word_embeddings = true;
  return c;
}

// FLOPs of one forward chunk of T tokens after S cached tokens, counting only useful work:
// the projections and MLP (2 * params), causal attention (QK^T and PV over S + the causal half
// of the chunk), and the LM head for `logit_rows` positions.
inline double forward_flops(const ModelConfig& c, int64_t T, int64_t S, int64_t logit_rows) {
  const double d = static_cast<double>(c.hidden_size);
  const double q = static_cast<double>(c.n_heads * c.head_dim);
  const double kv = static_cast<double>(c.n_kv_heads * c.head_dim);
  const double ff = static_cast<double>(c.intermediate_size);
  const double per_tok = 2.0 * (d * q + 2 * d * kv + q * d + 3 * d * ff);
  const double attended = static_cast<double>(T) * static_cast<double>(S) +
                          static_cast<double>(T) * static_cast<double>(T + 1) / 2.0;
  const double attn = 4.0 * q * attended;  // QK^T and PV: 2 FLOPs per multiply-add each
  return static_cast<double>(c.n_layers) * (per_tok * static_cast<double>(T) + attn) +
         2.0 * d * static_cast<double>(c.vocab_size) * static_cast<double>(logit_rows);
}

}  // namespace kvb
