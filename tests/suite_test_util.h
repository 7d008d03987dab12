// Helpers for the suite and dataset tests: tiny random models with a real tokenizer.json on
// disk, and stories260K imported once per test binary from ../shared.
#pragma once

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/json_io.h"
#include "harness/model/llama2c.h"
#include "harness/model/model.h"
#include "tests/test_util.h"

namespace kvb::test {

// SentencePiece-style tokenizer.json with byte fallback only: <unk> <s> </s>, 256 byte tokens,
// "▁" (vocab 260). Every character is one or more byte tokens; BOS <s> is added.
inline nlohmann::json byte_fallback_tokenizer_json() {
  nlohmann::json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  vocab["▁"] = 259;
  return {{"added_tokens",
           {{{"id", 0}, {"content", "<unk>"}, {"special", true}, {"normalized", false}},
            {{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
            {{"id", 2}, {"content", "</s>"}, {"special", true}, {"normalized", false}}}},
          {"normalizer",
           {{"type", "Sequence"},
            {"normalizers",
             {{{"type", "Prepend"}, {"prepend", "▁"}},
              {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}}},
          {"pre_tokenizer", nullptr},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single", {{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
            {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}}}}}}},
          {"decoder",
           {{"type", "Sequence"},
            {"decoders",
             {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
              {{"type", "ByteFallback"}},
              {{"type", "Fuse"}},
              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
          {"model",
           {{"type", "BPE"},
            {"unk_token", "<unk>"},
            {"fuse_unk", true},
            {"byte_fallback", true},
            {"vocab", vocab},
            {"merges", nlohmann::json::array()}}}};
}

inline ModelConfig tiny_suite_config(int64_t vocab = 260) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = vocab;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.max_position = 4096;
  c.rms_eps = 1e-6;
  c.tie_word_embeddings = true;
  return c;
}

// A random model directory (config.json, model.safetensors, tokenizer.json) at `dir`.
inline void make_tiny_model_dir(const std::string& dir, uint64_t seed = 1) {
  Model::random(tiny_suite_config(), seed).save(dir);
  write_file(dir + "/tokenizer.json", byte_fallback_tokenizer_json().dump());
}

// The small suite that the run, results and leaderboard tests share. small_suite_config()
// writes the tiny random model at `dir`'s m (and, for SCBench, its kv.jsonl: one context, two
// questions) and returns the suite: perplexity (2 windows of 64 tokens) and NIAH (max 3 new
// tokens) on 400 words of generated prose, then SCBench when `scbench_mode` is set.
struct SmallSuite {
  std::string name = "t";
  int64_t seed = 5;
  std::vector<std::string> methods = {"full"};
  std::vector<int64_t> niah_lengths = {160};
  std::vector<double> niah_depths = {0.0, 1.0};
  std::string scbench_mode{};  // "multi_request" or "multi_turn"; "" for no SCBench run
};

inline nlohmann::json small_suite_config(const TempDir& dir, const SmallSuite& s) {
  using json = nlohmann::json;
  make_tiny_model_dir(dir.path("m"));
  json datasets = {{"prose", {{"type", "prose"}, {"words", 400}}}};
  json runs = {{{"suite", "perplexity"},
                {"datasets", {"prose"}},
                {"params", {{"ctx", 64}, {"chunk", 16}, {"max_windows", 2}}}},
               {{"suite", "niah"},
                {"datasets", {"prose"}},
                {"params",
                 {{"context_lengths", s.niah_lengths},
                  {"depths", s.niah_depths},
                  {"max_new_tokens", 3}}}}};
  if (!s.scbench_mode.empty()) {
    write_file(dir.path("kv.jsonl"),
               R"({"id": "a", "context": "k1: v1, k2: v2", "multi_turns": [{"input": "k1?", )"
               R"("answer": "v1"}, {"input": "k2?", "answer": ["v2"]}]})"
               "\n");
    datasets["kv"] = {{"type", "scbench_jsonl"}, {"path", dir.path("kv.jsonl")}, {"metric", "substring"}};
    runs.push_back({{"suite", "scbench"},
                    {"datasets", {"kv"}},
                    {"params", {{"mode", s.scbench_mode}, {"max_new_tokens", 4}}}});
  }
  return {{"name", s.name}, {"seed", s.seed},   {"models", {dir.path("m")}},
          {"methods", s.methods}, {"datasets", datasets}, {"runs", runs}};
}

// stories260K imported into a temp dir once per process; "" when ../shared lacks it.
inline std::string stories260k_dir() {
  static std::unique_ptr<TempDir> dir;
  static std::string path;
  if (dir) return path;
  if (!shared_has("models/stories260K/stories260K.bin")) return "";
  dir = std::make_unique<TempDir>();
  path = dir->path("stories260K");
  import_llama2c(shared_path("models/stories260K/stories260K.bin"),
                 shared_path("models/stories260K/tok512.bin"), path);
  return path;
}

}  // namespace kvb::test
