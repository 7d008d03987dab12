// CUDA kernels against their CPU reference twins, on raw device pointers. Compiled always; skips
// at run time when the build has no CUDA kernels (KVB_CUDA=OFF) or the machine has no GPU.
#include <gtest/gtest.h>

#include <torch/types.h>

#include "kernels/reference/quant_reference.h"
#ifdef KVB_HAVE_CUDA_KERNELS
#include "kernels/cuda/dequant.h"
#endif

namespace kvb {
namespace {

TEST(CudaKernels, DequantizeRowsMatchesReference) {
#ifndef KVB_HAVE_CUDA_KERNELS
  GTEST_SKIP() << "built without CUDA kernels (KVB_CUDA=OFF or no nvcc)";
#else
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device: " << cuda::last_error();
  torch::manual_seed(3);
  for (int bits : {2, 4, 8}) {
    for (int64_t group : {32, 64}) {
      torch::Tensor x = torch::randn({2, 3, 37, 64});  // [B, H, N, D]
      reference::Quantized q = reference::quantize_rows(x, bits, group);
      torch::Tensor want = reference::dequantize_rows(q, bits, group).contiguous();
      torch::Tensor codes = q.codes.contiguous(), scale = q.scale.contiguous(), zero = q.zero.contiguous();
      const int64_t rows = 2 * 3 * 37, d = 64;
      void* dc = cuda::device_alloc(codes.numel());
      void* ds = cuda::device_alloc(scale.numel() * 2);
      void* dz = cuda::device_alloc(zero.numel() * 2);
      void* dout = cuda::device_alloc(rows * d * 4);
      cuda::copy_to_device(dc, codes.data_ptr(), codes.numel());
      cuda::copy_to_device(ds, scale.data_ptr(), scale.numel() * 2);
      cuda::copy_to_device(dz, zero.data_ptr(), zero.numel() * 2);
      cuda::dequantize_rows(static_cast<const uint8_t*>(dc), static_cast<const uint16_t*>(ds),
                            static_cast<const uint16_t*>(dz), rows, d, bits, group, static_cast<float*>(dout));
      torch::Tensor got = torch::empty_like(want);
      cuda::copy_to_host(got.data_ptr(), dout, rows * d * 4);
      for (void* p : {dc, ds, dz, dout}) cuda::device_free(p);
      // Same fp32 formula on both sides; allow for a fused multiply-add on the GPU.
      EXPECT_TRUE(torch::allclose(got, want, 1e-6, 1e-6)) << "bits=" << bits << " group=" << group
                                                         << " max err " << (got - want).abs().max().item<float>();
    }
  }
#endif
}

}  // namespace
}  // namespace kvb
