// A model directory's config.json, and generation_config.json beside it: the input is
// config.json, or "config.json \n#---\n generation_config.json". Entry point: load_model_config,
// what every command that opens a model calls first.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "harness/model/config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvb::fuzz;
  const std::string dir = scratch_path("model");
  const auto parts = split_parts({reinterpret_cast<const char*>(data), size}, 2);
  write_bytes(dir + "/config.json", parts[0]);
  if (parts.size() > 1)
    write_bytes(dir + "/generation_config.json", parts[1]);
  else
    remove_path(dir + "/generation_config.json");
  expect_input_errors([&] {
    const kvb::ModelConfig c = kvb::load_model_config(dir);
    // What the commands then read off a config (model.cpp sizes, `kvbench info`, the suite
    // runner's max_position check) must not overflow for any accepted config.
    (void)c.n_params();
    (void)c.kv_bytes_per_token_fp16();
    (void)c.to_json().dump();
  });
  return 0;
}
