// Where a run came from: build (commit, dirty flag, build type, compiler, libtorch, CUDA runtime:
// "12.4", "" without CUDA) and machine (host, device, threads). Commit, dirty flag and compiler
// are fixed when CMake configures.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kvb {

nlohmann::json run_provenance();

// FNV-1a 64 (hex) over the bytes of the files in order, each preceded by its name (no dir).
std::string files_hash(const std::vector<std::string>& files);
// A model directory's weights: config.json and every *.safetensors / *.bin file, sorted by name.
std::string model_weights_hash(const std::string& dir);
// A dataset: its spec and the seed, plus the bytes of spec["path"] when that is a file.
std::string dataset_content_hash(const nlohmann::json& spec, int64_t seed);

}  // namespace kvb
