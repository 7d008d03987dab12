#include "harness/provenance.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/check.h"

#ifdef KVB_HAVE_CUDA_KERNELS
#include "kernels/cuda/dequant.h"
#endif

#ifndef KVB_GIT_COMMIT
#define KVB_GIT_COMMIT ""
#endif
#ifndef KVB_GIT_DIRTY
#define KVB_GIT_DIRTY 0
#endif
#ifndef KVB_COMPILER
#define KVB_COMPILER ""
#endif
#ifndef KVB_BUILD_TYPE
#define KVB_BUILD_TYPE ""
#endif

namespace kvb {
namespace {

// "12.4" from 12040; "" for 0.
std::string cuda_version_text(long v) {
  return v > 0 ? std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10) : "";
}

// The CUDA runtime of our own kernels when built with them, else libtorch's; "" without CUDA.
std::string cuda_runtime_version() {
#ifdef KVB_HAVE_CUDA_KERNELS
  if (const int v = cuda::runtime_version(); v > 0) return cuda_version_text(v);
#endif
  return at::hasCUDA() ? cuda_version_text(at::detail::getCUDAHooks().versionCUDART()) : "";
}

}  // namespace

nlohmann::json run_provenance() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return {{"git_commit", KVB_GIT_COMMIT},
          {"git_dirty", KVB_GIT_DIRTY != 0},
          {"build_type", KVB_BUILD_TYPE},
          {"compiler", KVB_COMPILER},
          {"torch_version", std::to_string(TORCH_VERSION_MAJOR) + "." +
                                std::to_string(TORCH_VERSION_MINOR) + "." +
                                std::to_string(TORCH_VERSION_PATCH)},
          {"cuda_version", cuda_runtime_version()},
          {"device", "cpu"},
          {"threads", at::get_num_threads()},
          {"host", std::string(host)}};
}

namespace {

struct Fnv {
  uint64_t h = 1469598103934665603ull;
  void add(const char* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      h ^= static_cast<unsigned char>(p[i]);
      h *= 1099511628211ull;
    }
  }
  void add(const std::string& s) { add(s.data(), s.size() + 1); }  // with its NUL
  void add_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    KVB_INPUT_CHECK(in, path, ": cannot read");
    std::vector<char> buf(1 << 20);
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      add(buf.data(), static_cast<size_t>(in.gcount()));
    }
  }
  std::string hex() const {
    char b[17];
    std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(h));
    return b;
  }
};

}  // namespace

std::string files_hash(const std::vector<std::string>& files) {
  Fnv f;
  for (const auto& p : files) {
    f.add(std::filesystem::path(p).filename().string());
    f.add_file(p);
  }
  return f.hex();
}

std::string model_weights_hash(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (e.is_regular_file() && (name == "config.json" || e.path().extension() == ".safetensors" ||
                                  e.path().extension() == ".bin"))
        files.push_back(e.path().string());
    }
  std::sort(files.begin(), files.end());
  return files_hash(files);
}

std::string dataset_content_hash(const nlohmann::json& spec, int64_t seed) {
  Fnv f;
  f.add(spec.dump());
  f.add(std::to_string(seed));
  if (spec.is_object() && spec.contains("path") && spec["path"].is_string() &&
      std::filesystem::is_regular_file(spec["path"].get<std::string>()))
    f.add_file(spec["path"].get<std::string>());
  return f.hex();
}

}  // namespace kvb
