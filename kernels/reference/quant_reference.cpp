#include "kernels/reference/quant_reference.h"

#include <vector>

namespace kvb::reference {
namespace {

// Codes of x given per-element scale s and zero z (broadcast), all fp32.
torch::Tensor codes_of(const torch::Tensor& x, const torch::Tensor& s, const torch::Tensor& z, int bits) {
  torch::Tensor q = torch::round((x - z) / s).clamp(0, (1 << bits) - 1);
  q = torch::where(s > 0, q, torch::zeros_like(q));
  return q.to(torch::kUInt8);
}

}  // namespace

// [..., D] -> [..., D/per, per] -> shift code u of each byte by u*bits -> OR (sum) per byte.
torch::Tensor pack_codes(const torch::Tensor& codes, int bits) {
  const int64_t per = 8 / bits, d = codes.size(-1);
  std::vector<int64_t> shape(codes.sizes().begin(), codes.sizes().end());
  shape.back() = d / per;
  shape.push_back(per);
  torch::Tensor c = codes.to(torch::kInt32).reshape(shape);  // [..., D/per, per]
  torch::Tensor shifts = torch::arange(per, torch::kInt32) * bits;
  return torch::bitwise_left_shift(c, shifts).sum(-1).to(torch::kUInt8);
}

torch::Tensor unpack_codes(const torch::Tensor& packed, int bits) {
  const int64_t per = 8 / bits;
  torch::Tensor p = packed.to(torch::kInt32).unsqueeze(-1);  // [..., W, 1]
  torch::Tensor shifts = torch::arange(per, torch::kInt32) * bits;
  torch::Tensor c = torch::bitwise_and(torch::bitwise_right_shift(p, shifts), (1 << bits) - 1);  // [..., W, per]
  std::vector<int64_t> shape(packed.sizes().begin(), packed.sizes().end());
  shape.back() *= per;
  return c.reshape(shape).to(torch::kUInt8);
}

Quantized quantize_rows(const torch::Tensor& x, int bits, int64_t group) {
  const int64_t B = x.size(0), H = x.size(1), N = x.size(2), D = x.size(3);
  torch::Tensor g = x.reshape({B, H, N, D / group, group});
  torch::Tensor mn = std::get<0>(g.min(-1, true)), mx = std::get<0>(g.max(-1, true));
  torch::Tensor s = ((mx - mn) / static_cast<float>((1 << bits) - 1)).to(torch::kHalf);
  torch::Tensor z = mn.to(torch::kHalf);
  torch::Tensor q = codes_of(g, s.to(torch::kFloat32), z.to(torch::kFloat32), bits).reshape({B, H, N, D});
  return {pack_codes(q, bits), s.squeeze(-1), z.squeeze(-1)};
}

torch::Tensor dequantize_rows(const Quantized& q, int bits, int64_t group) {
  torch::Tensor c = unpack_codes(q.codes, bits).to(torch::kFloat32);
  const int64_t B = c.size(0), H = c.size(1), N = c.size(2), D = c.size(3);
  torch::Tensor g = c.reshape({B, H, N, D / group, group});
  torch::Tensor out = g * q.scale.to(torch::kFloat32).unsqueeze(-1) + q.zero.to(torch::kFloat32).unsqueeze(-1);
  return out.reshape({B, H, N, D});
}

Quantized quantize_cols(const torch::Tensor& x, int bits, int64_t group) {
  const int64_t B = x.size(0), H = x.size(1), N = x.size(2), D = x.size(3);
  torch::Tensor g = x.reshape({B, H, N / group, group, D});
  torch::Tensor mn = std::get<0>(g.min(3, true)), mx = std::get<0>(g.max(3, true));
  torch::Tensor s = ((mx - mn) / static_cast<float>((1 << bits) - 1)).to(torch::kHalf);
  torch::Tensor z = mn.to(torch::kHalf);
  torch::Tensor q = codes_of(g, s.to(torch::kFloat32), z.to(torch::kFloat32), bits).reshape({B, H, N, D});
  return {pack_codes(q, bits), s.squeeze(3), z.squeeze(3)};
}

torch::Tensor dequantize_cols(const Quantized& q, int bits, int64_t group) {
  torch::Tensor c = unpack_codes(q.codes, bits).to(torch::kFloat32);
  const int64_t B = c.size(0), H = c.size(1), N = c.size(2), D = c.size(3);
  torch::Tensor g = c.reshape({B, H, N / group, group, D});
  torch::Tensor out = g * q.scale.to(torch::kFloat32).unsqueeze(3) + q.zero.to(torch::kFloat32).unsqueeze(3);
  return out.reshape({B, H, N, D});
}

}  // namespace kvb::reference
