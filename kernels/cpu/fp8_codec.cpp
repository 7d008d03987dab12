#include "kernels/cpu/fp8_codec.h"

#include <ATen/Parallel.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/check.h"

namespace kvb::kernels {
namespace {

struct Fp8Spec {
  int mbits, bias;
  float max;
  uint32_t max_code, nan_code;
};

constexpr Fp8Spec kE4M3{3, 7, 448.0f, 0x7E, 0x7F};
constexpr Fp8Spec kE5M2{2, 15, 57344.0f, 0x7B, 0x7F};

const Fp8Spec& spec_of(Fp8Format f) { return f == Fp8Format::kE4M3 ? kE4M3 : kE5M2; }

inline uint8_t encode(float x, const Fp8Spec& s) {
  uint32_t u = 0;
  std::memcpy(&u, &x, 4);
  const uint32_t sign = (u >> 24) & 0x80u;
  u &= 0x7FFFFFFFu;
  if (u > 0x7F800000u) return static_cast<uint8_t>(sign | s.nan_code);
  float a = 0;
  std::memcpy(&a, &u, 4);
  if (a >= s.max) return static_cast<uint8_t>(sign | s.max_code);  // saturate (infinity too)
  const int min_exp = 1 - s.bias;                                  // of the smallest normal
  const int exp = static_cast<int>(u >> 23) - 127;                 // fp32 subnormals: -127
  if (exp < min_exp) {
    // Below the smallest normal: multiples of 2^(min_exp - mbits). The scaling is exact and
    // nearbyint rounds half to even (the default rounding mode); 2^mbits is the smallest normal,
    // whose code is 2^mbits too.
    const float r = std::nearbyint(std::ldexp(a, s.mbits - min_exp));
    return static_cast<uint8_t>(sign | static_cast<uint32_t>(r));
  }
  // Normal: drop 23 - mbits mantissa bits rounding half to even; a carry moves into the exponent.
  const int drop = 23 - s.mbits;
  uint32_t r = (u + (1u << (drop - 1)) - 1 + ((u >> drop) & 1u)) >> drop;
  r -= static_cast<uint32_t>(127 - s.bias) << s.mbits;  // re-bias the exponent
  return static_cast<uint8_t>(sign | r);                // <= max_code since a < max
}

float decode(uint8_t c, const Fp8Spec& s) {
  const bool neg = c & 0x80;
  const uint32_t e = (c & 0x7F) >> s.mbits, m = c & ((1u << s.mbits) - 1);
  const uint32_t e_all = (1u << (7 - s.mbits)) - 1;
  float v = 0;
  if (s.mbits == 3 && (c & 0x7F) == 0x7F) {
    v = std::numeric_limits<float>::quiet_NaN();
  } else if (s.mbits == 2 && e == e_all) {
    v = m == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
  } else if (e == 0) {
    v = std::ldexp(static_cast<float>(m), 1 - s.bias - s.mbits);
  } else {
    v = std::ldexp(1.0f + static_cast<float>(m) / static_cast<float>(1u << s.mbits),
                   static_cast<int>(e) - s.bias);
  }
  return neg ? -v : v;
}

const std::array<float, 256>& table(Fp8Format f) {
  static const auto make = [](const Fp8Spec& s) {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[static_cast<size_t>(c)] = decode(static_cast<uint8_t>(c), s);
    return t;
  };
  static const std::array<float, 256> e4m3 = make(kE4M3), e5m2 = make(kE5M2);
  return f == Fp8Format::kE4M3 ? e4m3 : e5m2;
}

}  // namespace

uint8_t fp8_encode(float x, Fp8Format f) { return encode(x, spec_of(f)); }
float fp8_decode(uint8_t code, Fp8Format f) { return table(f)[code]; }
float fp8_max(Fp8Format f) { return spec_of(f).max; }

torch::Tensor fp8_encode(const torch::Tensor& x, Fp8Format f) {
  KVB_CHECK(x.scalar_type() == torch::kFloat32, "fp8_encode: values must be float32");
  if (!x.device().is_cpu()) return fp8_encode(x.cpu(), f).to(x.device());
  const torch::Tensor in = x.contiguous();
  torch::Tensor out = torch::empty(in.sizes(), in.options().dtype(torch::kUInt8));
  const float* src = in.data_ptr<float>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  const Fp8Spec& s = spec_of(f);
  at::parallel_for(0, in.numel(), 1 << 14, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) dst[i] = encode(src[i], s);
  });
  return out;
}

torch::Tensor fp8_decode(const torch::Tensor& codes, Fp8Format f) {
  KVB_CHECK(codes.scalar_type() == torch::kUInt8, "fp8_decode: codes must be uint8");
  if (!codes.device().is_cpu()) return fp8_decode(codes.cpu(), f).to(codes.device());
  const torch::Tensor in = codes.contiguous();
  torch::Tensor out = torch::empty(in.sizes(), in.options().dtype(torch::kFloat32));
  const uint8_t* src = in.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
  const std::array<float, 256>& t = table(f);
  at::parallel_for(0, in.numel(), 1 << 14, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) dst[i] = t[src[i]];
  });
  return out;
}

}  // namespace kvb::kernels
