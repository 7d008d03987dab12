// SCBench JSONL datasets: the input is the .jsonl file, loaded through load_dataset as a suite
// config names it ({"type": "scbench_jsonl", "path": ..., "metric": ...}, the metric chosen by
// the input's length, max_samples 2 when it is a multiple of 5), then every turn scored with
// that metric against its own answers and against its query (what the scbench suite does with a
// model's output).
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "datasets/loader.h"
#include "datasets/scbench.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvb::fuzz;
  const std::string file = scratch_path("data.jsonl");
  write_bytes(file, {reinterpret_cast<const char*>(data), size});
  static const char* kMetrics[] = {"substring", "string_match_all", "first_int"};
  nlohmann::json spec = {{"type", "scbench_jsonl"}, {"path", file}, {"metric", kMetrics[size % 3]}};
  if (size % 5 == 0) spec["max_samples"] = 2;
  kvb::Dataset d;
  if (!expect_input_errors([&] { d = kvb::load_dataset(spec, 1); })) return 0;
  if (d.is_text) report("a JSONL dataset loaded as text", "");
  for (const kvb::ScSample& s : d.task.samples)
    for (const kvb::ScTurn& t : s.turns) {
      if (t.answers.empty()) report("a turn without answers was accepted", s.id);
      std::string all;
      for (const std::string& a : t.answers) all += a + " ";
      for (const std::string* prediction : {&std::as_const(all), &t.input, &s.context}) {
        const double v = kvb::score_sc_turn(d.task.metric, *prediction, t.answers);
        if (!(v >= 0 && v <= 1)) report("score outside [0, 1]", std::to_string(v));
      }
    }
  return 0;
}
