// Precompiled header: the heavy third-party headers most translation units use.
#pragma once
#include <ATen/ATen.h>
#include <torch/types.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
