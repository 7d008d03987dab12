// A llama2.c checkpoint (.bin) for `kvbench import-llama2c`: the input is the file. Entry point:
// read_llama2c_checkpoint (header checks, size check, the weights as tensors).
#include <cstddef>
#include <cstdint>

#include "harness/model/llama2c.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvb::fuzz;
  const std::string path = scratch_path("model.bin");
  write_bytes(path, {reinterpret_cast<const char*>(data), size});
  expect_input_errors([&] {
    const kvb::Model m = kvb::read_llama2c_checkpoint(path);
    (void)m.config().n_params();
  });
  return 0;
}
