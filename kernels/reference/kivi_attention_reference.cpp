#include "kernels/reference/kivi_attention_reference.h"

#include <limits>
#include <vector>

#include "kernels/reference/quant_reference.h"

namespace kvb::reference {
namespace {

bool has_rows(const torch::Tensor& t) { return t.defined() && t.size(2) > 0; }

// [quantized part dequantized, residual] along the slots, float64; undefined when empty.
torch::Tensor assemble(const torch::Tensor& dequantized, const torch::Tensor& residual) {
  std::vector<torch::Tensor> parts;
  if (dequantized.defined()) parts.push_back(dequantized.to(torch::kFloat64));
  if (has_rows(residual)) parts.push_back(residual.to(torch::kFloat64));
  if (parts.empty()) return {};
  return parts.size() == 1 ? parts[0] : torch::cat(parts, 2);
}

}  // namespace

AttentionPart64 kivi_attention(const torch::Tensor& q, const kernels::KiviCache& c, double scale) {
  const int64_t b = q.size(0), hq = q.size(1), t = q.size(2), d = q.size(3);
  torch::Tensor kd, vd;
  if (has_rows(c.key_codes))
    kd = dequantize_cols({c.key_codes, c.key_scale.narrow(2, 0, c.key_codes.size(2) / c.group),
                          c.key_zero.narrow(2, 0, c.key_codes.size(2) / c.group)},
                         c.bits, c.group);
  if (has_rows(c.value_codes))
    vd = dequantize_rows({c.value_codes, c.value_scale, c.value_zero}, c.bits, c.value_group);
  torch::Tensor k = assemble(kd, c.key_residual), v = assemble(vd, c.value_residual);
  auto f64 = q.options().dtype(torch::kFloat64);
  if (!k.defined())
    return {torch::zeros({b, hq, t, d}, f64),
            torch::full({b, hq, t}, -std::numeric_limits<double>::infinity(), f64)};
  const int64_t hkv = k.size(1), g = hq / hkv;
  torch::Tensor q5 = q.to(torch::kFloat64).reshape({b, hkv, g * t, d});
  torch::Tensor s = torch::matmul(q5, k.transpose(-1, -2)) * scale;  // [B, H_kv, G*T, S]
  torch::Tensor lse = torch::logsumexp(s, -1);
  torch::Tensor out = torch::matmul(torch::softmax(s, -1), v);
  return {out.reshape({b, hq, t, d}), lse.reshape({b, hq, t})};
}

}  // namespace kvb::reference
