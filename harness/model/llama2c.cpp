#include "harness/model/llama2c.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/check.h"
#include "common/json_io.h"
#include "harness/tokenizer/llama2c_tokenizer.h"

namespace kvb {
namespace {

// llama2.c rotates interleaved pairs (2i, 2i+1); HF rotates halves (i, i + D/2). Reorder the
// output rows of each head so that HF's layout computes the same thing: [H, D/2, 2, in] ->
// [H, 2, D/2, in].
torch::Tensor permute_rope_rows(const torch::Tensor& w, int64_t n_heads) {
  const int64_t out = w.size(0), in = w.size(1);
  return w.view({n_heads, out / n_heads / 2, 2, in}).transpose(1, 2).reshape({out, in}).contiguous();
}

}  // namespace

Model read_llama2c_checkpoint(const std::string& path) {
  // The header is checked against the limits of config.h and the file's size before the file is
  // read: a corrupt header must not make us read or allocate anything large.
  std::error_code ec;
  KVB_INPUT_CHECK(std::filesystem::is_regular_file(path, ec), path,
                  ": not a file (a llama2.c checkpoint .bin)");
  const auto file_size = static_cast<int64_t>(std::filesystem::file_size(path, ec));
  KVB_INPUT_CHECK(!ec, path, ": cannot read its size: ", ec.message());
  KVB_INPUT_CHECK(file_size >= 28, path, ": too short for a llama2.c header (", file_size,
                  " bytes, need 28)");
  int32_t h[7];
  {
    std::ifstream in(path, std::ios::binary);
    in.read(reinterpret_cast<char*>(h), sizeof(h));
    KVB_INPUT_CHECK(in.good(), path, ": cannot read the llama2.c header");
  }
  const int64_t dim = h[0], hidden = h[1], n_layers = h[2], n_heads = h[3], n_kv = h[4];
  const bool shared = h[5] > 0;
  const int64_t vocab = h[5] > 0 ? h[5] : -static_cast<int64_t>(h[5]);
  const int64_t seq_len = h[6];
  const auto in_range = [](int64_t v, int64_t hi) { return v >= 1 && v <= hi; };
  KVB_INPUT_CHECK(
      in_range(dim, kMaxHidden) && in_range(hidden, kMaxIntermediate) &&
          in_range(n_layers, kMaxLayers) && in_range(n_heads, kMaxHeads) &&
          in_range(n_kv, kMaxHeads) && in_range(vocab, kMaxVocab) &&
          in_range(seq_len, kMaxPosition),
      path, ": implausible llama2.c header (dim ", dim, ", hidden ", hidden, ", layers ", n_layers,
      ", heads ", n_heads, ", kv heads ", n_kv, ", vocab ", vocab, ", seq_len ", seq_len,
      "; limits: dim <= ", kMaxHidden, ", hidden <= ", kMaxIntermediate, ", layers <= ", kMaxLayers,
      ", heads <= ", kMaxHeads, ", vocab <= ", kMaxVocab, ", seq_len <= ", kMaxPosition, ")");
  KVB_INPUT_CHECK(dim % n_heads == 0 && n_heads % n_kv == 0 && (dim / n_heads) % 2 == 0 &&
                      dim / n_heads <= kMaxHeadDim,
                  path, ": heads do not divide dim (dim ", dim, ", heads ", n_heads, ", kv heads ",
                  n_kv, "; dim / heads must be an even head size <= ", kMaxHeadDim, ")");
  const int64_t hd = dim / n_heads, kv_dim = n_kv * hd;
  // Within the limits above every term is below 2^50: no overflow.
  const int64_t n_floats =
      vocab * dim +
      n_layers * (2 * dim + dim * dim + 2 * dim * kv_dim + dim * dim + 3 * dim * hidden) + dim +
      seq_len * hd + (shared ? 0 : vocab * dim);
  const int64_t expect = 28 + 4 * n_floats;
  KVB_INPUT_CHECK(file_size == expect, path, ": size ", file_size,
                  " bytes does not match its header (expected ", expect, ")");
  std::string bytes = read_file(path);
  KVB_INPUT_CHECK(static_cast<int64_t>(bytes.size()) == expect, path, ": size ", bytes.size(),
                  " bytes does not match its header (expected ", expect, ")");

  const float* p = reinterpret_cast<const float*>(bytes.data() + 28);
  auto take = [&](std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    torch::Tensor t = torch::empty(shape, torch::kFloat32);
    std::memcpy(t.data_ptr<float>(), p, static_cast<size_t>(n) * 4);
    p += n;
    return t;
  };
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = vocab;
  c.hidden_size = dim;
  c.intermediate_size = hidden;
  c.n_layers = n_layers;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv;
  c.head_dim = hd;
  c.max_position = seq_len;
  c.rms_eps = 1e-5;  // run.c rmsnorm
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = shared;
  c.bos_ids = {1};
  c.eos_ids = {2};
  c.torch_dtype = "float32";

  ModelWeights w;
  w.embed = take({vocab, dim});
  w.layers.resize(static_cast<size_t>(n_layers));
  for (auto& L : w.layers) L.attn_norm = take({dim});
  for (auto& L : w.layers) L.wq = permute_rope_rows(take({dim, dim}), n_heads);
  for (auto& L : w.layers) L.wk = permute_rope_rows(take({kv_dim, dim}), n_kv);
  for (auto& L : w.layers) L.wv = take({kv_dim, dim});
  for (auto& L : w.layers) L.wo = take({dim, dim});
  for (auto& L : w.layers) L.ffn_norm = take({dim});
  for (auto& L : w.layers) L.w_gate = take({hidden, dim});
  for (auto& L : w.layers) L.w_down = take({dim, hidden});
  for (auto& L : w.layers) L.w_up = take({hidden, dim});
  w.final_norm = take({dim});
  p += seq_len * hd;  // freq_cis_real and freq_cis_imag: RoPE tables we recompute
  w.lm_head = shared ? w.embed : take({vocab, dim});
  return Model(std::move(c), std::move(w), torch::kFloat32, torch::kCPU);
}

void import_llama2c(const std::string& checkpoint, const std::string& tokenizer,
                    const std::string& out_dir) {
  namespace fs = std::filesystem;
  Model m = read_llama2c_checkpoint(checkpoint);
  // Convert the tokenizer first so that a bad tokenizer leaves no half-written directory.
  nlohmann::json tok = llama2c_tokenizer_to_hf(tokenizer, static_cast<int>(m.config().vocab_size));
  fs::create_directories(out_dir);
  m.save(out_dir);
  // run.c ends a story when it samples BOS (id 1): generation stops on 1 as well as on EOS.
  nlohmann::json gen{{"bos_token_id", 1}, {"eos_token_id", {2, 1}}};
  write_file((fs::path(out_dir) / "generation_config.json").string(), gen.dump(2) + "\n");
  write_llama2c_tokenizer_files(tok, out_dir);
}

}  // namespace kvb
