// Writes the binary seeds of the fuzz targets with the project's own writers:
//   data/tiny-model/         config.json of a tiny random Llama (the fixed model of
//                            fuzz_safetensors) and its weights in two shards (the model of
//                            fuzz_safetensors_index)
//   corpus/fuzz_safetensors/ that model in fp32 and bf16, a tiny Qwen3 (biases, q/k norms,
//                            untied head), a file of every dtype with metadata, an empty one
//   corpus/fuzz_safetensors_index/  the index
// Usage: make_seeds <tests/fuzz directory> (build-fuzz target kvb_fuzz_seeds; not part of
// kvb_fuzz: the outputs are committed).
#include <torch/types.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/json_io.h"
#include "harness/model/model.h"
#include "harness/model/safetensors.h"
#include "harness/model/weights.h"

namespace fs = std::filesystem;

namespace {

kvb::ModelConfig tiny_config() {
  kvb::ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 16;
  c.hidden_size = 8;
  c.intermediate_size = 16;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 4;
  c.max_position = 4096;
  c.rms_eps = 1e-5;
  c.rope_theta = 10000;
  c.tie_word_embeddings = true;
  c.bos_ids = {1};
  c.eos_ids = {2};
  c.torch_dtype = "float32";
  return c;
}

void copy_seed(const fs::path& from, const fs::path& to) {
  fs::create_directories(to.parent_path());
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds <tests/fuzz directory>\n");
    return 2;
  }
  const fs::path root = argv[1];
  const fs::path model = root / "data/tiny-model";
  const fs::path corpus = root / "corpus";
  fs::create_directories(model);

  const kvb::ModelConfig c = tiny_config();
  kvb::Model::random(c, 1).save(model.string());
  copy_seed(model / "model.safetensors", corpus / "fuzz_safetensors/tiny-fp32.safetensors");

  // The same weights in two shards, split by tensor name, and their index.
  {
    const kvb::SafetensorsFile f((model / "model.safetensors").string());
    std::vector<kvb::StWriteTensor> shard[2];
    nlohmann::json map = nlohmann::json::object();
    size_t total = 0, i = 0;
    for (const kvb::StTensorInfo& t : f.tensors()) {
      const int s = i++ < f.tensors().size() / 2 ? 0 : 1;
      shard[s].push_back({t.name, t.dtype, t.shape, f.data(t)});
      const std::string file =
          s == 0 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
      map[t.name] = file;
      total += t.end - t.begin;
    }
    kvb::write_safetensors((model / "model-00001-of-00002.safetensors").string(), shard[0]);
    kvb::write_safetensors((model / "model-00002-of-00002.safetensors").string(), shard[1]);
    const nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", map}};
    fs::create_directories(corpus / "fuzz_safetensors_index");
    kvb::write_file((corpus / "fuzz_safetensors_index/index.json").string(), index.dump(2) + "\n");
  }
  fs::remove(model / "model.safetensors");  // the shards hold it; fuzz_safetensors writes its own

  const fs::path tmp = fs::temp_directory_path() / "kvb-make-seeds";
  fs::remove_all(tmp);
  kvb::Model::random(c, 2, torch::kBFloat16).save((tmp / "bf16").string());
  copy_seed(tmp / "bf16/model.safetensors", corpus / "fuzz_safetensors/tiny-bf16.safetensors");

  kvb::ModelConfig q = c;
  q.architecture = "Qwen3ForCausalLM";
  q.model_type = "qwen3";
  q.attention_bias = true;
  q.qk_norm = true;
  q.tie_word_embeddings = false;
  kvb::Model::random(q, 3).save((tmp / "qwen3").string());
  copy_seed(tmp / "qwen3/model.safetensors", corpus / "fuzz_safetensors/tiny-qwen3.safetensors");

  // One small tensor of each dtype save_weights writes, with metadata.
  std::vector<std::pair<std::string, torch::Tensor>> all;
  for (auto [name, dt] :
       std::vector<std::pair<std::string, torch::ScalarType>>{{"f64", torch::kFloat64},
                                                              {"f16", torch::kFloat16},
                                                              {"bf16", torch::kBFloat16},
                                                              {"i8", torch::kInt8},
                                                              {"u8", torch::kUInt8},
                                                              {"i16", torch::kInt16},
                                                              {"i32", torch::kInt32},
                                                              {"i64", torch::kInt64},
                                                              {"bool", torch::kBool}})
    all.emplace_back(name, torch::arange(6).reshape({2, 3}).to(dt));
  all.emplace_back("scalar", torch::tensor(1.5f).reshape({}));
  all.emplace_back("empty", torch::zeros({0, 4}));
  kvb::save_weights((corpus / "fuzz_safetensors/dtypes.safetensors").string(), all,
                    {{"format", "pt"}, {"note", "fuzz seed"}});
  kvb::save_weights((corpus / "fuzz_safetensors/no-tensors.safetensors").string(), {});
  fs::remove_all(tmp);
  std::printf("seeds written under %s\n", root.c_str());
  return 0;
}
