// The training mixture of kvbench's reference models: generated prose (datasets/prose.h) as the
// language-modelling part and as filler, with long-range tasks embedded at random depths and
// asked about at the end of the document:
//   needle    "The special magic number for {city} is {number}." (the NIAH suite's template)
//   passkey   "The pass key is {5 digits}. Remember it. {5 digits} is the pass key."
//   kv        "Key-value pairs: {key}: {value}, ..." over random lowercase strings, asked
//             "What is the value of key {key}? The value of key {key} is" or "...? {key}:"
//   vars      variable tracing: "VAR ABCDE = 12345." then "VAR FGHIJ = VAR ABCDE." (one hop)
//   prefix    prefix-suffix lookup over random strings
//   copy      "Copy this: {random string} => {random string}" (in place)
// Every document is a pure function of its seed, so training data never needs to be stored and
// evaluation uses seeds the trainer never draws (a separate seed stream).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvb {

enum class MixTask { kNeedle, kPasskey, kKv, kVars, kPrefix, kCopy };
const char* mix_task_name(MixTask t);

struct MixtureWeights {  // relative frequencies of the tasks (any non-negative numbers)
  double needle = 3, passkey = 3, kv = 2, vars = 1, prefix = 1, copy = 1;
  int64_t min_tasks = 1, max_tasks = 3;  // tasks per document
  // How a key-value question ends: false: "The value of key {key} is" (a phrase the list never
  // writes); true: "{key}:", as the list writes the pair (the way needle and pass key questions
  // end with their piece's own words). The tasks drawn (keys, values) are the same either way;
  // the filler around them shifts with the question's length (and a document too short for all
  // of them may keep a different number).
  bool kv_ask_by_key = false;
  // Questions asked about each key-value list, about distinct keys (at most one per pair): more
  // answer bytes per document at no extra context. The first is drawn as with 1, so 1 leaves
  // the documents as they were; an eval scores a document's first question.
  int64_t kv_asks = 1;
};

// One answer span: bytes [begin, end) of the document are the answer to a task's question.
struct AnswerSpan {
  MixTask task;
  int64_t begin = 0, end = 0;
  double depth = 0;  // where the task's information sits, as a fraction of the document
};

// A task's question at the end of a document and the text that answers it (" 12345.").
struct MixQuestion {
  MixTask task;
  std::string question, answer;
};

struct MixDocument {
  std::string text;                // exactly `bytes` long
  std::vector<AnswerSpan> answers; // answer bytes (after the question, to be predicted)
  int64_t body_bytes = 0;          // the text before the questions: "\n\n" + question + answer each
  std::vector<MixQuestion> questions;  // in the order they follow the body
};

// A document of exactly `bytes` bytes. `only`: when non-empty, tasks are drawn from it alone.
// `depth` in [0, 1]: place the (single) task's information at that depth instead of at random.
MixDocument make_mix_document(int64_t bytes, uint64_t seed, const MixtureWeights& w,
                              const std::vector<MixTask>& only = {}, double depth = -1);

// Parses a task name ("needle", "passkey", "kv", "vars", "prefix", "copy"); nullopt if unknown.
std::optional<MixTask> parse_mix_task(const std::string& name);

// The task names joined by ", " for messages; `with_questions_only` leaves out copy, the one task
// that asks no question at the end of the document.
std::string mix_task_names(bool with_questions_only = false);

// Plain generated prose of exactly `bytes` bytes (held-out perplexity text).
std::string make_prose_document(int64_t bytes, uint64_t seed);

}  // namespace kvb
