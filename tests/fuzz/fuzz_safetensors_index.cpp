// model.safetensors.index.json: the input is the index of a model directory that holds two
// valid shards of the tiny model (tests/fuzz/data/tiny-model/, split by tensor name) and the
// tiny config.json. Entry points: SafetensorsSet and Model::load.
#include <cstddef>
#include <cstdint>
#include <filesystem>

#include "harness/model/model.h"
#include "harness/model/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  using namespace kvb::fuzz;
  namespace fs = std::filesystem;
  fs::create_directories(scratch_path("model"));
  for (const char* f :
       {"config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"})
    copy_bytes(source_path(std::string("tests/fuzz/data/tiny-model/") + f),
                  scratch_path(std::string("model/") + f));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvb::fuzz;
  const std::string dir = scratch_path("model");
  write_bytes(dir + "/model.safetensors.index.json", {reinterpret_cast<const char*>(data), size});
  expect_input_errors([&] {
    kvb::SafetensorsSet set(dir);
    for (const std::string& name : set.names()) {
      if (!set.has(name)) report("name listed but has() is false", name);
      (void)set.get(name);
    }
  });
  expect_input_errors([&] { (void)kvb::Model::load(dir); });
  return 0;
}
