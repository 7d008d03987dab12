// The harness side of KVMethod::calibrate(): a CalibrationContext whose `run` feeds token ids
// through a state with this model (methods never see the model, methods/kv_method.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "harness/model/model.h"
#include "methods/kv_method.h"

namespace kvb {

// `model` must outlive the context. model_id: the weights' content hash
// (harness/provenance.h: model_weights_hash) or another id that changes with the weights.
// ids: calibration text as token ids (CalibrationContext::calibration_ids; may be empty), from
// `source` (for messages and artifacts); their hash is calibration_ids_hash(ids).
CalibrationContext make_calibration_context(const Model& model, const std::string& model_id,
                                            const std::string& cache_dir,
                                            std::vector<int64_t> ids = {},
                                            std::string source = "");

// FNV-1a 64 of the ids' int64 bytes (little-endian as held), 16 hex digits.
std::string calibration_ids_hash(const std::vector<int64_t>& ids);

}  // namespace kvb
