// Import of llama2.c checkpoints (karpathy/llama2.c "version 0" export) into HF directories.
#pragma once

#include <string>

#include "harness/model/model.h"

namespace kvb {

// Reads a llama2.c .bin checkpoint into a Model whose q/k projection rows are permuted from
// llama2.c's interleaved-pair RoPE to HF's rotate-half RoPE. Throws kvb::InputError naming the
// file when the header is implausible or the size does not match the header.
Model read_llama2c_checkpoint(const std::string& path);

// Writes `out_dir` as an HF directory: config.json, generation_config.json, model.safetensors,
// tokenizer.json, tokenizer_config.json.
void import_llama2c(const std::string& checkpoint, const std::string& tokenizer,
                    const std::string& out_dir);

}  // namespace kvb
