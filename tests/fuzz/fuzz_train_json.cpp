// train.json for `kvbench train`: the input is the file. Entry point: load_train_config (what
// train_model reads first), then what the trainer derives from it before the first step.
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/fuzz_util.h"
#include "trainer/trainer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvb::fuzz;
  const std::string path = scratch_path("train.json");
  write_bytes(path, {reinterpret_cast<const char*>(data), size});
  expect_input_errors([&] {
    const kvb::TrainConfig c = kvb::load_train_config(path);
    const int64_t total = c.total_steps();
    (void)c.context();
    if (total > 0) {
      (void)c.phase_at(0);
      (void)c.phase_at(total - 1);
    }
    (void)c.model.n_params();
    (void)c.model.to_json().dump();
  });
  return 0;
}
