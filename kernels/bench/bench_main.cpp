// kvbench_bench's main: Google Benchmark's, plus the shapes the kernel benchmarks are registered
// for at run time.
//
//   kvbench_bench [--kvb_shapes=FILE] [Google Benchmark flags]
//
// FILE: JSON {"shapes": [{"heads": 9, "kv_heads": 3, "head_dim": 64, "context": 32768,
// "bits": 2}, ...]} (`kvbench bench-kernels` writes it from a suite, after checking it). Without
// it, the default grid: SmolLM2-135M's attention shape (9 query heads, 3 KV heads, head dim 64)
// at 1K, 4K, 16K and 32K tokens, 2 and 4 bits. Shapes are registered in the order given
// (benchmarks holding one context's fixture at a time want increasing contexts).
#include <benchmark/benchmark.h>

#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/bench/bench_util.h"

namespace {

using kvb::bench::KernelShape;

std::vector<KernelShape> default_shapes() {
  std::vector<KernelShape> v;
  for (int64_t ctx : {1024, 4096, 16384, 32768})
    for (int bits : {2, 4}) {
      KernelShape s;
      s.context = ctx;
      s.bits = bits;
      v.push_back(s);
    }
  return v;
}

std::vector<KernelShape> read_shapes(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot be read");
  const nlohmann::json j = nlohmann::json::parse(in);
  std::vector<KernelShape> v;
  for (const auto& e : j.at("shapes")) {
    KernelShape s;
    s.heads = e.at("heads").get<int64_t>();
    s.kv_heads = e.at("kv_heads").get<int64_t>();
    s.head_dim = e.at("head_dim").get<int64_t>();
    s.context = e.at("context").get<int64_t>();
    s.bits = e.at("bits").get<int>();
    if (s.heads < 1 || s.kv_heads < 1 || s.heads % s.kv_heads != 0 || s.head_dim < 1 ||
        s.context < 1 || (s.bits != 2 && s.bits != 4))
      throw std::runtime_error(path + ": shape " + s.name() + " is not one a kernel can run");
    v.push_back(s);
  }
  if (v.empty()) throw std::runtime_error(path + ": no shapes");
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> rest;
  std::string shapes_file;
  constexpr const char* kFlag = "--kvb_shapes=";
  for (int i = 0; i < argc; ++i) {
    if (i > 0 && std::strncmp(argv[i], kFlag, std::strlen(kFlag)) == 0)
      shapes_file = argv[i] + std::strlen(kFlag);
    else
      rest.push_back(argv[i]);
  }
  std::vector<KernelShape> shapes;
  try {
    shapes = shapes_file.empty() ? default_shapes() : read_shapes(shapes_file);
  } catch (const std::exception& e) {
    std::cerr << "kvbench_bench: " << e.what() << "\n";
    return 2;
  }
  for (kvb::bench::ShapeRegistrar r : kvb::bench::shape_registrars()) r(shapes);
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  if (benchmark::ReportUnrecognizedArguments(n, rest.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
