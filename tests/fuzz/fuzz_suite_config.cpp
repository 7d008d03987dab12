// Suite configs (suites/configs/*.json): the input is the config file, read from a scratch
// directory (the working directory during each input) that holds models/kvb-ref-s (the reference
// model's config.json and tokenizer.json, no weights), so the committed configs are valid seeds.
// Entry point: plan_suite_file, what `kvbench plan` calls (load_suite_config: schema, method specs,
// model configs, dataset specs, suite params, context demands; then the cell plan and its keys),
// with shard 1/1 and 2/3.
#include <cstddef>
#include <cstdint>
#include <filesystem>

#include "suites/runner.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  using namespace kvb::fuzz;
  namespace fs = std::filesystem;
  fs::create_directories(scratch_path("models/kvb-ref-s"));
  for (const char* f : {"config.json", "tokenizer.json"})
    copy_bytes(source_path(std::string("models/kvb-ref-s/") + f),
                  scratch_path(std::string("models/kvb-ref-s/") + f));
  // The files the seeds' datasets name.
  write_bytes(scratch_path("text.txt"), "One sentence here. Another one!\n\nA third?\n");
  write_bytes(scratch_path("wiki.raw"), " = Title = \n Text @-@ here .\n");
  write_bytes(scratch_path("dir/a.txt"), "First file.\n");
  write_bytes(scratch_path("data.jsonl"),
              "{\"id\": 1, \"context\": \"k1: v1\", \"multi_turns\": [{\"input\": \"k1?\", "
              "\"answer\": \"v1\"}]}\n");
  keep_artifacts_in_start_dir(argc, argv);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvb::fuzz;
  in_scratch_dir([&] {
    write_bytes("suite.json", {reinterpret_cast<const char*>(data), size});
    kvb::SuiteRunOptions o;
    o.config_path = "suite.json";
    if (!expect_input_errors([&] { (void)kvb::plan_suite_file(o); })) return;
    o.shard_index = 2;
    o.shard_count = 3;
    expect_input_errors([&] { (void)kvb::plan_suite_file(o); });
  });
  return 0;
}
