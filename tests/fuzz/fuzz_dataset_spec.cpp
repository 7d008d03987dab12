// Dataset specs of a suite config ($.datasets.<name>): the input is one spec object. It is put
// into a suite config as $.datasets.d, used by one run (perplexity for a text type, scbench
// otherwise), and the config is loaded as `kvbench run` loads it (load_suite_config: schema,
// check_dataset_spec, kinds); when accepted, the dataset is made as run_suite_file makes it
// (load_dataset): the generators (prose, mixture, scbench_*) with the spec's parameters, and the
// files in the scratch directory, the working directory meanwhile (text.txt, dir/, data.jsonl;
// the dictionary names them).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "common/json_reader.h"
#include "datasets/loader.h"
#include "suites/config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  using namespace kvb::fuzz;
  namespace fs = std::filesystem;
  fs::create_directories(scratch_path("models/m"));
  copy_bytes(source_path("models/kvb-ref-s/config.json"), scratch_path("models/m/config.json"));
  write_bytes(scratch_path("models/m/tokenizer.json"), "{}");
  write_bytes(scratch_path("text.txt"), "One sentence here. Another one!\n\nA third?\n");
  write_bytes(scratch_path("dir/a.txt"), "First file.\n");
  write_bytes(scratch_path("dir/b.txt"), "Second file.\n");
  write_bytes(scratch_path("data.jsonl"),
              "{\"id\": 1, \"context\": \"k1: v1\", \"multi_turns\": [{\"input\": \"k1?\", "
              "\"answer\": \"v1\"}]}\n");
  keep_artifacts_in_start_dir(argc, argv);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvb::fuzz;
  nlohmann::json spec;
  if (!expect_input_errors([&] {
        spec = kvb::parse_json({reinterpret_cast<const char*>(data), size}, "dataset spec");
      }))
    return 0;
  const bool text = spec.is_object() && spec.contains("type") && spec["type"].is_string() &&
                    kvb::is_text_dataset_type(spec["type"].get<std::string>());
  const nlohmann::json suite = {
      {"name", "fuzz"},
      {"models", {"models/m"}},
      {"methods", {"full"}},
      {"datasets", {{"d", spec}}},
      {"runs",
       {text ? nlohmann::json{{"suite", "perplexity"},
                              {"datasets", {"d"}},
                              {"params", {{"ctx", 256}}}}
             : nlohmann::json{{"suite", "scbench"}, {"datasets", {"d"}}}}}};
  in_scratch_dir([&] {
    write_bytes("suite.json", suite.dump());
    kvb::SuiteConfig cfg;
    if (!expect_input_errors([&] { cfg = kvb::load_suite_config("suite.json"); })) return;
    expect_input_errors([&] {
      const kvb::Dataset d = kvb::load_dataset(cfg.datasets.at("d"), cfg.seed);
      if (d.is_text != text) report("dataset kind differs from its type", spec.dump());
    });
  });
  return 0;
}
