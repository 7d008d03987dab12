// Bridge between safetensors entries (torch-free, harness/model/safetensors.h) and torch tensors.
#pragma once

#include <ATen/ATen.h>
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "harness/model/safetensors.h"

namespace kvb {

// Copies tensor `name` out of the mapped file into a new CPU tensor converted to `dtype`.
// Sources: F32, F16, BF16, F64, BOOL, U8, I8, I16, U16, I32, U32, I64, U64 (unsigned types torch
// lacks are widened; a U64 value above INT64_MAX is an InputError). When `expected_shape` is
// non-empty it must equal the stored shape, else InputError
// "<file>: tensor '<name>' has shape [64,64], config.json implies [64,32]".
// Throws InputError (naming the model directory) when `name` is absent.
torch::Tensor load_weight(const SafetensorsSet& weights, const std::string& name,
                          torch::ScalarType dtype, const std::vector<int64_t>& expected_shape = {});

// StDtype <-> torch dtype for the types both sides have; the unsigned 16/32/64-bit types have
// no torch counterpart (torch 1.13) and map to nothing.
bool st_dtype_to_torch(StDtype d, torch::ScalarType* out);
bool torch_to_st_dtype(torch::ScalarType t, StDtype* out);

// Writes `tensors` (any device, any strides; stored as a contiguous CPU copy in the tensor's own
// dtype: F32, F16, BF16, and also F64, BOOL, U8, I8, I16, I32, I64) to one .safetensors file.
// Throws kvb::Error on an unsupported dtype, duplicate names, or I/O failure.
void save_weights(const std::string& path,
                  const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                  const std::map<std::string, std::string>& metadata = {});

}  // namespace kvb
