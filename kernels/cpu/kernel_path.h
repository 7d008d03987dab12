// Which code a CPU kernel runs (portable C++ or AVX2), shared by the kernels that have both, and
// the run-time check of the AVX2 ones.
#pragma once

#include <vector>

namespace kvb::kernels {

enum class KernelPath {
  kAuto,      // AVX2 when the CPU and the shape allow it, else portable
  kPortable,  // plain C++ (what a CPU without AVX2 runs)
  kAvx2,      // the AVX2 code (each kernel says which extensions it needs); throws when the CPU
              // or the shape does not allow it
};

// AVX2 and FMA as the compiler's run-time checks see them (OS support of the YMM state included).
inline bool cpu_has_avx2_fma() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

inline const char* kernel_path_name(KernelPath p) {
  return p == KernelPath::kAvx2 ? "avx2" : p == KernelPath::kPortable ? "portable" : "auto";
}

// The paths to run a kernel on (its tests): the portable one, and AVX2 when `avx2` (the kernel's
// own check of this CPU and the shape) allows it.
inline std::vector<KernelPath> kernel_paths(bool avx2) {
  std::vector<KernelPath> p = {KernelPath::kPortable};
  if (avx2) p.push_back(KernelPath::kAvx2);
  return p;
}

}  // namespace kvb::kernels
