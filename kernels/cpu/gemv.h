// Matrix-vector product for the decode step (one token: every projection is a weight matrix read
// once against one activation row). Memory-bound: the weights stream from DRAM once per token,
// so the kernel reads each row straight through with AVX2 FMAs (portable loop without AVX2) and
// splits the rows over libtorch's intra-op threads. Replaces torch::mv on the engine's decode
// path: with Debian's pthread OpenBLAS, every mv wakes OpenBLAS's own threads, which on a small
// machine spin (sched_yield) against libtorch's OpenMP threads.
#pragma once

#include <torch/types.h>

#include <cstdint>

#include "kernels/cpu/kernel_path.h"

namespace kvb::kernels {

// y [N] = w [N, K] x [K] (+ b [N] when defined): w, x (and b) float32, contiguous, on the CPU
// (checked; kvb::Error otherwise). Each y[n] is one row's dot product summed in 32 (AVX2) or 1
// (portable) partial sums, so it differs from another BLAS's in float rounding only.
torch::Tensor gemv(const torch::Tensor& w, const torch::Tensor& x, const torch::Tensor& b = {});

// Whether gemv() takes these operands (fp32, contiguous, CPU, shapes agree).
bool gemv_accepts(const torch::Tensor& w, const torch::Tensor& x, const torch::Tensor& b = {});

// For tests: force a path (kAvx2 throws where the CPU lacks AVX2+FMA, cpu_has_avx2_fma()).
torch::Tensor gemv_with(KernelPath path, const torch::Tensor& w, const torch::Tensor& x,
                        const torch::Tensor& b = {});

}  // namespace kvb::kernels
