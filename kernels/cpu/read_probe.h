// The read-bandwidth probe the benchmarks' roofline fractions divide by: a sum over a large
// float32 buffer, AVX2 with eight independent accumulators (portable loop without AVX2), split
// in contiguous chunks over libtorch's intra-op threads. It issues nothing but sequential loads
// and adds, so it reads as fast as this machine's cores can pull from DRAM: torch's own sum()
// ran below what the decode step's matrix-vector product reached.
#pragma once

#include <torch/types.h>

namespace kvb::kernels {

// The sum of a contiguous float32 CPU tensor's elements (in an order of its own: for timing).
double read_probe_sum(const torch::Tensor& x);

}  // namespace kvb::kernels
