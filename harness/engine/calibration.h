// The harness side of KVMethod::calibrate(): a CalibrationContext whose `run` feeds token ids
// through a state with this model (methods never see the model, methods/kv_method.h).
#pragma once

#include <string>

#include "harness/model/model.h"
#include "methods/kv_method.h"

namespace kvb {

// `model` must outlive the context. model_id: the weights' content hash
// (harness/provenance.h: model_weights_hash) or another id that changes with the weights.
CalibrationContext make_calibration_context(const Model& model, const std::string& model_id,
                                            const std::string& cache_dir);

}  // namespace kvb
