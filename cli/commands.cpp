#include "cli/commands.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include "datasets/mixture.h"
#include "common/check.h"
#include "common/dtype.h"
#include "common/json_io.h"
#include "harness/engine/generate.h"
#include "harness/model/llama2c.h"
#include "harness/model/model.h"
#include "harness/tokenizer/tokenizer.h"
#include "methods/registry.h"

namespace kvb::cli {
namespace fs = std::filesystem;

namespace {


std::string human_bytes(double b) {
  char buf[64];
  if (b >= 1 << 20) std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1 << 20));
  else if (b >= 1 << 10) std::snprintf(buf, sizeof buf, "%.2f KiB", b / (1 << 10));
  else std::snprintf(buf, sizeof buf, "%.0f B", b);
  return buf;
}

}  // namespace

int run_generate(const GenerateArgs& a) {
  if (a.threads > 0) at::set_num_threads(a.threads);
  const torch::ScalarType dtype = parse_dtype(a.dtype, "--dtype");
  // Validate the spec before any heavy work; `full` and dense storage hold the compute dtype.
  auto method = make_method(a.method, dtype);
  torch::Device device(torch::kCPU);
  if (a.device == "cuda") {
    KVB_INPUT_CHECK(torch::cuda::is_available(), "--device cuda: this libtorch has no CUDA device");
    device = torch::Device(torch::kCUDA);
  } else {
    KVB_INPUT_CHECK(a.device == "cpu", "--device '", a.device, "': expected cpu or cuda");
  }
  try {  // libtorch 1.13 on CPU has no fp16 matmul: say so before loading anything
    torch::matmul(torch::ones({2, 2}, torch::TensorOptions().dtype(dtype).device(device)),
                  torch::ones({2, 2}, torch::TensorOptions().dtype(dtype).device(device)));
  } catch (const c10::Error&) {
    throw InputError("--dtype " + a.dtype + ": this libtorch has no matmul for it on " + a.device +
                     " (use fp32 or bf16)");
  }
  Model model = Model::load(a.model_dir, dtype, device);
  // Checked against the model's config.json there: every id it can produce < vocab_size.
  std::string tok_path = (fs::path(a.model_dir) / "tokenizer.json").string();
  auto tok = load_tokenizer(tok_path);
  std::string prompt = a.prompt_file.empty() ? a.prompt : read_file(a.prompt_file);
  std::vector<int32_t> ids32 = tok->encode(prompt, true);
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  KVB_INPUT_CHECK(!ids.empty(), tok_path, ": the prompt encodes to no tokens and the tokenizer adds no BOS");
  KVB_INPUT_CHECK(static_cast<int64_t>(ids.size()) + a.max_new_tokens <= model.config().max_position * 64,
                  "--max-new-tokens: far past the model's context");

  GenerateOptions g;
  g.max_new_tokens = a.max_new_tokens;
  g.sampling = {a.temperature, a.top_p, a.seed};
  g.stop_ids = model.config().eos_ids;
  g.prefill_chunk = a.prefill_chunk;
  std::ofstream logits_out;
  if (!a.dump_logits.empty()) {
    logits_out.open(a.dump_logits, std::ios::binary | std::ios::trunc);
    KVB_INPUT_CHECK(logits_out.good(), a.dump_logits, ": cannot write");
    g.on_logits = [&](const torch::Tensor& row) {
      torch::Tensor r = row.to(torch::kCPU, torch::kFloat32).contiguous();
      logits_out.write(reinterpret_cast<const char*>(r.data_ptr<float>()),
                       static_cast<std::streamsize>(r.numel() * 4));
    };
  }
  auto cache = method->make_state(model.shape());
  GenerateResult r = generate(model, *cache, ids, g);
  // Decode prompt and continuation together: SentencePiece-style decoders strip the first
  // leading space, so decoding the continuation alone would drop a word boundary.
  std::vector<int32_t> all32(ids.begin(), ids.end());
  all32.insert(all32.end(), r.tokens.begin(), r.tokens.end());
  const std::string text = tok->decode(all32, true);
  const std::string prompt_text = tok->decode(ids32, true);
  const std::string completion =
      text.compare(0, prompt_text.size(), prompt_text) == 0 ? text.substr(prompt_text.size()) : text;
  MemoryUse mem = cache->memory();
  const double n_prompt = static_cast<double>(ids.size());
  const double n_gen = static_cast<double>(r.tokens.size());
  if (a.json) {
    nlohmann::json j{{"prompt_tokens", ids},
                     {"tokens", r.tokens},
                     {"text", text},
                     {"completion", completion},
                     {"stopped", r.stopped},
                     {"method", method->spec()},
                     {"prefill_seconds", r.prefill_seconds},
                     {"decode_seconds", r.decode_seconds}};
    if (a.report_memory) {
      nlohmann::json layers = nlohmann::json::array();
      for (int l = 0; l < model.config().n_layers; ++l) {
        MemoryUse m = cache->memory(l);
        layers.push_back({{"layer", l}, {"payload_bytes", m.payload_bytes},
                          {"metadata_bytes", m.metadata_bytes}, {"tokens", m.tokens_seen}});
      }
      j["memory"] = {{"payload_bytes", mem.payload_bytes}, {"metadata_bytes", mem.metadata_bytes},
                     {"tokens", mem.tokens_seen},
                     {"bits_per_token", mem.tokens_seen ? 8.0 * (mem.payload_bytes + mem.metadata_bytes) / mem.tokens_seen : 0.0},
                     {"layers", layers}};
    }
    std::cout << j.dump() << "\n";
  } else {
    std::cout << (a.completion_only ? completion : text) << "\n" << std::flush;
    std::fprintf(stderr, "[kvbench] %s: %zu prompt tokens in %.3f s (%.1f tok/s), %zu new in %.3f s (%.1f tok/s)%s\n",
                 method->spec().c_str(), ids.size(), r.prefill_seconds, n_prompt / std::max(r.prefill_seconds, 1e-9),
                 r.tokens.size(), r.decode_seconds, n_gen / std::max(r.decode_seconds, 1e-9),
                 r.stopped ? ", stopped at EOS" : "");
    if (a.report_memory) {
      std::fprintf(stderr, "[kvbench] memory held by %s after %lld tokens:\n", method->spec().c_str(),
                   static_cast<long long>(mem.tokens_seen));
      std::fprintf(stderr, "  %-6s %14s %14s %14s\n", "layer", "payload", "metadata", "bits/token");
      for (int l = 0; l < model.config().n_layers; ++l) {
        MemoryUse m = cache->memory(l);
        double bpt = m.tokens_seen ? 8.0 * (m.payload_bytes + m.metadata_bytes) / m.tokens_seen : 0;
        std::fprintf(stderr, "  %-6d %14lld %14lld %14.1f\n", l, static_cast<long long>(m.payload_bytes),
                     static_cast<long long>(m.metadata_bytes), bpt);
      }
      double bpt = mem.tokens_seen ? 8.0 * (mem.payload_bytes + mem.metadata_bytes) / mem.tokens_seen : 0;
      std::fprintf(stderr, "  %-6s %14s %14s %14.1f\n", "total", human_bytes(mem.payload_bytes).c_str(),
                   human_bytes(mem.metadata_bytes).c_str(), bpt);
    }
  }
  return 0;
}

int run_tokenize(const TokenizeArgs& a) {
  KVB_INPUT_CHECK(a.text_given != !a.text_file.empty(), "tokenize: give exactly one of --text and --text-file");
  auto tok = load_tokenizer(a.tokenizer);
  std::string text = a.text_given ? a.text : read_file(a.text_file);
  std::vector<int32_t> ids = tok->encode(text, !a.no_special);
  std::cout << nlohmann::json(ids).dump() << "\n";
  return 0;
}

int run_info(const std::string& model_dir, bool json) {
  ModelConfig c = load_model_config(model_dir);
  nlohmann::ordered_json j{{"architecture", c.architecture},
                   {"parameters", c.n_params()},
                   {"layers", c.n_layers},
                   {"hidden_size", c.hidden_size},
                   {"intermediate_size", c.intermediate_size},
                   {"heads", c.n_heads},
                   {"kv_heads", c.n_kv_heads},
                   {"head_dim", c.head_dim},
                   {"vocab_size", c.vocab_size},
                   {"context_length", c.max_position},
                   {"rope_theta", c.rope_theta},
                   {"rope_scaling", c.rope_scaling.type.empty() ? "none" : c.rope_scaling.type},
                   {"tied_embeddings", c.tie_word_embeddings},
                   {"kv_cache_bytes_per_token_fp16", c.kv_bytes_per_token_fp16()}};
  if (json) {
    std::cout << j.dump(2) << "\n";
  } else {
    for (auto& [k, v] : j.items()) std::cout << k << ": " << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
  }
  return 0;
}

int run_import_llama2c(const std::string& checkpoint, const std::string& tokenizer,
                       const std::string& out_dir) {
  import_llama2c(checkpoint, tokenizer, out_dir);
  ModelConfig c = load_model_config(out_dir);
  std::cout << "imported " << checkpoint << " -> " << out_dir << " (" << c.n_params() << " parameters, "
            << c.n_layers << " layers, " << c.n_heads << " heads, " << c.n_kv_heads << " KV heads)\n";
  return 0;
}

int run_mixture_doc(const std::string& task, int64_t bytes, double depth, uint64_t seed,
                    bool whole, bool kv_ask_by_key, const std::string& out) {
  std::vector<MixTask> only;
  if (!task.empty()) {
    const auto t = parse_mix_task(task);
    KVB_INPUT_CHECK(t.has_value(), "--task: unknown task '", task,
                    "' (", mix_task_names(), ")");
    only.push_back(*t);
  }
  KVB_INPUT_CHECK(depth < 0 || !only.empty(), "--depth needs --task");
  MixtureWeights w;
  w.kv_ask_by_key = kv_ask_by_key;
  const MixDocument doc = make_mix_document(bytes, seed, w, only, depth);
  std::string text = doc.text;
  if (!whole && !doc.answers.empty()) {
    int64_t first = static_cast<int64_t>(text.size());
    for (const AnswerSpan& a : doc.answers) first = std::min(first, a.begin);
    text.resize(static_cast<size_t>(first));
  }
  if (out.empty()) {
    std::fwrite(text.data(), 1, text.size(), stdout);
  } else {
    write_file(out, text);
  }
  return 0;
}

}  // namespace kvb::cli
