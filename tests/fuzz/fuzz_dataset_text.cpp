// Text datasets: the input is a text file, loaded as each text type a suite config names
// ({"type": "text" | "wikitext2" | "text_dir", "path": ...}, with and without max_chars) through
// load_dataset, what `kvbench run` does for $.datasets; then what the suites do with the text:
// split_sentences, and a needle-in-a-haystack sample over it (make_haystack and
// build_niah_sample with the byte tokenizer).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "datasets/loader.h"
#include "datasets/needle.h"
#include "datasets/text.h"
#include "harness/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  using namespace kvb::fuzz;
  write_bytes(scratch_path("dir/b.txt"), "A second file.\n");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvb::fuzz;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const std::string file = scratch_path("text.txt");
  write_bytes(file, bytes);
  write_bytes(scratch_path("dir/a.txt"), bytes);
  static const auto tok = kvb::make_byte_tokenizer();
  const nlohmann::json specs[] = {
      {{"type", "text"}, {"path", file}},
      {{"type", "wikitext2"}, {"path", file}},
      {{"type", "text_dir"}, {"path", scratch_path("dir")}},
      {{"type", "text"}, {"path", file}, {"max_chars", 1 + size / 2}},
  };
  for (const nlohmann::json& spec : specs) {
    kvb::Dataset d;
    if (!expect_input_errors([&] { d = kvb::load_dataset(spec, 1); })) continue;
    if (!d.is_text) report("a text dataset loaded as not text", spec.dump());
    if (spec.contains("max_chars") && d.text.size() > spec["max_chars"].get<size_t>())
      report("max_chars not applied", spec.dump());
    (void)kvb::split_sentences(d.text);
    expect_input_errors([&] {
      const kvb::Haystack hay = kvb::make_haystack(*tok, d.text);
      if (hay.sentences.empty()) return;
      (void)kvb::build_niah_sample(*tok, hay, 200, 0.5, kvb::NeedleOptions{}, 3, 1);
    });
  }
  return 0;
}
