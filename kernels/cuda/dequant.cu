#include "kernels/cuda/dequant.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace kvb::cuda {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// One thread per output element. codes: rows x (d*bits/8) bytes; code j of a row sits in byte
// j*bits/8 at bit offset (j*bits)%8.
__global__ void dequant_rows_kernel(const uint8_t* __restrict__ codes,
                                    const __half* __restrict__ scale,
                                    const __half* __restrict__ zero, int64_t rows, int64_t d,
                                    int bits, int64_t group, float* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * d) return;
  const int64_t r = i / d, j = i % d;
  const int64_t bytes_per_row = d * bits / 8;
  const int64_t bit = j * bits;
  const uint8_t byte = codes[r * bytes_per_row + bit / 8];
  const int code = (byte >> (bit % 8)) & ((1 << bits) - 1);
  const int64_t g = r * (d / group) + j / group;
  out[i] = static_cast<float>(code) * __half2float(scale[g]) + __half2float(zero[g]);
}

}  // namespace

static std::string g_last_error;

int device_count() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    g_last_error = cudaGetErrorString(e);
    cudaGetLastError();  // clear the sticky error
    return 0;
  }
  return n;
}

std::string_view last_error() { return g_last_error; }

int runtime_version() {
  int v = 0;
  return cudaRuntimeGetVersion(&v) == cudaSuccess ? v : 0;
}

void* device_alloc(size_t bytes) {
  void* p = nullptr;
  check(cudaMalloc(&p, bytes), "cudaMalloc");
  return p;
}
void device_free(void* p) { cudaFree(p); }
void copy_to_device(void* dst, const void* src, size_t bytes) {
  check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
}
void copy_to_host(void* dst, const void* src, size_t bytes) {
  check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
}
void synchronize() { check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

void dequantize_rows(const uint8_t* codes, const uint16_t* scale, const uint16_t* zero,
                     int64_t rows, int64_t d, int bits, int64_t group, float* out) {
  if (bits != 2 && bits != 4 && bits != 8) throw std::invalid_argument("bits must be 2, 4 or 8");
  if (group <= 0 || d % group != 0) throw std::invalid_argument("group must divide d");
  const int64_t n = rows * d;
  if (n == 0) return;
  const int threads = 256;
  const unsigned blocks = static_cast<unsigned>((n + threads - 1) / threads);
  dequant_rows_kernel<<<blocks, threads>>>(codes, reinterpret_cast<const __half*>(scale),
                                           reinterpret_cast<const __half*>(zero), rows, d, bits,
                                           group, out);
  check(cudaGetLastError(), "dequant_rows_kernel launch");
}

float time_dequantize_rows(const uint8_t* codes, const uint16_t* scale, const uint16_t* zero,
                           int64_t rows, int64_t d, int bits, int64_t group, float* out,
                           int iters) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "cudaEventCreate");
  check(cudaEventCreate(&b), "cudaEventCreate");
  dequantize_rows(codes, scale, zero, rows, d, bits, group, out);  // warm-up
  check(cudaEventRecord(a), "cudaEventRecord");
  for (int i = 0; i < iters; ++i) dequantize_rows(codes, scale, zero, rows, d, bits, group, out);
  check(cudaEventRecord(b), "cudaEventRecord");
  check(cudaEventSynchronize(b), "cudaEventSynchronize");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms;
}

float time_device_copy(void* dst, const void* src, size_t bytes, int iters) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "cudaEventCreate");
  check(cudaEventCreate(&b), "cudaEventCreate");
  check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpy D2D");
  check(cudaEventRecord(a), "cudaEventRecord");
  for (int i = 0; i < iters; ++i) check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpyAsync");
  check(cudaEventRecord(b), "cudaEventRecord");
  check(cudaEventSynchronize(b), "cudaEventSynchronize");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms;
}

}  // namespace kvb::cuda
