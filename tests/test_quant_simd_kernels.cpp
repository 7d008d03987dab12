// The vectorized paths of the CPU quantization kernels (issue 22's throughput work), each check
// run on the SSE2 baseline and on AVX2 (where the CPU has it), held to exact equality —
// tolerance zero — with the scalar formulas they replace:
//   - quantize_rows / quantize_cols: every code is clamp(nearbyint((x - zero) / scale)) of the
//     kernel's own fp16 scale and zero (which match the reference twin bit for bit), on random
//     data, on exact half-way ties, constant groups (scale 0) and a huge range (scale infinite);
//     shapes that take the vector path (group / head_dim multiples of 16) and the scalar one;
//   - the fp16 scales and zeros are c10::Half() of the scalar range, bit for bit, on minima and
//     maxima from every exponent (the kernels round four at a time with c10's algorithm);
//   - quantize_rows_div(x, div) is quantize_rows(x / div) bit for bit;
//   - fp8: the tensor encode is the scalar encode on a sweep of fp32 bit patterns (every
//     exponent, both signs, NaN, infinities, fp32 subnormals), the tensor decode the scalar table
//     for all 256 codes (bit patterns, NaN included), and the fused scaled encode/decode the
//     unfused `fp8_encode(x / scale)` / `fp8_decode(c) * scale`, into strided views.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cpu/fp8_codec.h"
#include "kernels/cpu/quant_kernels.h"
#include "kernels/reference/quant_reference.h"

namespace kvb {
namespace {

using kernels::Fp8Format;

torch::Tensor randx(std::vector<int64_t> shape, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  torch::Tensor x = torch::randn(shape, gen) * 2;
  x.select(3, 1).mul_(8);  // an outlier channel
  return x;
}

// Puts special groups into x [B, H, N, D] along the quantization axis (rows: a row's first
// group; cols: channel 0 over the first group of rows): exact ties, a constant group, huge
// values. s = 0.25 and z = -1.5 are exact in fp16, and (max - min) / qmax = s exactly.
void add_special_cases(torch::Tensor& x, int bits, int64_t group, bool cols) {
  const float s = 0.25f, z = -1.5f, qmax = static_cast<float>((1 << bits) - 1);
  auto at = [&](int64_t row, int64_t i) -> torch::Tensor {  // element i of special group `row`
    return cols ? x[0][0][row * group + i].select(0, 0) : x[0][0][row].select(0, i);
  };
  // Group 0 (rows: row 0; cols: rows [0, group)): min z, max z + qmax * s, the rest ties.
  for (int64_t i = 0; i < group; ++i) {
    float v = z + (static_cast<float>(i % (1 << bits)) + 0.5f) * s;
    if (v > z + qmax * s) v = z + qmax * s;
    at(0, i).fill_(v);
  }
  at(0, 0).fill_(z);
  at(0, group - 1).fill_(z + qmax * s);
  // Group 1: constant (scale 0: every code 0).
  for (int64_t i = 0; i < group; ++i) at(1, i).fill_(3.0f);
  // Group 2: a huge range (the fp16 scale overflows to infinity, the zero stays finite: every
  // quotient is 0).
  for (int64_t i = 0; i < group; ++i) at(2, i).fill_(i % 2 ? 1e30f : -1000.0f);
}

// The codes the scalar formula gives for x with per-element scale s and zero z (fp32).
torch::Tensor formula_codes(const torch::Tensor& x, const torch::Tensor& s, const torch::Tensor& z,
                            int bits) {
  torch::Tensor xc = x.contiguous(), sc = s.contiguous(), zc = z.contiguous();
  torch::Tensor out = torch::empty(xc.sizes(), torch::kUInt8);
  const float* xp = xc.data_ptr<float>();
  const float* sp = sc.data_ptr<float>();
  const float* zp = zc.data_ptr<float>();
  uint8_t* op = out.data_ptr<uint8_t>();
  const float qmax = static_cast<float>((1 << bits) - 1);
  for (int64_t i = 0; i < xc.numel(); ++i) {
    if (!(sp[i] > 0)) {
      op[i] = 0;
      continue;
    }
    const float q = std::nearbyint((xp[i] - zp[i]) / sp[i]);
    op[i] = static_cast<uint8_t>(std::min(std::max(q, 0.0f), qmax));
  }
  return out;
}

void RowCodesAreExactlyTheDivisionFormula() {
  for (int bits : {2, 4, 8}) {
    for (int64_t d : {64, 128}) {
      for (int64_t group : {8, 16, 32, 64, 128}) {  // 8: the scalar path
        if (group > d) continue;
        SCOPED_TRACE("bits " + std::to_string(bits) + " d " + std::to_string(d) + " group " +
                     std::to_string(group));
        torch::Tensor x = randx({2, 3, 41, d}, static_cast<uint64_t>(bits * 1000 + d + group));
        add_special_cases(x, bits, group, /*cols=*/false);
        torch::Tensor codes = torch::empty({2, 3, 41, d * bits / 8}, torch::kUInt8);
        torch::Tensor scale = torch::empty({2, 3, 41, d / group}, torch::kHalf);
        torch::Tensor zero = torch::empty_like(scale);
        kernels::quantize_rows(x, bits, group, codes, scale, zero);
        reference::Quantized want = reference::quantize_rows(x, bits, group);
        EXPECT_TRUE(torch::equal(scale, want.scale));
        EXPECT_TRUE(torch::equal(zero, want.zero));
        torch::Tensor s = scale.to(torch::kFloat32).repeat_interleave(group, -1);
        torch::Tensor z = zero.to(torch::kFloat32).repeat_interleave(group, -1);
        torch::Tensor got = kernels::unpack_codes(codes, bits);
        torch::Tensor exp = formula_codes(x, s, z, bits);
        EXPECT_TRUE(torch::equal(got, exp)) << (got != exp).sum().item<int64_t>() << " differ";
        // The ties of the special row: half-way codes round to even.
        EXPECT_EQ(got[0][0][0][2].item<int>(), 2);                                // z + 2.5 s
        EXPECT_TRUE((got[0][0][1].narrow(0, 0, group) == 0).all().item<bool>());  // constant
      }
    }
  }
}

void ColCodesAreExactlyTheDivisionFormula() {
  for (int bits : {2, 4, 8}) {
    for (int64_t d : {8, 16, 32, 64, 128}) {  // 8: the scalar path
      for (int64_t group : {8, 32}) {
        SCOPED_TRACE("bits " + std::to_string(bits) + " d " + std::to_string(d) + " group " +
                     std::to_string(group));
        torch::Tensor x =
            randx({2, 3, 3 * group, d}, static_cast<uint64_t>(bits * 100 + d + group));
        add_special_cases(x, bits, group, /*cols=*/true);
        torch::Tensor codes = torch::empty({2, 3, 3 * group, d * bits / 8}, torch::kUInt8);
        torch::Tensor scale = torch::empty({2, 3, 3, d}, torch::kHalf),
                      zero = torch::empty_like(scale);
        kernels::quantize_cols(x, bits, group, codes, scale, zero);
        reference::Quantized want = reference::quantize_cols(x, bits, group);
        EXPECT_TRUE(torch::equal(scale, want.scale));
        EXPECT_TRUE(torch::equal(zero, want.zero));
        torch::Tensor s = scale.to(torch::kFloat32).repeat_interleave(group, 2);
        torch::Tensor z = zero.to(torch::kFloat32).repeat_interleave(group, 2);
        torch::Tensor got = kernels::unpack_codes(codes, bits);
        torch::Tensor exp = formula_codes(x, s, z, bits);
        EXPECT_TRUE(torch::equal(got, exp)) << (got != exp).sum().item<int64_t>() << " differ";
        EXPECT_EQ(got[0][0][2][0].item<int>(), 2);  // z + 2.5 s: a tie, to even
      }
    }
  }
}

void RowsDivIsQuantizingTheQuotient() {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  for (int bits : {4, 8}) {
    for (int64_t group : {16, 64, 8}) {
      SCOPED_TRACE("bits " + std::to_string(bits) + " group " + std::to_string(group));
      torch::Tensor x = randx({2, 3, 29, 64}, static_cast<uint64_t>(bits + group));
      torch::Tensor div = torch::rand({3, 64}, gen) * 3 + 0.05;
      // Into rows 5.. of larger buffers (strided views), as a store appends.
      torch::Tensor codes = torch::zeros({2, 3, 40, 64 * bits / 8}, torch::kUInt8);
      torch::Tensor scale = torch::zeros({2, 3, 40, 64 / group}, torch::kHalf);
      torch::Tensor zero = torch::zeros_like(scale);
      kernels::quantize_rows_div(x, div, bits, group, codes.narrow(2, 5, 29),
                                 scale.narrow(2, 5, 29), zero.narrow(2, 5, 29));
      torch::Tensor c2 = torch::empty({2, 3, 29, 64 * bits / 8}, torch::kUInt8);
      torch::Tensor s2 = torch::empty({2, 3, 29, 64 / group}, torch::kHalf),
                    z2 = torch::empty_like(s2);
      kernels::quantize_rows(x / div.view({1, 3, 1, 64}), bits, group, c2, s2, z2);
      EXPECT_TRUE(torch::equal(codes.narrow(2, 5, 29), c2));
      EXPECT_TRUE(torch::equal(scale.narrow(2, 5, 29), s2));
      EXPECT_TRUE(torch::equal(zero.narrow(2, 5, 29), z2));
      EXPECT_TRUE((codes.narrow(2, 0, 5) == 0).all().item<bool>());
      EXPECT_TRUE((codes.narrow(2, 34, 6) == 0).all().item<bool>());
    }
  }
}

// The fp16 rounding of scales and zeros (vectorized in the kernels as c10's algorithm) on minima
// and maxima drawn from every exponent, both signs, fp32 subnormals and infinities: bit for bit
// c10::Half() of the scalar formula, through the row and the column kernels.
void ScalesAndZerosAreC10HalvesOfTheRange() {
  std::mt19937 rng(3);
  auto any_float = [&]() {
    for (;;) {
      uint32_t u = static_cast<uint32_t>(rng());
      float f = 0;
      std::memcpy(&f, &u, 4);
      if (!std::isnan(f)) return f;
    }
  };
  const int64_t n = 4096, d = 16;
  torch::Tensor x = torch::empty({1, 1, n, d});
  std::vector<float> lo(n), hi(n);
  for (int64_t r = 0; r < n; ++r) {
    float a = any_float(), b = any_float();
    if (r % 7 == 0) a = std::ldexp(a, -100);  // tiny and fp32 subnormal minima
    if (r % 11 == 0) b = std::numeric_limits<float>::infinity();
    if (r % 13 == 0) b = a;  // constant
    lo[static_cast<size_t>(r)] = std::min(a, b);
    hi[static_cast<size_t>(r)] = std::max(a, b);
    x[0][0][r].fill_(lo[static_cast<size_t>(r)]);
    x[0][0][r][3] = hi[static_cast<size_t>(r)];
  }
  for (int bits : {2, 4, 8}) {
    SCOPED_TRACE("bits " + std::to_string(bits));
    const float qmax = static_cast<float>((1 << bits) - 1);
    torch::Tensor codes = torch::empty({1, 1, n, d * bits / 8}, torch::kUInt8);
    torch::Tensor scale = torch::empty({1, 1, n, 1}, torch::kHalf), zero = torch::empty_like(scale);
    kernels::quantize_rows(x, bits, d, codes, scale, zero);
    // Columns: the same values transposed, one group of n rows per channel.
    torch::Tensor xt = x.transpose(2, 3).contiguous();  // [1, 1, d, n]
    torch::Tensor ct = torch::empty({1, 1, d, n * bits / 8}, torch::kUInt8);
    torch::Tensor st = torch::empty({1, 1, 1, n}, torch::kHalf), zt = torch::empty_like(st);
    kernels::quantize_cols(xt, bits, d, ct, st, zt);
    const at::Half* sp = scale.data_ptr<at::Half>();
    const at::Half* zp = zero.data_ptr<at::Half>();
    const at::Half* stp = st.data_ptr<at::Half>();
    const at::Half* ztp = zt.data_ptr<at::Half>();
    int64_t bad = 0;
    for (int64_t r = 0; r < n; ++r) {
      const size_t i = static_cast<size_t>(r);
      const at::Half ws((hi[i] - lo[i]) / qmax), wz(lo[i]);
      bad += sp[r].x != ws.x || zp[r].x != wz.x || stp[r].x != ws.x || ztp[r].x != wz.x;
    }
    EXPECT_EQ(bad, 0);
  }
}

uint32_t bits_of(float f) {
  uint32_t u = 0;
  std::memcpy(&u, &f, 4);
  return u;
}

float float_of(uint32_t u) {
  float f = 0;
  std::memcpy(&f, &u, 4);
  return f;
}

void Fp8TensorPathsAreTheScalarCodec() {
  // Bit patterns: a stride through all 2^31 magnitudes (every exponent), each with both signs,
  // plus the edges: zeros, fp32 subnormals, NaN payloads, infinities, each format's max.
  std::vector<float> xs;
  for (uint64_t u = 0; u < (uint64_t{1} << 31); u += 2039) {
    xs.push_back(float_of(static_cast<uint32_t>(u)));
    xs.push_back(float_of(static_cast<uint32_t>(u) | 0x80000000u));
  }
  for (uint32_t u :
       {0x00000000u, 0x80000000u, 0x00000001u, 0x007FFFFFu, 0x7F800000u, 0xFF800000u, 0x7FC00000u,
        0xFFC00000u, 0x7F800001u, 0x7FFFFFFFu, 0x43E00000u, 0x43E80000u, 0x47600000u, 0x47700000u})
    xs.push_back(float_of(u));
  for (Fp8Format f : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
    SCOPED_TRACE(f == Fp8Format::kE4M3 ? "e4m3" : "e5m2");
    for (int off : {0, 5}) {  // a tail that is not a multiple of 16
      torch::Tensor t = torch::tensor(std::vector<float>(xs.begin() + off, xs.end()));
      torch::Tensor codes = kernels::fp8_encode(t, f);
      const uint8_t* c = codes.data_ptr<uint8_t>();
      int64_t bad = 0;
      for (int64_t i = 0; i < t.numel(); ++i)
        bad += c[i] != kernels::fp8_encode(xs[static_cast<size_t>(i + off)], f);
      EXPECT_EQ(bad, 0);
    }
    torch::Tensor all = torch::arange(256, torch::kInt32).to(torch::kUInt8).repeat({3});
    torch::Tensor dec = kernels::fp8_decode(all.narrow(0, 0, 256 * 3 - 7), f);
    const float* dp = dec.data_ptr<float>();
    for (int64_t i = 0; i < dec.numel(); ++i)
      EXPECT_EQ(bits_of(dp[i]), bits_of(kernels::fp8_decode(static_cast<uint8_t>(i % 256), f)))
          << i;
  }
}

void Fp8ScaledIsTheUnfusedExpression() {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(8);
  for (Fp8Format f : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
    for (int64_t heads_in_scale : {1, 3}) {
      SCOPED_TRACE(std::string(f == Fp8Format::kE4M3 ? "e4m3" : "e5m2") + " scale cols " +
                   std::to_string(heads_in_scale));
      torch::Tensor x = torch::randn({2, 3, 37, 20}, gen) * 5;  // 740 per head: a tail
      x[0][1][3][4].fill_(1e-7f);                               // an fp8 subnormal after scaling
      x[1][2][0][0].fill_(1e6f);                                // saturates
      torch::Tensor scale = (torch::rand({2, heads_in_scale}, gen) * 0.2 + 0.01).contiguous();
      torch::Tensor s4 = scale.view({2, heads_in_scale, 1, 1});
      torch::Tensor codes = torch::full({2, 3, 50, 20}, 0xAB, torch::kUInt8);
      kernels::fp8_encode_scaled(x, scale, f, codes.narrow(2, 7, 37));
      EXPECT_TRUE(torch::equal(codes.narrow(2, 7, 37), kernels::fp8_encode(x / s4, f)));
      EXPECT_TRUE((codes.narrow(2, 0, 7) == 0xAB).all().item<bool>());
      EXPECT_TRUE((codes.narrow(2, 44, 6) == 0xAB).all().item<bool>());
      torch::Tensor out = torch::zeros({2, 3, 40, 20});
      kernels::fp8_decode_scaled(codes.narrow(2, 7, 37), scale, f, out.narrow(2, 1, 37));
      torch::Tensor want = kernels::fp8_decode(codes.narrow(2, 7, 37), f) * s4;
      EXPECT_TRUE(torch::equal(out.narrow(2, 1, 37), want));
      EXPECT_TRUE((out.narrow(2, 0, 1) == 0).all().item<bool>());
      EXPECT_TRUE((out.narrow(2, 38, 2) == 0).all().item<bool>());
    }
  }
}

// QServe's statistic in one pass: x.abs().amax({0, 2}) exactly, NaN and infinities included, on
// a strided view.
TEST(QuantKernelsChannelAbsmax, IsAbsThenAmaxOverBatchAndTokens) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(12);
  torch::Tensor buf = torch::randn({2, 3, 50, 24}, gen) * 3;
  torch::Tensor x = buf.narrow(2, 4, 41);
  x[1][2][7][5].fill_(std::numeric_limits<float>::quiet_NaN());
  x[0][1][40][0].fill_(-std::numeric_limits<float>::infinity());
  x[0][0].select(1, 9).zero_();
  x[1][0].select(1, 9).fill_(-0.0f);
  torch::Tensor got = kernels::channel_absmax(x), want = x.abs().amax({0, 2});
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_TRUE(torch::isnan(got[2][5]).item<bool>());
  EXPECT_TRUE(torch::equal(got.nan_to_num(-1), want.nan_to_num(-1)));
}

// Every check on both vector paths: kAuto (AVX2 where the CPU has it) and the SSE2 baseline.
class QuantSimdKernels : public ::testing::TestWithParam<kernels::QuantSimd> {
 protected:
  void SetUp() override {
    kernels::set_quant_simd(GetParam());
    std::cout << "[ path     ] " << (kernels::quant_simd_uses_avx2() ? "AVX2" : "baseline") << "\n";
  }
  void TearDown() override { kernels::set_quant_simd(kernels::QuantSimd::kAuto); }
};

TEST_P(QuantSimdKernels, RowCodesAreExactlyTheDivisionFormula) {
  RowCodesAreExactlyTheDivisionFormula();
}
TEST_P(QuantSimdKernels, ColCodesAreExactlyTheDivisionFormula) {
  ColCodesAreExactlyTheDivisionFormula();
}
TEST_P(QuantSimdKernels, RowsDivIsQuantizingTheQuotient) { RowsDivIsQuantizingTheQuotient(); }
TEST_P(QuantSimdKernels, ScalesAndZerosAreC10HalvesOfTheRange) {
  ScalesAndZerosAreC10HalvesOfTheRange();
}
TEST_P(QuantSimdKernels, Fp8TensorPathsAreTheScalarCodec) { Fp8TensorPathsAreTheScalarCodec(); }
TEST_P(QuantSimdKernels, Fp8ScaledIsTheUnfusedExpression) { Fp8ScaledIsTheUnfusedExpression(); }

INSTANTIATE_TEST_SUITE_P(Paths, QuantSimdKernels,
                         ::testing::Values(kernels::QuantSimd::kAuto,
                                           kernels::QuantSimd::kBaseline),
                         [](const ::testing::TestParamInfo<kernels::QuantSimd>& i) {
                           return i.param == kernels::QuantSimd::kAuto ? "Auto" : "Baseline";
                         });

}  // namespace
}  // namespace kvb
