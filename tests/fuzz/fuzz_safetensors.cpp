// A .safetensors file: the input is model.safetensors in a model directory whose config.json
// describes a tiny Llama (tests/fuzz/data/tiny-model/config.json; the seed corpus holds its
// valid weights). Entry points: SafetensorsFile (the mmap'd header and offsets) and Model::load,
// which reads every tensor through load_weight against the shapes config.json implies.
#include <cstddef>
#include <cstdint>
#include <filesystem>

#include "harness/model/model.h"
#include "harness/model/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  using namespace kvb::fuzz;
  std::filesystem::create_directories(scratch_path("model"));
  copy_bytes(source_path("tests/fuzz/data/tiny-model/config.json"),
             scratch_path("model/config.json"));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvb::fuzz;
  const std::string dir = scratch_path("model");
  const std::string path = dir + "/model.safetensors";
  write_bytes(path, {reinterpret_cast<const char*>(data), size});
  expect_input_errors([&] {
    kvb::SafetensorsFile f(path);
    int64_t total = 0;
    for (const kvb::StTensorInfo& t : f.tensors()) {
      const uint8_t* p = f.data(t);
      if (t.end > t.begin) total += p[0] + p[t.end - t.begin - 1];  // first and last byte
      (void)t.numel();
      if (f.find(t.name) == nullptr) report("tensor listed but not found", t.name);
    }
    (void)total;
  });
  expect_input_errors([&] { (void)kvb::Model::load(dir); });
  return 0;
}
