#include "harness/model/config.h"

#include <filesystem>
#include <limits>

#include "common/check.h"
#include "common/error_text.h"
#include "common/json_reader.h"

namespace kvb {
namespace {

using nlohmann::json;

// bos_token_id / eos_token_id: an id, a list of ids, or null; each in [0, vocab_size).
std::vector<int64_t> read_ids(const JsonNode& obj, const char* key, int64_t vocab_size) {
  std::vector<int64_t> out;
  auto v = obj.find(key);
  if (!v) return out;
  if (v->is_array()) {
    if (v->size() > 64) v->fail("more than 64 token ids");
    return v->integers(0, vocab_size - 1);
  }
  if (!v->is_number()) {
    v->expected("a token id in [0, " + std::to_string(vocab_size - 1) + "] or a list of them");
  }
  return {v->integer(0, vocab_size - 1)};
}

// A string naming something kvbench implements: "<path>: \"x\" is not supported (a, b)".
std::string supported(const JsonNode& v, std::initializer_list<std::string_view> choices) {
  const std::string s = v.str();
  std::string list;
  for (auto c : choices) {
    if (s == c) return s;
    list += (list.empty() ? "" : ", ") + std::string(c);
  }
  v.fail(quote_input(s) + " is not supported (" + list + ")");
}

}  // namespace

ModelConfig parse_model_config(const json& j, const std::string& where) {
  const JsonNode root(j, where);
  root.object();
  ModelConfig c;
  const JsonNode archs = root.at("architectures");
  if (!archs.is_array() || archs.size() == 0) {
    archs.expected("a list with the model class name");
  }
  c.architecture = supported(
      archs[0], {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"});
  if (auto mt = root.find("model_type")) {
    c.model_type = supported(*mt, {"llama", "mistral", "qwen2", "qwen3"});
  }
  // The MLP is SiLU-gated; any other activation would run as SiLU and give wrong logits.
  if (auto act = root.find("hidden_act")) supported(*act, {"silu", "swish"});
  if (root.boolean("mlp_bias", false)) {
    root.at("mlp_bias").expected("false (MLP biases are not implemented)");
  }
  if (root.boolean("use_sliding_window", false)) {
    root.at("use_sliding_window").expected("false (sliding-window attention is not implemented)");
  }
  c.vocab_size = root.at("vocab_size").integer(1, kMaxVocab);
  c.hidden_size = root.at("hidden_size").integer(1, kMaxHidden);
  c.intermediate_size = root.at("intermediate_size").integer(1, kMaxIntermediate);
  c.n_layers = root.at("num_hidden_layers").integer(1, kMaxLayers);
  c.n_heads = root.at("num_attention_heads").integer(1, kMaxHeads);
  c.n_kv_heads = root.integer("num_key_value_heads", c.n_heads, 1, kMaxHeads);
  if (c.n_heads % c.n_kv_heads != 0) {
    root.at("num_key_value_heads")
        .fail(detail::concat("num_attention_heads (", c.n_heads,
                             ") is not a multiple of num_key_value_heads (", c.n_kv_heads, ")"));
  }
  if (auto hd = root.find("head_dim")) {
    c.head_dim = hd->integer(2, kMaxHeadDim);
    if (c.head_dim % 2 != 0) hd->expected("an even head_dim (RoPE rotates pairs)");
  } else {
    if (c.hidden_size % c.n_heads != 0) {
      root.at("hidden_size")
          .fail(detail::concat(c.hidden_size, " is not a multiple of num_attention_heads (",
                               c.n_heads, ") and there is no head_dim"));
    }
    c.head_dim = c.hidden_size / c.n_heads;
    if (c.head_dim < 2 || c.head_dim > kMaxHeadDim || c.head_dim % 2 != 0) {
      root.at("hidden_size")
          .fail(detail::concat("hidden_size / num_attention_heads = ", c.head_dim,
                               " is not an even head dimension in [2, ", kMaxHeadDim, "]"));
    }
  }
  c.max_position = root.integer("max_position_embeddings", 2048, 1, kMaxPosition);
  c.rms_eps = root.number("rms_norm_eps", 1e-6, 1e-12, 1.0);
  c.rope_theta = root.number("rope_theta", 10000.0, 1.0, 1e12);
  c.tie_word_embeddings = root.boolean("tie_word_embeddings", false);
  c.qk_norm = c.architecture == "Qwen3ForCausalLM";
  // Qwen2 always has q/k/v biases, whatever attention_bias says (as in HF's Qwen2Attention).
  const bool attention_bias = root.boolean("attention_bias", false);
  c.attention_bias = c.architecture == "Qwen2ForCausalLM" || attention_bias;
  c.sliding_window = root.integer("sliding_window", 0, 0, std::numeric_limits<int32_t>::max());
  if (auto rs = root.find("rope_scaling")) {
    rs->object();
    std::string type;
    if (auto t = rs->find("rope_type")) {
      type = supported(*t, {"default", "linear", "llama3"});
    } else {
      type = supported(rs->at("type"), {"default", "linear", "llama3"});
    }
    if (type != "default") {
      c.rope_scaling.type = type;
      c.rope_scaling.factor = rs->number("factor", 1.0, 1e-6, 1e6);
      if (type == "llama3") {
        c.rope_scaling.low_freq_factor = rs->number("low_freq_factor", 1.0, 1e-6, 1e6);
        c.rope_scaling.high_freq_factor = rs->number("high_freq_factor", 4.0, 1e-6, 1e6);
        if (!(c.rope_scaling.low_freq_factor < c.rope_scaling.high_freq_factor)) {
          rs->fail(detail::concat("low_freq_factor (", c.rope_scaling.low_freq_factor,
                                  ") must be below high_freq_factor (",
                                  c.rope_scaling.high_freq_factor, ")"));
        }
        c.rope_scaling.original_max_position =
            rs->integer("original_max_position_embeddings", 8192, 1, kMaxPosition);
      }
    }
  }
  c.bos_ids = read_ids(root, "bos_token_id", c.vocab_size);
  c.eos_ids = read_ids(root, "eos_token_id", c.vocab_size);
  c.torch_dtype = root.str("torch_dtype", "float32");
  return c;
}

ModelConfig load_model_config(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  KVB_INPUT_CHECK(fs::is_directory(model_dir, ec), model_dir, ": not a model directory");
  std::string path = (fs::path(model_dir) / "config.json").string();
  KVB_INPUT_CHECK(fs::exists(path, ec), path,
                  ": missing (an HF model directory needs config.json)");
  ModelConfig c = parse_model_config(read_json_input(path), path);
  std::string gen = (fs::path(model_dir) / "generation_config.json").string();
  if (fs::exists(gen, ec)) {
    const json g = read_json_input(gen);
    const JsonNode node(g, gen);
    node.object();
    auto eos = read_ids(node, "eos_token_id", c.vocab_size);
    if (!eos.empty()) c.eos_ids = eos;
    auto bos = read_ids(node, "bos_token_id", c.vocab_size);
    if (!bos.empty()) c.bos_ids = bos;
  }
  return c;
}

int64_t ModelConfig::n_params() const {
  int64_t d = hidden_size, q = n_heads * head_dim, kv = n_kv_heads * head_dim;
  int64_t attn = d * q + 2 * d * kv + q * d + (attention_bias ? q + 2 * kv : 0) +
                 (qk_norm ? 2 * head_dim : 0);
  int64_t mlp = 3 * d * intermediate_size;
  int64_t per_layer = attn + mlp + 2 * d;
  int64_t emb = vocab_size * d * (tie_word_embeddings ? 1 : 2);
  return n_layers * per_layer + emb + d;
}

nlohmann::json ModelConfig::to_json() const {
  json j;
  j["architectures"] = {architecture};
  j["model_type"] = model_type.empty() ? std::string("llama") : model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = n_layers;
  j["num_attention_heads"] = n_heads;
  j["num_key_value_heads"] = n_kv_heads;
  j["head_dim"] = head_dim;
  j["max_position_embeddings"] = max_position;
  j["rms_norm_eps"] = rms_eps;
  j["rope_theta"] = rope_theta;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["attention_bias"] = attention_bias;
  j["torch_dtype"] = torch_dtype.empty() ? std::string("float32") : torch_dtype;
  if (!rope_scaling.type.empty()) {
    json rs{{"rope_type", rope_scaling.type}, {"factor", rope_scaling.factor}};
    if (rope_scaling.type == "llama3") {
      rs["low_freq_factor"] = rope_scaling.low_freq_factor;
      rs["high_freq_factor"] = rope_scaling.high_freq_factor;
      rs["original_max_position_embeddings"] = rope_scaling.original_max_position;
    }
    j["rope_scaling"] = rs;
  }
  if (bos_ids.size() == 1) j["bos_token_id"] = bos_ids[0];
  if (eos_ids.size() == 1) j["eos_token_id"] = eos_ids[0];
  if (eos_ids.size() > 1) j["eos_token_id"] = eos_ids;
  return j;
}

}  // namespace kvb
