// Fused decode attention over the `int` cache and KVQuant's non-uniform dense-and-sparse cache
// (kernels/cpu/quant_attention.h) against their float64 reference twins
// (kernels/reference/quant_attention_reference.h), both paths (AVX2 where the CPU has it, and
// the portable one), over a grid of bits x head_dim x GQA group x batch x slot counts (0, ragged,
// on either side of the 256-slot block boundary, several blocks) x outliers x sinks. The engine's
// use of them: tests/test_quant_attention_engine.cpp.
//
// Tolerance (kernel vs reference): max |out - out_ref| <= 1e-4 and max |lse - lse_ref| <= 1e-4,
// outputs O(1) and lse O(log S). fp32 accumulation gives about 1e-6; one outlier left out gives
// more than 1e-3 (QuantAttention.ToleranceCatchesOneMissingOutlier). Every failure prints every
// parameter of the case.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/quant_attention.h"
#include "kernels/reference/quant_attention_reference.h"

namespace kvb {
namespace {

constexpr double kTol = 1e-4;
constexpr int64_t kSpare = 3;  // buffers hold more rows than are live, narrowed as a store does

struct Case {
  int bits = 4;
  int64_t d = 64, g = 1, b = 1, hkv = 2, t = 1, s = 0;
  int64_t group = 32;          // int
  int64_t nout = 0, sinks = 0;  // kvquant
  std::string str() const {
    std::ostringstream os;
    os << "bits=" << bits << " D=" << d << " G=" << g << " B=" << b << " H_kv=" << hkv
       << " T=" << t << " S=" << s << " group=" << group << " outliers=" << nout
       << " sinks=" << sinks;
    return os.str();
  }
};

const char* path_name(kernels::KernelPath p) { return kernels::kernel_path_name(p); }

std::vector<kernels::KernelPath> paths_for(int64_t d, int64_t group) {
  return kernels::kernel_paths(kernels::quant_attention_avx2_supports(d, group));
}

struct Gen {
  at::Generator gen;
  const Case& c;
  torch::Tensor codes(int64_t n, int64_t x) {
    return torch::randint(0, 256, {c.b, c.hkv, n + kSpare, x}, gen)
        .to(torch::kUInt8)
        .narrow(2, 0, n);
  }
  torch::Tensor half(int64_t n, int64_t x, double lo, double hi) {
    return (torch::rand({c.b, c.hkv, n + kSpare, x}, gen) * (hi - lo) + lo)
        .to(torch::kHalf)
        .narrow(2, 0, n);
  }
};

struct IntInputs {
  torch::Tensor q;
  kernels::IntCache cache;
};

// Random codes and scales (what the kernel reads): values code * s + z within about [-2.5, 1.5].
IntInputs make_int(const Case& c, uint64_t seed) {
  Gen r{at::make_generator<at::CPUGeneratorImpl>(seed), c};
  IntInputs in;
  in.q = torch::randn({c.b, c.hkv * c.g, c.t, c.d}, r.gen) * 1.5;
  kernels::IntCache& k = in.cache;
  k.bits = c.bits;
  k.group = c.group;
  const int64_t packed = c.d * c.bits / 8, ng = c.d / c.group;
  const double hi = 4.0 / ((1 << c.bits) - 1);
  k.key_codes = r.codes(c.s, packed);
  k.key_scale = r.half(c.s, ng, 0.05 * hi, hi);
  k.key_zero = r.half(c.s, ng, -2.7, -0.2);
  k.value_codes = r.codes(c.s, packed);
  k.value_scale = r.half(c.s, ng, 0.05 * hi, hi);
  k.value_zero = r.half(c.s, ng, -2.7, -0.2);
  return in;
}

struct KVQInputs {
  torch::Tensor q;
  kernels::KVQuantCache cache;
};

// Distinct channels per row: the first n of a random permutation of [0, D).
torch::Tensor outlier_channels(Gen& r, int64_t n) {
  const Case& c = r.c;
  torch::Tensor perm = std::get<1>(torch::rand({c.b, c.hkv, c.s + kSpare, c.d}, r.gen).sort(-1));
  return perm.narrow(3, 0, n).to(torch::kShort).narrow(2, 0, c.s);
}

KVQInputs make_kvquant(const Case& c, uint64_t seed) {
  Gen r{at::make_generator<at::CPUGeneratorImpl>(seed), c};
  KVQInputs in;
  in.q = torch::randn({c.b, c.hkv * c.g, c.t, c.d}, r.gen) * 1.5;
  kernels::KVQuantCache& k = in.cache;
  const int64_t levels = int64_t{1} << c.bits, packed = c.d * c.bits / 8;
  k.bits = c.bits;
  k.key_codebook = std::get<0>((torch::rand({levels}, r.gen) * 2 - 1).sort());
  k.value_codebook = std::get<0>((torch::rand({levels}, r.gen) * 2 - 1).sort());
  k.key_scale = torch::rand({c.hkv, c.d}, r.gen) * 1.5 + 0.1;
  k.key_zero = torch::randn({c.hkv, c.d}, r.gen) * 0.5;
  k.key_codes = r.codes(c.s, packed);
  k.value_codes = r.codes(c.s, packed);
  k.value_scale = r.half(c.s, 1, 0.1, 1.5);
  k.value_zero = r.half(c.s, 1, -0.5, 0.5);
  if (c.nout > 0) {
    k.key_outlier_index = outlier_channels(r, c.nout);
    k.value_outlier_index = outlier_channels(r, c.nout);
    k.key_outlier_value = (torch::randn({c.b, c.hkv, c.s + kSpare, c.nout}, r.gen) * 3)
                              .to(torch::kHalf)
                              .narrow(2, 0, c.s);
    k.value_outlier_value = (torch::randn({c.b, c.hkv, c.s + kSpare, c.nout}, r.gen) * 3)
                                .to(torch::kHalf)
                                .narrow(2, 0, c.s);
  }
  k.sinks = c.sinks;
  if (c.sinks > 0) {
    // The store keeps min(sink, seen) sink rows; a buffer with a spare row or two beyond them.
    const int64_t held = std::min(c.sinks, c.s);
    k.sink_keys = torch::randn({c.b, c.hkv, held + 2, c.d}, r.gen).to(torch::kHalf);
    k.sink_values = torch::randn({c.b, c.hkv, held + 2, c.d}, r.gen).to(torch::kHalf);
  }
  return in;
}

struct Err {
  double out = 0, lse = 0;
};

Err compare(const kernels::AttentionPart& got, const reference::AttentionPart64& want) {
  Err e;
  e.out = (got.out.to(torch::kFloat64) - want.out).abs().max().item<double>();
  torch::Tensor dl = got.lse.to(torch::kFloat64) - want.lse;
  // Both -inf (no slot) is agreement.
  dl = torch::where(torch::isneginf(got.lse) & torch::isneginf(want.lse), torch::zeros_like(dl),
                    dl);
  e.lse = dl.abs().max().item<double>();
  return e;
}

void expect_close(const Err& e, const Case& c, const char* what, kernels::KernelPath path,
                  uint64_t seed) {
  EXPECT_LE(e.out, kTol) << what << " out: " << c.str() << " path=" << path_name(path)
                         << " seed=" << seed << " max|err|=" << e.out;
  EXPECT_LE(e.lse, kTol) << what << " lse: " << c.str() << " path=" << path_name(path)
                         << " seed=" << seed << " max|err|=" << e.lse;
}

void check_int(const Case& c, uint64_t seed, int* checked) {
  const IntInputs in = make_int(c, seed);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  const reference::AttentionPart64 want = reference::int_attention(in.q, in.cache, scale);
  for (kernels::KernelPath path : paths_for(c.d, c.group)) {
    const auto got = kernels::int_decode_attention(in.q, in.cache, scale, path);
    expect_close(compare(got, want), c, "int", path, seed);
    ++*checked;
  }
}

void check_kvquant(const Case& c, uint64_t seed, int* checked) {
  const KVQInputs in = make_kvquant(c, seed);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  const reference::AttentionPart64 want = reference::kvquant_attention(in.q, in.cache, scale);
  for (kernels::KernelPath path : paths_for(c.d, 8)) {
    const auto got = kernels::kvquant_decode_attention(in.q, in.cache, scale, path);
    expect_close(compare(got, want), c, "kvquant", path, seed);
    ++*checked;
  }
}

// Slot counts: none, ragged, one block minus/plus one (blocks of 256 slots), several blocks.
const std::vector<int64_t> kSlots = {0, 1, 7, 255, 256, 257, 600};

TEST(QuantAttention, IntMatchesReferenceOverTheGrid) {
  int checked = 0, cases = 0;
  uint64_t seed = 1;
  for (int bits : {2, 4, 8})
    for (int64_t d : {32, 64, 128})
      for (int64_t group : {32, 64})
        for (int64_t g : {1, 3, 4})
          for (int64_t b : {1, 2})
            for (int64_t s : kSlots) {
              if (group > d) continue;
              Case c;
              c.bits = bits;
              c.d = d;
              c.group = group;
              c.g = g;
              c.b = b;
              c.hkv = b == 1 ? 3 : 2;
              c.s = s;
              check_int(c, ++seed, &checked);
              ++cases;
            }
  EXPECT_GE(checked, cases);
  if (!kernels::kivi_attention_cpu_has_avx2())
    std::cout << "[ note ] this CPU has no AVX2: only the portable path was checked\n";
}

// Groups narrower than 8 channels (int(bits=8,group=4) is valid) take the portable path.
TEST(QuantAttention, IntNarrowGroupsAndSeveralRows) {
  int checked = 0;
  uint64_t seed = 500;
  for (int bits : {2, 4, 8})
    for (int64_t group : {4, 8, 16})
      for (int64_t t : {1, 2}) {
        if (group * bits < 8) continue;
        Case c;
        c.bits = bits;
        c.d = 64;
        c.group = group;
        c.g = 3;
        c.hkv = 1;
        c.t = t;
        c.s = 300;
        EXPECT_EQ(kernels::quant_attention_avx2_supports(c.d, group),
                  kernels::kivi_attention_cpu_has_avx2() && group % 8 == 0);
        check_int(c, ++seed, &checked);
        const IntInputs in = make_int(c, seed);
        const auto auto_path = kernels::int_decode_attention(in.q, in.cache, 0.2);
        expect_close(compare(auto_path, reference::int_attention(in.q, in.cache, 0.2)), c,
                     "int auto", kernels::KernelPath::kAuto, seed);
      }
  EXPECT_GT(checked, 0);
}

TEST(QuantAttention, KVQuantMatchesReferenceOverTheGrid) {
  struct Sparse {
    int64_t nout, sinks;
  };
  int checked = 0, cases = 0;
  uint64_t seed = 10000;
  for (int bits : {2, 3, 4})
    for (int64_t d : {32, 64, 128})
      for (const auto& [g, b] : {std::pair<int64_t, int64_t>{1, 1}, {3, 1}, {4, 2}})
          for (int64_t s : kSlots)
            for (const Sparse sp : {Sparse{0, 0}, Sparse{1, 1}, Sparse{2, 3}}) {
              Case c;
              c.bits = bits;
              c.d = d;
              c.g = g;
              c.b = b;
              c.hkv = b == 1 ? 3 : 2;
              c.s = s;
              c.nout = sp.nout;
              c.sinks = sp.sinks;  // S = 1 with 3 sinks: no quantized slot at all
              check_kvquant(c, ++seed, &checked);
              ++cases;
            }
  EXPECT_GE(checked, cases);
}

TEST(QuantAttention, KVQuantSeveralRowsAndNarrowHeads) {
  int checked = 0;
  uint64_t seed = 20000;
  for (int64_t d : {8, 16, 24, 40})
    for (int64_t t : {1, 3}) {
      Case c;
      c.bits = 3;
      c.d = d;
      c.g = 2;
      c.t = t;
      c.s = 270;
      c.nout = 1;
      c.sinks = 1;
      check_kvquant(c, ++seed, &checked);
    }
  EXPECT_GT(checked, 0);
}

TEST(QuantAttention, EmptyCachesGiveMinusInfinityAndZeros) {
  Case c;
  const IntInputs ii = make_int(c, 3);
  const auto a = kernels::int_decode_attention(ii.q, ii.cache, 0.125);
  EXPECT_TRUE(torch::isneginf(a.lse).all().item<bool>());
  EXPECT_EQ(a.out.abs().max().item<float>(), 0.0f);
  const KVQInputs ki = make_kvquant(c, 3);
  const auto k = kernels::kvquant_decode_attention(ki.q, ki.cache, 0.125);
  EXPECT_TRUE(torch::isneginf(k.lse).all().item<bool>());
  EXPECT_EQ(k.out.abs().max().item<float>(), 0.0f);
  kernels::IntCache none;
  EXPECT_TRUE(torch::isneginf(kernels::int_decode_attention(ii.q, none, 0.1).lse).all().item<bool>());
}

// The tolerance is tight enough to see one sparse correction go wrong: the reference over a
// cache where one slot's key outlier, or its value outlier, is moved by 1 is far outside it.
TEST(QuantAttention, ToleranceCatchesOneWrongOutlier) {
  Case c;
  c.bits = 4;
  c.s = 40;
  c.nout = 1;
  const KVQInputs in = make_kvquant(c, 9);
  const double scale = 0.125;
  const auto got = kernels::kvquant_decode_attention(in.q, in.cache, scale);
  const Err same = compare(got, reference::kvquant_attention(in.q, in.cache, scale));
  EXPECT_LE(std::max(same.out, same.lse), kTol) << c.str();
  for (const bool key : {true, false}) {
    KVQInputs moved = in;
    torch::Tensor& o = key ? moved.cache.key_outlier_value : moved.cache.value_outlier_value;
    o = o.clone();
    o.select(0, 0).select(0, 0).select(0, 5).add_(1.0);
    const Err e = compare(got, reference::kvquant_attention(in.q, moved.cache, scale));
    EXPECT_GT(std::max(e.out, e.lse), 10 * kTol) << (key ? "key" : "value") << " " << c.str();
  }
}

TEST(QuantAttention, RefusesAnotherDeviceInOneLine) {
  Case c;
  c.s = 8;
  const IntInputs ii = make_int(c, 4);
  const KVQInputs ki = make_kvquant(c, 4);
  torch::Tensor q_meta = torch::empty(ii.q.sizes(), ii.q.options().device(torch::kMeta));
  for (int which = 0; which < 2; ++which) {
    try {
      if (which == 0)
        kernels::int_decode_attention(q_meta, ii.cache, 0.125);
      else
        kernels::kvquant_decode_attention(q_meta, ki.cache, 0.125);
      FAIL() << "a meta-device query was accepted";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("no kernel for device meta"), std::string::npos) << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    }
  }
}

}  // namespace
}  // namespace kvb
