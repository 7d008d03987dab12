// CPU quantization kernels against their reference twins (kernels/reference/quant_reference.h).
// Tolerances: scales and zero points bit-identical; codes identical except where (x - zero) /
// scale lands within float rounding of a .5 tie (at most 0.1% of codes, off by one); dequantized
// values within 1e-6 absolute of the reference formula applied to the kernel's own codes.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include "kernels/cpu/quant_kernels.h"
#include "kernels/reference/quant_reference.h"

namespace kvb {
namespace {

torch::Tensor randx(std::vector<int64_t> shape, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  torch::Tensor x = torch::randn(shape, gen) * 2;
  x.select(3, 1).mul_(8);  // an outlier channel
  return x;
}

void expect_codes_close(const torch::Tensor& got, const torch::Tensor& want, int bits) {
  torch::Tensor a = kernels::unpack_codes(got, bits).to(torch::kInt32);
  torch::Tensor b = kernels::unpack_codes(want, bits).to(torch::kInt32);
  torch::Tensor diff = (a - b).abs();
  EXPECT_LE(diff.max().item<int>(), 1);
  EXPECT_LE(diff.gt(0).sum().item<int64_t>(), std::max<int64_t>(1, a.numel() / 1000));
}

TEST(QuantKernels, PackUnpackRoundTripAndMatchReference) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  for (int bits : {2, 4, 8}) {
    torch::Tensor codes = torch::randint(0, 1 << bits, {3, 5, 64}, gen).to(torch::kUInt8);
    torch::Tensor packed = kernels::pack_codes(codes, bits);
    EXPECT_EQ(packed.size(-1), 64 * bits / 8);
    EXPECT_TRUE(torch::equal(packed, reference::pack_codes(codes, bits))) << bits;
    EXPECT_TRUE(torch::equal(kernels::unpack_codes(packed, bits), codes)) << bits;
    EXPECT_TRUE(torch::equal(reference::unpack_codes(packed, bits), codes)) << bits;
  }
  // Four 2-bit codes per byte, the first in the lowest bits; two 4-bit codes per byte.
  torch::Tensor c = torch::tensor({1, 2, 3, 0, 2, 2, 0, 1}, torch::kUInt8).view({1, 8});
  torch::Tensor p = kernels::pack_codes(c, 2);
  ASSERT_EQ(p.size(1), 2);
  EXPECT_EQ(p[0][0].item<int>(), 1 | (2 << 2) | (3 << 4) | (0 << 6));
  EXPECT_EQ(p[0][1].item<int>(), 2 | (2 << 2) | (0 << 4) | (1 << 6));
  torch::Tensor p4 = kernels::pack_codes(torch::tensor({7, 12}, torch::kUInt8).view({1, 2}), 4);
  EXPECT_EQ(p4[0][0].item<int>(), 7 | (12 << 4));
}

TEST(QuantKernels, RowsMatchReference) {
  for (int bits : {2, 4, 8}) {
    for (int64_t group : {16, 32, 64}) {
      SCOPED_TRACE("bits " + std::to_string(bits) + " group " + std::to_string(group));
      torch::Tensor x = randx({2, 3, 37, 64}, bits * 100 + group);
      reference::Quantized want = reference::quantize_rows(x, bits, group);
      torch::Tensor codes = torch::empty({2, 3, 37, 64 * bits / 8}, torch::kUInt8);
      torch::Tensor scale = torch::empty({2, 3, 37, 64 / group}, torch::kHalf), zero = torch::empty_like(scale);
      kernels::quantize_rows(x, bits, group, codes, scale, zero);
      EXPECT_TRUE(torch::equal(scale, want.scale));
      EXPECT_TRUE(torch::equal(zero, want.zero));
      expect_codes_close(codes, want.codes, bits);
      torch::Tensor out = torch::empty_like(x);
      kernels::dequantize_rows(codes, scale, zero, bits, group, out);
      torch::Tensor ref_out = reference::dequantize_rows({codes, scale, zero}, bits, group);
      EXPECT_LE((out - ref_out).abs().max().item<double>(), 1e-6);
      // Within half a step, plus fp16 rounding of scale (clamped extremes) and zero point.
      torch::Tensor step = scale.to(torch::kFloat32).repeat_interleave(group, -1);
      EXPECT_TRUE(((out - x).abs() <= step * (0.5 + 1e-3 * ((1 << bits) - 1)) + 1e-3 * x.abs() + 1e-3).all().item<bool>());
    }
  }
}

TEST(QuantKernels, ColsMatchReference) {
  for (int bits : {2, 4}) {
    for (int64_t group : {8, 32}) {
      SCOPED_TRACE("bits " + std::to_string(bits) + " group " + std::to_string(group));
      torch::Tensor x = randx({1, 3, 64, 32}, bits * 10 + group);
      reference::Quantized want = reference::quantize_cols(x, bits, group);
      torch::Tensor codes = torch::empty({1, 3, 64, 32 * bits / 8}, torch::kUInt8);
      torch::Tensor scale = torch::empty({1, 3, 64 / group, 32}, torch::kHalf), zero = torch::empty_like(scale);
      kernels::quantize_cols(x, bits, group, codes, scale, zero);
      EXPECT_TRUE(torch::equal(scale, want.scale));
      EXPECT_TRUE(torch::equal(zero, want.zero));
      expect_codes_close(codes, want.codes, bits);
      torch::Tensor out = torch::empty_like(x);
      kernels::dequantize_cols(codes, scale, zero, bits, group, out);
      torch::Tensor ref_out = reference::dequantize_cols({codes, scale, zero}, bits, group);
      EXPECT_LE((out - ref_out).abs().max().item<double>(), 1e-6);
      torch::Tensor step = scale.to(torch::kFloat32).repeat_interleave(group, 2);
      EXPECT_TRUE(((out - x).abs() <= step * (0.5 + 1e-3 * ((1 << bits) - 1)) + 1e-3 * x.abs() + 1e-3).all().item<bool>());
    }
  }
}

TEST(QuantKernels, WriteIntoStridedViewsOfLargerBuffers) {
  torch::Tensor x = randx({1, 2, 32, 64}, 7);
  torch::Tensor codes = torch::full({1, 2, 100, 16}, 0xAB, torch::kUInt8);
  torch::Tensor scale = torch::zeros({1, 2, 100, 2}, torch::kHalf), zero = torch::zeros_like(scale);
  kernels::quantize_rows(x, 2, 32, codes.narrow(2, 10, 32), scale.narrow(2, 10, 32), zero.narrow(2, 10, 32));
  EXPECT_TRUE((codes.narrow(2, 0, 10) == 0xAB).all().item<bool>());
  EXPECT_TRUE((codes.narrow(2, 42, 58) == 0xAB).all().item<bool>());
  reference::Quantized want = reference::quantize_rows(x, 2, 32);
  expect_codes_close(codes.narrow(2, 10, 32), want.codes, 2);
  torch::Tensor out = torch::zeros({1, 2, 50, 64});
  kernels::dequantize_rows(codes.narrow(2, 10, 32), scale.narrow(2, 10, 32), zero.narrow(2, 10, 32), 2, 32,
                           out.narrow(2, 5, 32));
  EXPECT_TRUE((out.narrow(2, 0, 5) == 0).all().item<bool>());
  EXPECT_LE((out.narrow(2, 5, 32) - reference::dequantize_rows(want, 2, 32)).abs().max().item<double>(), 1e-6);
}

TEST(QuantKernels, ConstantGroupsQuantizeToTheirValue) {
  torch::Tensor x = torch::full({1, 1, 32, 32}, 1.25f);  // fp16-exact
  torch::Tensor codes = torch::empty({1, 1, 32, 8}, torch::kUInt8);
  torch::Tensor scale = torch::empty({1, 1, 1, 32}, torch::kHalf), zero = torch::empty_like(scale);
  kernels::quantize_cols(x, 2, 32, codes, scale, zero);
  torch::Tensor out = torch::empty_like(x);
  kernels::dequantize_cols(codes, scale, zero, 2, 32, out);
  EXPECT_TRUE(torch::equal(out, x));
}

}  // namespace
}  // namespace kvb
