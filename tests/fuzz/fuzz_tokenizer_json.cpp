// tokenizer.json, with tokenizer_config.json beside it and the text to encode: the input is
// "tokenizer.json [\n#---\n tokenizer_config.json [\n#---\n text]]". Entry point:
// load_tokenizer (what `kvbench tokenize`, `generate` and every suite call), then encode and
// decode. Pathological regexes and merges show up as timeouts (`make fuzz` runs -timeout=10).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "harness/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvb::fuzz;
  const std::string dir = scratch_path("tok");
  const auto parts = split_parts({reinterpret_cast<const char*>(data), size}, 3);
  write_bytes(dir + "/tokenizer.json", parts[0]);
  if (parts.size() > 1 && !parts[1].empty())
    write_bytes(dir + "/tokenizer_config.json", parts[1]);
  else
    remove_path(dir + "/tokenizer_config.json");
  const std::string text = parts.size() > 2 ? std::string(parts[2])
                                            : std::string(
                                                  "Hello, world!\n  h\xc3\xa9llo <s></s> 123 "
                                                  "\xe2\x96\x81x \xff\xfe tab\there");
  std::unique_ptr<kvb::Tokenizer> tok;
  if (!expect_input_errors([&] { tok = kvb::load_tokenizer(dir + "/tokenizer.json"); })) return 0;
  // A loaded tokenizer encodes and decodes any text without throwing: nothing in encode/decode
  // is input the user could correct.
  const int32_t vocab = tok->vocab_size();
  if (vocab <= 0) report("tokenizer loaded with vocab_size <= 0", std::to_string(vocab));
  std::vector<int32_t> ids = tok->encode(text, true);
  for (int32_t id : ids)
    if (id < 0 || id >= vocab)
      report("encode produced an id outside [0, vocab_size)", std::to_string(id));
  (void)tok->decode(ids, false);
  (void)tok->decode(ids, true);
  ids = tok->encode(text, false);
  (void)tok->decode(ids, true);
  for (auto special : {tok->bos_id(), tok->eos_id()})
    if (special && (*special < 0 || *special >= vocab))
      report("bos/eos id outside [0, vocab_size)", std::to_string(*special));
  // Any id below vocab_size decodes (a model may produce ids the vocabulary leaves unused);
  // id_to_token is for ids the tokenizer holds: those encode produced, BOS/EOS, the largest.
  std::vector<int32_t> some;
  for (int32_t id = 0; id < std::min<int32_t>(vocab, 300); ++id) some.push_back(id);
  some.push_back(vocab - 1);
  (void)tok->decode(some, false);
  (void)tok->decode(some, true);
  for (int32_t id : ids) (void)tok->id_to_token(id);
  for (auto special : {tok->bos_id(), tok->eos_id()})
    if (special) (void)tok->id_to_token(*special);
  (void)tok->id_to_token(vocab - 1);
  return 0;
}
