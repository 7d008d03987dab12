// `kvbench train`: trains a small Llama (RoPE, GQA, RMSNorm, SwiGLU, tied embeddings) on the
// generated mixture of datasets/mixture.h with a byte-level tokenizer, using libtorch autograd:
// AdamW, cosine schedule with linear warm-up, gradient clipping, phases of growing sequence
// length. Deterministic given the seed and the thread count; checkpoints let an interrupted run
// resume to the same result. The output directory is an HF model directory (config.json,
// model.safetensors, tokenizer.json) plus train.json, loss.jsonl, eval.json and README.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "datasets/mixture.h"
#include "harness/model/config.h"
#include "harness/model/model.h"

namespace kvb {

// train.json limits: every field is read through the JSON layer (common/json_reader.h) with its
// range, and refused with one line "<file>: <json path>: expected ..., got ..." (exit 2) before
// anything is allocated or written:
//   name                         1 .. 100 characters
//   seed                         0 .. 2^63-1
//   threads (and --threads)      1 .. 256 (kMaxTrainThreads)
//   dtype                        fp32 | bf16
//   model.hidden_size            1 .. 8192          model.intermediate_size  1 .. 32768
//   model.n_layers               1 .. 64            model.n_heads            1 .. 128
//   model.n_kv_heads             1 .. n_heads, dividing it
//   model.head_dim               2 .. 1024, even (default hidden_size / n_heads)
//   model.rope_theta             1 .. 1e9           model.rms_eps            1e-12 .. 1
//   the model                    at most 2^28 parameters (ModelConfig::n_params, vocab 258)
//   optimizer.lr                 (0, 10]            min_lr, weight_decay     0 .. 10
//   optimizer.beta1, beta2       0 .. 0.999999      clip                     0 .. 1e6
//   optimizer.warmup, decay_steps, cooldown_steps   0 .. 2^30 (decay_steps 0 or > warmup;
//                                cooldown_steps at most the total steps less warmup)
//   phases                       1 .. 64 phases; steps 1 .. 2^30 each, 2^30 together;
//                                seq_len 64 .. 65536; batch 1 .. 4096; batch x seq_len at most
//                                2^20 tokens; window_rows 0 .. 1; row_block 0 .. 65536
//   mixture (top level, phases)  weights 0 .. 1e6, not all 0; min_tasks, max_tasks, kv_asks
//                                1 .. 64 (min_tasks <= max_tasks); kv_question phrase | key
//   prose_only                   0 .. 1             answer_weight            (0, 1e6]
//   checkpoint_every, log_every  1 .. 2^30
//   eval.per_decile, kv_samples, prose_windows      1 .. 100000
inline constexpr int64_t kMaxTrainThreads = 256;
inline constexpr size_t kMaxTrainNameChars = 100;
inline constexpr int64_t kMaxTrainHidden = 8192, kMaxTrainIntermediate = 32768;
inline constexpr int64_t kMaxTrainLayers = 64, kMaxTrainHeads = 128, kMaxTrainHeadDim = 1024;
inline constexpr int64_t kMaxTrainParams = int64_t{1} << 28;
inline constexpr int64_t kMaxTrainSteps = int64_t{1} << 30;
inline constexpr size_t kMaxTrainPhases = 64;
inline constexpr int64_t kMaxTrainSeqLen = 65536, kMaxTrainBatch = 4096;
inline constexpr int64_t kMaxTrainBatchTokens = int64_t{1} << 20;
inline constexpr double kMaxTrainWeight = 1e6;
inline constexpr int64_t kMaxTrainTasks = 64;
inline constexpr int64_t kMaxTrainEvalSamples = 100000;

struct TrainPhase {
  int64_t steps = 0, seq_len = 0, batch = 0;
  MixtureWeights mixture;  // train.json's "mixture", with what the phase's own "mixture" names
  // The fraction of rows that attend as through a StreamingLLM cache: the first kTrainSinks
  // tokens and a recent window of seq_len/8 .. seq_len/2 tokens (drawn per row), so that the
  // model also meets evicted caches in training.
  double window_rows = 0;
  // Attention scores in blocks of this many query rows, each against the keys up to its last
  // row (train_forward); 0: one [seq_len, seq_len] block. The same attention up to float
  // rounding, but the rounding is part of a bitwise-reproducible curve, so it is the recipe's.
  int64_t row_block = 0;
};
inline constexpr int64_t kTrainSinks = 4;

struct TrainEvalConfig {
  int64_t per_decile = 10;   // passkey / needle samples per depth decile at full context
  int64_t kv_samples = 50;   // key-value (and vars / prefix / copy) samples at full context
  int64_t prose_windows = 8; // held-out prose windows of full context for perplexity
};

struct TrainConfig {
  std::string name;
  uint64_t seed = 1;
  int64_t threads = 2;
  std::string dtype = "fp32";  // fp32 | bf16 (weights and activations; AdamW state in fp32 either way)
  ModelConfig model;           // vocab 258 (bytes + BOS + EOS), tied embeddings
  double lr = 3e-3, min_lr = 3e-4, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, clip = 1.0;
  int64_t warmup = 100;
  int64_t decay_steps = 0;     // the cosine reaches min_lr at this step and stays (0: the last step)
  int64_t cooldown_steps = 0;  // the last N steps decay linearly from the schedule's rate to 0
  std::vector<TrainPhase> phases;
  MixtureWeights mixture;      // every phase's, unless the phase names its own weights
  double prose_only = 0.1;     // fraction of documents that are plain prose
  double answer_weight = 1.0;  // loss weight of answer bytes relative to the rest
  int64_t checkpoint_every = 100, log_every = 10;
  TrainEvalConfig eval;

  int64_t total_steps() const;
  int64_t context() const;  // the longest phase's sequence length
  const TrainPhase& phase_at(int64_t step) const;
};

// Parses train.json; kvb::InputError "<path>: <json path>: problem" on anything wrong.
TrainConfig parse_train_config(const nlohmann::json& j, const std::string& where);
TrainConfig load_train_config(const std::string& path);

struct TrainOptions {
  int64_t max_steps = -1;  // stop (with a checkpoint) once this many steps are done; -1 = all
  int64_t threads = 0;     // overrides the config's thread count when > 0
  bool eval = true;        // evaluate when training is complete
  bool quiet = false;
};

// Trains (or resumes) into `out_dir`. Returns 0 when complete, 0 also when stopped at max_steps.
int train_model(const std::string& config_path, const std::string& out_dir, const TrainOptions& opt);

// train_model, with every phase but the last run in a child process of its own (fork, resume
// from the checkpoint at each phase boundary: the same numbers, bitwise). Measured on 2 cores,
// before `kvbench train` set OMP_WAIT_POLICY=PASSIVE (cli/main.cpp): after 50 steps at
// 256 bytes in the same process, a kvb-ref-s step at 2048 bytes took ~4.6 s; in a fresh process
// ~2.8 s (passive and fresh: ~2.3 s; passive in the same process was not measured). What the
// earlier phase leaves behind was not found (malloc_trim at the phase boundary and
// MALLOC_ARENA_MAX=1 did not change it); a new process does. The CLI trains this way; without
// fork() (not POSIX) it is train_model. A child returns from this call too (with train_model's
// result, or its exception): call it only where returning means exiting, as the CLI's main does.
int train_model_process_per_phase(const std::string& config_path, const std::string& out_dir,
                                  const TrainOptions& opt);

// The training forward pass (causal attention, autograd-friendly): logits [B, T, V]. With
// `windows` ([B] int64), row b attends to the first kTrainSinks tokens, the windows[b] tokens
// before it and itself, as streaming(sink=4,window=windows[b]) decoding one token at a time does
// (it holds sink + window tokens between steps); 0 attends to every earlier token.
// Queries are scored in blocks of `row_block` rows (0: all T in one block) against the keys up
// to each block's last row, so causal attention skips the keys after the block instead of
// scoring and masking them (8 blocks: 56% of the [T, T] scores and softmax, forward and
// backward). The result is the same attention up to float rounding.
torch::Tensor train_forward(const ModelConfig& c, const ModelWeights& w, const torch::Tensor& ids,
                            const torch::Tensor& windows = {}, int64_t row_block = 0);

// Evaluates a model directory as the trainer does (held-out seeds, full cache) and returns the
// eval.json object.
nlohmann::json evaluate_reference_model(const std::string& model_dir, const TrainConfig& cfg);

// tokenizer.json of the byte tokenizer: ids 0..255 are the bytes (<0x00>..<0xFF>, BPE with
// byte fallback and no merges), 256 = <s> (added at the start), 257 = </s>.
std::string byte_tokenizer_json();

// The README a run writes: `generated`, followed by the part of the README already in the output
// directory (`existing`, "" when there is none) that starts at a line "## Recipe history", so a
// retrain keeps the hand-written history of its recipes.
std::string readme_keeping_history(const std::string& generated, const std::string& existing);

}  // namespace kvb
