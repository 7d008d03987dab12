// Orthonormal fast Walsh–Hadamard transform over the last dim (GPU twin of
// kernels/cpu/hadamard.h): y = H x / sqrt(n), H the Sylvester Hadamard matrix. One CTA per row,
// the row in shared memory, log2(n) butterfly stages (stride 1, 2, 4, ...), then the scaling.
#pragma once

#include "common.cuh"

namespace kvb::cuda::detail {

constexpr int kFwhtMaxN = 8192;  // 32 KiB of shared memory per row (under the 48 KiB default)

// x [rows, n] fp32, rows contiguous, transformed in place. n a power of 2, 1 <= n <= kFwhtMaxN;
// dynamic shared memory n floats; norm = (float)(1 / sqrt(n)) (as the CPU kernel rounds it).
template <typename T>
__global__ void fwht_kernel(T* __restrict__ x, int n, float norm) {
  extern __shared__ float fwht_buf[];
  T* row = x + static_cast<int64_t>(blockIdx.x) * n;
  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  for (int i = tid; i < n; i += nt) fwht_buf[i] = to_float(row[i]);
  __syncthreads();
  for (int h = 1; h < n; h <<= 1) {
    for (int i = tid; i < n / 2; i += nt) {
      const int lo = (i / h) * 2 * h + (i % h), hi = lo + h;
      const float a = fwht_buf[lo], b = fwht_buf[hi];
      fwht_buf[lo] = a + b;
      fwht_buf[hi] = a - b;
    }
    __syncthreads();
  }
  for (int i = tid; i < n; i += nt) row[i] = static_cast<T>(fwht_buf[i] * norm);
}

template <typename T>
void launch_fwht(T* x, int64_t rows, int n, float norm, cudaStream_t stream) {
  const int threads = n / 2 < 32 ? 32 : (n / 2 > 512 ? 512 : n / 2);
  fwht_kernel<T><<<static_cast<unsigned>(rows), threads, static_cast<size_t>(n) * sizeof(float),
                   stream>>>(x, n, norm);
  check_cuda(cudaGetLastError(), "fwht_kernel launch");
}

}  // namespace kvb::cuda::detail
