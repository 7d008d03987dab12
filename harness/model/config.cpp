#include "harness/model/config.h"

#include <filesystem>

#include "common/check.h"
#include "common/json_io.h"

namespace kvb {
namespace {

using nlohmann::json;

int64_t get_int(const json& j, const char* key, const std::string& where, int64_t def = -1) {
  if (!j.contains(key) || j[key].is_null()) {
    KVB_INPUT_CHECK(def >= 0, where, ": missing required field '", key, "'");
    return def;
  }
  KVB_INPUT_CHECK(j[key].is_number_integer(), where, ": field '", key, "' must be an integer, got ",
                  j[key].dump());
  int64_t v = j[key].get<int64_t>();
  KVB_INPUT_CHECK(v >= 0, where, ": field '", key, "' must be non-negative, got ", v);
  return v;
}

double get_num(const json& j, const char* key, const std::string& where, double def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  KVB_INPUT_CHECK(j[key].is_number(), where, ": field '", key, "' must be a number, got ",
                  j[key].dump());
  return j[key].get<double>();
}

bool get_bool(const json& j, const char* key, const std::string& where, bool def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  KVB_INPUT_CHECK(j[key].is_boolean(), where, ": field '", key, "' must be true or false, got ",
                  j[key].dump());
  return j[key].get<bool>();
}

std::vector<int64_t> get_ids(const json& j, const char* key, const std::string& where) {
  std::vector<int64_t> out;
  if (!j.contains(key) || j[key].is_null()) return out;
  const json& v = j[key];
  if (v.is_number_integer()) return {v.get<int64_t>()};
  KVB_INPUT_CHECK(v.is_array(), where, ": field '", key, "' must be an integer or a list");
  for (const auto& e : v) {
    KVB_INPUT_CHECK(e.is_number_integer(), where, ": field '", key, "' holds a non-integer");
    out.push_back(e.get<int64_t>());
  }
  return out;
}

}  // namespace

ModelConfig parse_model_config(const json& j, const std::string& where) {
  KVB_INPUT_CHECK(j.is_object(), where, ": expected a JSON object");
  ModelConfig c;
  KVB_INPUT_CHECK(j.contains("architectures") && j["architectures"].is_array() &&
                      !j["architectures"].empty() && j["architectures"][0].is_string(),
                  where, ": missing 'architectures' (a list with the model class name)");
  c.architecture = j["architectures"][0].get<std::string>();
  static const char* kKnown[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                                 "Qwen3ForCausalLM"};
  bool known = false;
  for (const char* k : kKnown) known |= c.architecture == k;
  KVB_INPUT_CHECK(known, where, ": architecture '", c.architecture,
                  "' is not supported (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, "
                  "Qwen3ForCausalLM)");
  c.model_type = j.value("model_type", std::string());
  c.vocab_size = get_int(j, "vocab_size", where);
  c.hidden_size = get_int(j, "hidden_size", where);
  c.intermediate_size = get_int(j, "intermediate_size", where);
  c.n_layers = get_int(j, "num_hidden_layers", where);
  c.n_heads = get_int(j, "num_attention_heads", where);
  c.n_kv_heads = get_int(j, "num_key_value_heads", where, c.n_heads);
  KVB_INPUT_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.intermediate_size > 0 &&
                      c.n_layers > 0 && c.n_heads > 0 && c.n_kv_heads > 0,
                  where, ": sizes must be positive");
  KVB_INPUT_CHECK(c.n_heads % c.n_kv_heads == 0, where, ": num_attention_heads (", c.n_heads,
                  ") is not a multiple of num_key_value_heads (", c.n_kv_heads, ")");
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    c.head_dim = get_int(j, "head_dim", where);
  } else {
    KVB_INPUT_CHECK(c.hidden_size % c.n_heads == 0, where, ": hidden_size (", c.hidden_size,
                    ") is not a multiple of num_attention_heads (", c.n_heads, ")");
    c.head_dim = c.hidden_size / c.n_heads;
  }
  KVB_INPUT_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0, where, ": head_dim must be positive and even, got ",
                  c.head_dim);
  c.max_position = get_int(j, "max_position_embeddings", where, 2048);
  c.rms_eps = get_num(j, "rms_norm_eps", where, 1e-6);
  c.rope_theta = get_num(j, "rope_theta", where, 10000.0);
  KVB_INPUT_CHECK(c.rms_eps > 0 && c.rope_theta > 0, where, ": rms_norm_eps and rope_theta must be positive");
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", where, false);
  c.qk_norm = c.architecture == "Qwen3ForCausalLM";
  c.attention_bias = c.architecture == "Qwen2ForCausalLM" || get_bool(j, "attention_bias", where, false);
  if (j.contains("sliding_window") && j["sliding_window"].is_number_integer())
    c.sliding_window = j["sliding_window"].get<int64_t>();
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    const json& rs = j["rope_scaling"];
    KVB_INPUT_CHECK(rs.is_object(), where, ": rope_scaling must be an object");
    std::string type = rs.value("rope_type", rs.value("type", std::string()));
    KVB_INPUT_CHECK(type == "llama3" || type == "linear" || type == "default", where,
                    ": rope_scaling type '", type, "' is not supported (llama3, linear)");
    if (type != "default") {
      c.rope_scaling.type = type;
      c.rope_scaling.factor = get_num(rs, "factor", where, 1.0);
      KVB_INPUT_CHECK(c.rope_scaling.factor > 0, where, ": rope_scaling.factor must be positive");
      c.rope_scaling.low_freq_factor = get_num(rs, "low_freq_factor", where, 1.0);
      c.rope_scaling.high_freq_factor = get_num(rs, "high_freq_factor", where, 4.0);
      c.rope_scaling.original_max_position =
          get_int(rs, "original_max_position_embeddings", where, 8192);
    }
  }
  c.bos_ids = get_ids(j, "bos_token_id", where);
  c.eos_ids = get_ids(j, "eos_token_id", where);
  c.torch_dtype = j.value("torch_dtype", std::string("float32"));
  return c;
}

ModelConfig load_model_config(const std::string& model_dir) {
  namespace fs = std::filesystem;
  KVB_INPUT_CHECK(fs::is_directory(model_dir), model_dir, ": not a model directory");
  std::string path = (fs::path(model_dir) / "config.json").string();
  KVB_INPUT_CHECK(fs::exists(path), path, ": missing (an HF model directory needs config.json)");
  ModelConfig c = parse_model_config(read_json_file(path), path);
  std::string gen = (fs::path(model_dir) / "generation_config.json").string();
  if (fs::exists(gen)) {
    json g = read_json_file(gen);
    KVB_INPUT_CHECK(g.is_object(), gen, ": expected a JSON object");
    auto eos = get_ids(g, "eos_token_id", gen);
    if (!eos.empty()) c.eos_ids = eos;
    auto bos = get_ids(g, "bos_token_id", gen);
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
