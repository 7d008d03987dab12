// Fused KIVI decode attention (kernels/cpu/kivi_attention.h) against its float64 reference twin
// (kernels/reference/kivi_attention_reference.h), both paths (AVX2 where the CPU has it, and the
// portable one), over a grid of bits x head_dim x GQA group x batch x slot splits. The engine's
// use of it: tests/test_kivi_attention_engine.cpp.
//
// Tolerance (kernel vs reference): max |out - out_ref| <= 1e-4 and max |lse - lse_ref| <= 1e-4,
// outputs O(1) and lse O(log S). fp32 accumulation gives about 1e-6; a single misplaced slot
// gives more than 1e-3 (KiviAttention.ToleranceCatchesOneMisplacedSlot). Every failure prints
// every parameter of the case.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/kivi_attention.h"
#include "kernels/reference/kivi_attention_reference.h"

namespace kvb {
namespace {

constexpr double kTol = 1e-4;

struct Case {
  int bits = 2;
  int64_t d = 64, g = 1, b = 1, hkv = 2, t = 1;
  int64_t group = 32, gv = 32;
  int64_t nq = 0, nrk = 0, nqv = 0, nrv = 0;
  std::string str() const {
    std::ostringstream os;
    os << "bits=" << bits << " D=" << d << " G=" << g << " B=" << b << " H_kv=" << hkv << " T=" << t
       << " group=" << group << " value_group=" << gv << " Nq=" << nq << " Nrk=" << nrk
       << " Nqv=" << nqv << " Nrv=" << nrv << " S=" << nq + nrk;
    return os.str();
  }
};

struct Inputs {
  torch::Tensor q;
  kernels::KiviCache cache;
};

// Random codes and scales (what the kernel reads; no need to quantize real data), laid in
// buffers larger than the live rows and narrowed, as the store holds them.
Inputs make_inputs(const Case& c, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t packed = c.d * c.bits / 8, spare = 3;
  auto rows = [&](int64_t n, int64_t x, torch::ScalarType dt) {
    torch::Tensor buf;
    if (dt == torch::kUInt8)
      buf = torch::randint(0, 256, {c.b, c.hkv, n + spare, x}, gen).to(torch::kUInt8);
    else
      buf = torch::randn({c.b, c.hkv, n + spare, x}, gen);
    return buf.narrow(2, 0, n);
  };
  auto scales = [&](int64_t n, int64_t x) {
    const double hi = 4.0 / ((1 << c.bits) - 1);
    return (torch::rand({c.b, c.hkv, n + spare, x}, gen) * hi + 0.05)
        .to(torch::kHalf)
        .narrow(2, 0, n);
  };
  auto zeros = [&](int64_t n, int64_t x) {
    return (torch::rand({c.b, c.hkv, n + spare, x}, gen) * -2.5 - 0.2)
        .to(torch::kHalf)
        .narrow(2, 0, n);
  };
  Inputs in;
  in.q = torch::randn({c.b, c.hkv * c.g, c.t, c.d}, gen) * 1.5;
  kernels::KiviCache& k = in.cache;
  k.bits = c.bits;
  k.group = c.group;
  k.value_group = c.gv;
  k.key_codes = rows(c.nq, packed, torch::kUInt8);
  k.key_scale = scales(c.nq / c.group, c.d);
  k.key_zero = zeros(c.nq / c.group, c.d);
  k.key_residual = rows(c.nrk, c.d, torch::kFloat32);
  k.value_codes = rows(c.nqv, packed, torch::kUInt8);
  k.value_scale = scales(c.nqv, c.d / c.gv);
  k.value_zero = zeros(c.nqv, c.d / c.gv);
  k.value_residual = rows(c.nrv, c.d, torch::kFloat32);
  return in;
}

struct Err {
  double out = 0, lse = 0;
};

Err compare(const Inputs& in, const kernels::AttentionPart& got,
            const reference::AttentionPart64& want) {
  Err e;
  e.out = (got.out.to(torch::kFloat64) - want.out).abs().max().item<double>();
  e.lse = (got.lse.to(torch::kFloat64) - want.lse).abs().max().item<double>();
  return e;
}

std::vector<kernels::KernelPath> paths_for(int64_t d, int64_t gv) {
  return kernels::kernel_paths(kernels::kivi_attention_avx2_supports(d, gv));
}

const char* path_name(kernels::KernelPath p) { return kernels::kernel_path_name(p); }

void check_case(const Case& c, uint64_t seed, int* checked) {
  const Inputs in = make_inputs(c, seed);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  const reference::AttentionPart64 want = reference::kivi_attention(in.q, in.cache, scale);
  for (kernels::KernelPath path : paths_for(c.d, c.gv)) {
    const kernels::AttentionPart got = kernels::kivi_decode_attention(in.q, in.cache, scale, path);
    const Err e = compare(in, got, want);
    EXPECT_LE(e.out, kTol) << "out: " << c.str() << " path=" << path_name(path) << " seed=" << seed
                           << " max|err|=" << e.out;
    EXPECT_LE(e.lse, kTol) << "lse: " << c.str() << " path=" << path_name(path) << " seed=" << seed
                           << " max|err|=" << e.lse;
    ++*checked;
  }
}

// Slot splits (Nq, Nrk, Nqv, Nrv) for key group 32 and blocks of 256 slots: residual only
// (ragged lengths, a group minus one), whole groups, Nrk = 0, Nrk = residual - 1, value splits
// on either side of the key split, several blocks merged with a ragged last block.
const std::vector<std::array<int64_t, 4>> kSplits = {
    {0, 1, 0, 1},       {0, 1, 1, 0},     {0, 31, 0, 31},     {0, 31, 7, 24},
    {32, 0, 0, 32},     {32, 0, 32, 0},   {32, 5, 20, 17},    {64, 0, 1, 63},
    {64, 127, 63, 128}, {128, 3, 3, 128}, {288, 0, 160, 128}, {512, 127, 511, 128},
    {256, 1, 257, 0},   {96, 40, 136, 0},
};

TEST(KiviAttention, MatchesReferenceOverTheGrid) {
  int checked = 0;
  uint64_t seed = 1;
  for (int bits : {2, 4})
    for (int64_t d : {32, 64, 128})
      for (int64_t g : {1, 3, 4})
        for (int64_t b : {1, 2})
          for (const auto& sp : kSplits) {
            Case c;
            c.bits = bits;
            c.d = d;
            c.g = g;
            c.b = b;
            c.hkv = b == 1 ? 3 : 2;
            c.nq = sp[0];
            c.nrk = sp[1];
            c.nqv = sp[2];
            c.nrv = sp[3];
            check_case(c, ++seed, &checked);
          }
  EXPECT_GT(checked, 2 * 3 * 3 * 2 * static_cast<int>(kSplits.size()) - 1);
  if (!kernels::kivi_attention_cpu_has_avx2())
    std::cout << "[ note ] this CPU has no AVX2: only the portable path was checked\n";
}

// Other key groups (odd slot counts per group too) and value groups, several query rows per
// head (T > 1), one KV head.
TEST(KiviAttention, MatchesReferenceForOtherGroupsAndRows) {
  int checked = 0;
  uint64_t seed = 1000;
  for (int bits : {2, 4})
    for (int64_t d : {32, 64, 128})
      for (int64_t group : {3, 8, 12, 16, 64, 128})
        for (int64_t t : {1, 2}) {
          Case c;
          c.bits = bits;
          c.d = d;
          c.g = 3;
          c.hkv = 1;
          c.t = t;
          c.group = group;
          // KIVI's value group is min(group, D); key groups that are not a multiple of 8 (an odd
          // slot count per group) are paired with value group 32 so that the AVX2 path runs too.
          c.gv = group % 8 == 0 ? std::min(group, d) : 32;
          c.nq = 3 * group;
          c.nrk = group - 1;
          c.nqv = 3 * group - 5;
          c.nrv = group + 4;
          check_case(c, ++seed, &checked);
        }
  EXPECT_GT(checked, 0);
}

// Head sizes that are multiples of 8 but not of 32 take the portable path under kAuto.
TEST(KiviAttention, PortableForNarrowHeads) {
  int checked = 0;
  for (int64_t d : {8, 16, 24, 40}) {
    Case c;
    c.d = d;
    c.g = 2;
    c.group = 8;
    c.gv = 8;
    c.nq = 24;
    c.nrk = 7;
    c.nqv = 11;
    c.nrv = 20;
    EXPECT_FALSE(kernels::kivi_attention_avx2_supports(d, 8)) << d;
    check_case(c, 77 + static_cast<uint64_t>(d), &checked);
    const Inputs in = make_inputs(c, 5);
    const auto want = reference::kivi_attention(in.q, in.cache, 0.3);
    const auto got = kernels::kivi_decode_attention(in.q, in.cache, 0.3);
    const Err e = compare(in, got, want);
    EXPECT_LE(std::max(e.out, e.lse), kTol) << "auto path: " << c.str();
  }
  EXPECT_EQ(checked, 4);
}

TEST(KiviAttention, EmptyCacheGivesMinusInfinityAndZeros) {
  Case c;
  const Inputs in = make_inputs(c, 3);
  const kernels::AttentionPart got = kernels::kivi_decode_attention(in.q, in.cache, 0.125);
  EXPECT_TRUE(torch::isneginf(got.lse).all().item<bool>());
  EXPECT_EQ(got.out.abs().max().item<float>(), 0.0f);
}

// The tolerance is tight enough to see one slot read wrongly: the reference over a cache whose
// key/value split moved by one slot (the first residual value taken as a quantized slot's) is
// far outside it.
TEST(KiviAttention, ToleranceCatchesOneMisplacedSlot) {
  Case c;
  c.nq = 64;
  c.nrk = 10;
  c.nqv = 30;
  c.nrv = 44;
  Inputs in = make_inputs(c, 9);
  const double scale = 0.125;
  const kernels::AttentionPart got = kernels::kivi_decode_attention(in.q, in.cache, scale);
  Inputs moved = in;
  moved.cache.value_residual = in.cache.value_residual.clone();
  moved.cache.value_residual.narrow(2, 0, 1).copy_(in.cache.value_residual.narrow(2, 1, 1));
  const Err e = compare(in, got, reference::kivi_attention(in.q, moved.cache, scale));
  EXPECT_GT(e.out, 10 * kTol) << c.str();
  const Err same = compare(in, got, reference::kivi_attention(in.q, in.cache, scale));
  EXPECT_LE(same.out, kTol) << c.str();
}

TEST(KiviAttention, RefusesAnotherDeviceInOneLine) {
  Case c;
  c.nq = 32;
  c.nrk = 4;
  c.nqv = 4;
  c.nrv = 32;
  const Inputs in = make_inputs(c, 4);
  torch::Tensor q_meta = torch::empty(in.q.sizes(), in.q.options().device(torch::kMeta));
  try {
    kernels::kivi_decode_attention(q_meta, in.cache, 0.125);
    FAIL() << "a meta-device query was accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("no kernel for device meta"), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace kvb
