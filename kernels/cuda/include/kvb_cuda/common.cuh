// Shared device helpers of the header-only CUDA kernels (kernels/cuda/include/kvb_cuda/*.cuh).
// Included only by .cu files; the plain C++ entry points are kernels/cuda/dispatch.h.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace kvb::cuda::detail {

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// A [B, H, N, X] device tensor whose last two dims are contiguous: row i of (b, h) starts at
// base + b * sb + h * sh + i * X (strides in elements; X is known to the reader).
template <typename T>
struct Rows {
  const T* base = nullptr;
  int64_t sb = 0, sh = 0;
  __device__ __forceinline__ const T* row(int64_t b, int64_t h, int64_t i, int64_t x) const {
    return base + b * sb + h * sh + i * x;
  }
};

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
// fp16 bits as stored by torch (at::Half) and by kernels/cpu/quant_kernels.h.
__device__ __forceinline__ float half_bits_to_float(uint16_t bits) {
  return __half2float(__ushort_as_half(bits));
}

// Code c of a packed row: 8/BITS codes per byte, the first in the lowest bits.
template <int BITS>
__device__ __forceinline__ int unpack_code(const uint8_t* row, int c) {
  constexpr int kPer = 8 / BITS;
  constexpr int kMask = (1 << BITS) - 1;
  return (row[c / kPer] >> ((c % kPer) * BITS)) & kMask;
}

// All-reduce over the whole warp (every lane must call it).
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

inline unsigned ceil_div_u(int64_t a, int64_t b) { return static_cast<unsigned>((a + b - 1) / b); }

}  // namespace kvb::cuda::detail
