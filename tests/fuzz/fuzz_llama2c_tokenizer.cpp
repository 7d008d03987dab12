// A llama2.c tokenizer (tokenizer.bin / tok512.bin) for `kvbench import-llama2c`: the input is
// the file, converted for a model of 300 tokens, or 280 when the input's length is odd (the
// seeds hold 300 and 280). Entry point: llama2c_tokenizer_to_hf; a converted tokenizer must then
// load (load_tokenizer) with that vocab_size and encode, as the import's output does.
#include <cstddef>
#include <cstdint>

#include "harness/tokenizer/llama2c_tokenizer.h"
#include "harness/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvb::fuzz;
  const std::string path = scratch_path("tokenizer.bin");
  write_bytes(path, {reinterpret_cast<const char*>(data), size});
  const int vocab = size % 2 ? 280 : 300;
  nlohmann::json hf;
  if (!expect_input_errors([&] { hf = kvb::llama2c_tokenizer_to_hf(path, vocab); })) return 0;
  const std::string dir = scratch_path("converted");
  remove_path(dir);
  std::filesystem::create_directories(dir);
  kvb::write_llama2c_tokenizer_files(hf, dir);
  std::unique_ptr<kvb::Tokenizer> tok;
  try {
    tok = kvb::load_tokenizer(dir + "/tokenizer.json");
  } catch (const std::exception& e) {
    report("a converted llama2.c tokenizer does not load", e.what());
  }
  if (tok->vocab_size() != vocab)
    report("converted vocab_size differs", std::to_string(tok->vocab_size()));
  const auto ids = tok->encode("Once upon a time, \xc3\xbc\n", true);
  (void)tok->decode(ids, true);
  return 0;
}
