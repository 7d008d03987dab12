// Datasets named in suite configs: {"type": ..., fields} objects (see suites/configs/schema.json)
// loaded or generated into text (perplexity, needle haystacks) or shared-context tasks.
//
// Input limits, each refused with one line (kvb::InputError "<source>: <json path>: ...") when
// the spec is read, before anything is generated or read from disk:
//
//   field                    types                               range
//   max_chars                text, wikitext2, text_dir           1 .. 2^30
//   words                    prose                               1 .. 2^24 (16,777,216)
//   samples                  scbench_*, mixture                  1 .. 4096
//   turns                    scbench_* (generated)               1 .. 1024
//   turns                    mixture                             1 .. 64
//   bytes                    mixture                             64 .. 2^24 per document
//   tasks                    mixture                             1 .. 5 distinct names
//   pairs / strings /        scbench_kv / _prefix_suffix /       1 .. 2^20
//     numbers / shots          _math_find / _icl
//   chains                   scbench_vt                          1 .. 4096
//   hops                     scbench_vt                          1 .. 256
//   noise_sentences          scbench_vt                          0 .. 65536
//   classes                  scbench_icl                         2 .. 20
//   max_samples              scbench_jsonl                       1 .. 2^20
//   path                     text, wikitext2, text_dir, jsonl    1 .. 4096 characters
// Cross-checks (the data a spec asks for, before it is made):
//   mixture        samples x bytes                      <= 2^30 bytes
//   scbench_*      samples x (pairs | strings | numbers | shots) <= 2^21 items
//   scbench_vt     chains x (hops + 1)                  <= 1024 variables per sample, and
//                  samples x (noise_sentences + chains x (hops + 1)) <= 2^21 lines
// Files: a text file (or a text_dir's files together) and a JSONL file at most 2^30 bytes
// (kMaxDatasetFileBytes), a text_dir at most 100,000 .txt files, a JSONL sample at most 1024
// turns of at most 1024 answers each (datasets/text.h, datasets/scbench.h).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "common/json_reader.h"
#include "datasets/scbench.h"

namespace kvb {

inline constexpr int64_t kMaxDatasetSamples = 4096;
inline constexpr int64_t kMaxDatasetTurns = 1024;
inline constexpr int64_t kMaxMixtureTurns = 64;
inline constexpr int64_t kMaxProseWords = int64_t{1} << 24;
inline constexpr int64_t kMaxMixtureBytes = int64_t{1} << 24;
inline constexpr int64_t kMaxMixtureTotalBytes = int64_t{1} << 30;
inline constexpr int64_t kMaxTaskSize = int64_t{1} << 20;   // pairs, strings, numbers, shots
inline constexpr int64_t kMaxTaskItems = int64_t{1} << 21;  // samples x size
inline constexpr int64_t kMaxVtChains = 4096, kMaxVtHops = 256, kMaxVtNoise = 65536;
inline constexpr int64_t kMaxVtVariables = 1024;  // chains x (hops + 1)
inline constexpr int64_t kMaxMaxChars = int64_t{1} << 30;
inline constexpr int64_t kMaxJsonlSamples = int64_t{1} << 20;
inline constexpr int64_t kMaxDatasetPathChars = 4096;

struct Dataset {
  std::string type;  // the config's "type"
  bool is_text = false;
  std::string text;  // is_text
  ScTask task;       // otherwise
};

bool is_text_dataset_type(const std::string& type);

// Reads every field of a dataset spec with its range and checks the limits above, without
// generating or reading anything; kvb::InputError "<source>: <path>.<field>: <problem>".
// load_suite_config() calls it on each of $.datasets.
void check_dataset_spec(const JsonNode& spec);

// Loads or generates `spec` (checked as check_dataset_spec does first). Generators are seeded
// from `seed` and the spec, so the same spec and seed give the same data. Relative paths resolve
// against the current directory; max_chars cuts text at the last whitespace within the limit.
// kvb::InputError from the loaders ("<file>: <problem>").
Dataset load_dataset(const nlohmann::json& spec, uint64_t seed);

}  // namespace kvb
