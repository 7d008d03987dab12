#include "cli/calibrate_cmd.h"

#include <cstdio>
#include <filesystem>

#include "common/check.h"
#include "common/dtype.h"
#include "common/json_io.h"
#include "harness/engine/calibration.h"
#include "harness/model/model.h"
#include "harness/provenance.h"
#include "harness/tokenizer/tokenizer.h"
#include "methods/registry.h"

namespace kvb::cli {

int run_calibrate(const CalibrateArgs& a) {
  namespace fs = std::filesystem;
  const torch::ScalarType dtype = parse_dtype(a.dtype, "--dtype");
  // The spec first: a bad spec fails before the model is read.
  std::unique_ptr<KVMethod> method = make_method(a.method, dtype);
  const std::string text = read_file(a.data);
  KVB_INPUT_CHECK(!text.empty(), a.data, ": empty calibration text");
  Model model = Model::load(a.model_dir, dtype);
  auto tok = load_tokenizer((fs::path(a.model_dir) / "tokenizer.json").string());
  std::vector<int64_t> ids;
  for (int32_t id : tok->encode(text)) ids.push_back(id);
  KVB_INPUT_CHECK(!ids.empty(), a.data, ": no tokens");
  CalibrationContext ctx = make_calibration_context(model, model_weights_hash(a.model_dir), a.out,
                                                    std::move(ids), "file " + a.data);
  method->calibrate(ctx);
  const auto arts = method->calibration_artifacts();
  if (arts.empty()) {
    std::printf("%s: nothing to calibrate\n", method->spec().c_str());
    return 0;
  }
  for (const CalibrationArtifact& art : arts)
    std::printf("%s  %s  %s %s\n", art.stage.c_str(), art.path.c_str(),
                art.computed ? "computed" : "reused", art.hash.c_str());
  return 0;
}

}  // namespace kvb::cli
