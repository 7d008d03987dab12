// Shared-context tasks (SCBench-like): one long context and several turns, each with a query and
// its gold answers. Generators for SCBench's string-retrieval tasks plus Math.Find and a many-shot
// classification task, and a loader for SCBench's own JSONL format.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kvb {

class Rng;

struct ScTurn {
  std::string input;                 // the query text of this turn
  std::vector<std::string> answers;  // gold answers (string_match_all needs all of them)
  // The text that stands for the answer in the next turn's history; empty: the answers joined
  // by ", ".
  std::string gold = {};
};

struct ScSample {
  std::string id;
  std::string context;
  std::vector<ScTurn> turns;
};

// How a turn is scored (SCBench's metrics):
//   substring         1 if the first gold answer occurs in the prediction (retrieval accuracy)
//   string_match_all  fraction of the gold answers that occur in the prediction
//   first_int         1 if the first integer in the prediction equals the gold answer
enum class ScMetric { kSubstring, kStringMatchAll, kFirstInt };
ScMetric parse_sc_metric(const std::string& s);  // kvb::InputError on an unknown name
std::string sc_metric_name(ScMetric m);
double score_sc_turn(ScMetric m, const std::string& prediction,
                     const std::vector<std::string>& answers);

struct ScTask {
  std::string name;  // kv | prefix_suffix | vt | math_find | icl | jsonl
  ScMetric metric;
  std::vector<ScSample> samples;
};

// Generators (deterministic in seed). `size` is the task's length knob: key-value pairs, strings,
// chains, list length or shots.
ScTask generate_kv_retrieval(int64_t samples, int64_t pairs, int64_t turns, uint64_t seed);
ScTask generate_prefix_suffix(int64_t samples, int64_t strings, int64_t turns, uint64_t seed);
ScTask generate_variable_tracing(int64_t samples, int64_t chains, int64_t hops,
                                 int64_t noise_sentences, int64_t turns, uint64_t seed);
ScTask generate_math_find(int64_t samples, int64_t numbers, int64_t turns, uint64_t seed);
ScTask generate_icl_classification(int64_t samples, int64_t shots, int64_t classes, int64_t turns,
                                   uint64_t seed);

// Shared contexts from the reference models' training mixture (datasets/mixture.h), on seeds of
// their own: each sample is one document of `bytes` bytes (prose with `turns` tasks' information
// at random depths) whose questions become the turns, in the mixture's own format, so a model
// trained on the mixture is asked exactly as it learned. `tasks`: names of question tasks
// (needle, passkey, kv, vars, prefix); a document holds one pass key at most and drops tasks
// that would crowd out the filler, so a sample may have fewer turns than asked for.
// kvb::InputError for an unknown or answerless task name, or a document too short for its tasks.
ScTask generate_mixture_task(int64_t samples, int64_t bytes, int64_t turns,
                             const std::vector<std::string>& tasks, uint64_t seed);

// SCBench's JSONL: one object per line, {"id", "context", "multi_turns": [{"input", "answer"}]}
// where answer is a string, a number or a list of them. Each line is parsed through the one JSON
// layer (common/json_reader.h) as "<path>:<line>"; kvb::InputError
// "<path>:<line>: $.<field>: expected <what>, got <what it is>" on anything malformed. At most
// kMaxJsonlTurns turns a sample, kMaxJsonlAnswers answers a turn, kMaxDatasetFileBytes a file.
inline constexpr int64_t kMaxJsonlTurns = 1024, kMaxJsonlAnswers = 1024;
ScTask load_scbench_jsonl(const std::string& path, ScMetric metric, int64_t max_samples = 0);

// A random RFC-4122-looking UUID (version 4) from the stream.
std::string random_uuid(Rng& rng);

}  // namespace kvb
