// `kvbench calibrate --model DIR --method SPEC --data FILE [--out DIR] [--dtype D]`: runs the
// method's offline calibration (KVMethod::calibrate) on the text of FILE, tokenized by the
// model's tokenizer, and writes the artifacts under DIR (default out/calibration, where
// `kvbench run` looks by default for results under out/). Artifacts are keyed by the model's
// weights hash, the canonical spec and the calibration ids' hash; an artifact already there is
// reused (nothing is computed). One line per artifact on stdout: "<stage>  <path>  computed|reused
// <hash>".
#pragma once

#include <string>

namespace kvb::cli {

struct CalibrateArgs {
  std::string model_dir, method, data, out = "out/calibration", dtype = "fp32";
};

int run_calibrate(const CalibrateArgs& a);

}  // namespace kvb::cli
