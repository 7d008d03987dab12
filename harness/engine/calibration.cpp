#include "harness/engine/calibration.h"

#include <algorithm>

#include "common/check.h"
#include "common/hash.h"

namespace kvb {

CalibrationContext make_calibration_context(const Model& model, const std::string& model_id,
                                            const std::string& cache_dir,
                                            std::vector<int64_t> ids, std::string source) {
  CalibrationContext ctx;
  ctx.calibration_hash = calibration_ids_hash(ids);
  ctx.calibration_ids = std::move(ids);
  ctx.calibration_source = std::move(source);
  ctx.cache_dir = cache_dir;
  ctx.model_id = model_id;
  ctx.shape = model.shape();
  ctx.vocab_size = model.config().vocab_size;
  ctx.compute = model.dtype();
  const Model* m = &model;
  ctx.run = [m](KVCacheState& st, const std::vector<int64_t>& ids, int64_t prompt) {
    c10::InferenceMode guard;
    const int64_t n = static_cast<int64_t>(ids.size());
    KVB_CHECK(prompt >= 1 && prompt <= n, "calibration run: prompt ", prompt, " of ", n, " ids");
    torch::Tensor all = torch::tensor(ids, torch::kLong).view({1, n});
    ForwardOptions fo;
    fo.all_logits = true;
    std::vector<torch::Tensor> rows;
    rows.push_back(m->forward(all.narrow(1, 0, prompt), torch::arange(prompt, torch::kLong), st,
                              fo)[0]);
    st.end_prefill();
    for (int64_t i = prompt; i < n; ++i)
      rows.push_back(
          m->forward(all.narrow(1, i, 1), torch::arange(i, i + 1, torch::kLong), st, fo)[0]);
    return torch::cat(rows, 0).to(torch::kCPU, torch::kFloat32);
  };
  return ctx;
}

std::string calibration_ids_hash(const std::vector<int64_t>& ids) {
  return hex64(fnv1a64(std::string(reinterpret_cast<const char*>(ids.data()),
                                   ids.size() * sizeof(int64_t))));
}

}  // namespace kvb
