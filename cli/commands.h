// The kvbench subcommands as plain functions (main.cpp binds them to CLI11). Each returns the
// process exit code; malformed input surfaces as kvb::InputError, which main turns into one
// line on stderr and exit code 2.
#pragma once

#include <cstdint>
#include <string>

namespace kvb::cli {

struct GenerateArgs {
  std::string model_dir, prompt, prompt_file, method = "full", dump_logits, dtype = "fp32", device = "cpu";
  int64_t max_new_tokens = 64;
  double temperature = 0.0, top_p = 1.0;
  uint64_t seed = 0;
  int64_t prefill_chunk = 0;
  bool report_memory = false, json = false, completion_only = false;
  int threads = 0;
};
int run_generate(const GenerateArgs& a);

struct TokenizeArgs {
  std::string tokenizer, text, text_file;
  bool text_given = false, no_special = false;
};
int run_tokenize(const TokenizeArgs& a);

int run_info(const std::string& model_dir, bool json);
int run_import_llama2c(const std::string& checkpoint, const std::string& tokenizer,
                       const std::string& out_dir);

// One mixture document (datasets/mixture.h): the prompt up to its first question's answer (a
// question task's bytes stop after "... is"), or the whole document. task "" = a random mix.
int run_mixture_doc(const std::string& task, int64_t bytes, double depth, uint64_t seed,
                    bool whole, bool kv_ask_by_key, const std::string& out);

}  // namespace kvb::cli
