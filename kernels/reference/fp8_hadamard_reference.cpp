#include "kernels/reference/fp8_hadamard_reference.h"

#include <cmath>
#include <limits>

#include "common/check.h"

namespace kvb::reference {
namespace {

struct Def {
  int ebits, mbits, bias;
  bool ieee;  // E5M2: all-ones exponent is infinity/NaN; E4M3: only S.1111.111 is NaN
};

Def def(kernels::Fp8Format f) {
  return f == kernels::Fp8Format::kE4M3 ? Def{4, 3, 7, false} : Def{5, 2, 15, true};
}

bool finite_code(uint8_t c, const Def& d) {
  const int e = (c & 0x7F) >> d.mbits;
  if (d.ieee) return e != (1 << d.ebits) - 1;
  return (c & 0x7F) != 0x7F;
}

}  // namespace

float fp8_value(uint8_t c, kernels::Fp8Format f) {
  const Def d = def(f);
  const int e = (c & 0x7F) >> d.mbits, m = c & ((1 << d.mbits) - 1);
  if (!finite_code(c, d)) {
    if (d.ieee && m == 0)
      return (c & 0x80) ? -std::numeric_limits<float>::infinity()
                        : std::numeric_limits<float>::infinity();
    return std::numeric_limits<float>::quiet_NaN();
  }
  const double frac = static_cast<double>(m) / (1 << d.mbits);
  const double v =
      e == 0 ? std::pow(2.0, 1 - d.bias) * frac : std::pow(2.0, e - d.bias) * (1 + frac);
  return static_cast<float>((c & 0x80) ? -v : v);
}

uint8_t fp8_encode(float x, kernels::Fp8Format f) {
  const Def d = def(f);
  if (std::isnan(x)) return std::signbit(x) ? 0xFF : 0x7F;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const double a = std::fabs(static_cast<double>(x));
  int best = -1;
  double best_err = 0, largest = 0;
  int largest_code = 0;
  for (int c = 0; c < 128; ++c) {
    if (!finite_code(static_cast<uint8_t>(c), d)) continue;
    const double v = fp8_value(static_cast<uint8_t>(c), f);
    if (v > largest) {
      largest = v;
      largest_code = c;
    }
    const double err = std::fabs(v - a);
    const bool even = (c & 1) == 0;
    if (best < 0 || err < best_err || (err == best_err && even)) {
      best = c;
      best_err = err;
    }
  }
  if (a >= largest) best = largest_code;  // saturation
  return static_cast<uint8_t>(sign | best);
}

torch::Tensor hadamard_matrix(int64_t n) {
  KVB_CHECK(n > 0 && (n & (n - 1)) == 0, "hadamard_matrix: ", n, " is not a power of 2");
  torch::Tensor h = torch::ones({1, 1});
  while (h.size(0) < n) h = torch::cat({torch::cat({h, h}, 1), torch::cat({h, -h}, 1)}, 0);
  return h;
}

torch::Tensor hadamard_transform(const torch::Tensor& x) {
  const int64_t n = x.size(-1);
  const torch::Tensor h = hadamard_matrix(n).to(torch::kFloat64);
  return (x.to(torch::kFloat64).matmul(h.t()) / std::sqrt(static_cast<double>(n)))
      .to(torch::kFloat32);
}

}  // namespace kvb::reference
