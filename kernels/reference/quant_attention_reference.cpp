#include "kernels/reference/quant_attention_reference.h"

#include <algorithm>
#include <limits>
#include <vector>
#include <utility>

#include "kernels/reference/quant_reference.h"

namespace kvb::reference {
namespace {

bool has_rows(const torch::Tensor& t) { return t.defined() && t.dim() == 4 && t.size(2) > 0; }

AttentionPart64 attend64(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                         double scale) {
  const int64_t b = q.size(0), hq = q.size(1), t = q.size(2), d = q.size(3);
  auto f64 = q.options().dtype(torch::kFloat64);
  if (!k.defined())
    return {torch::zeros({b, hq, t, d}, f64),
            torch::full({b, hq, t}, -std::numeric_limits<double>::infinity(), f64)};
  const int64_t hkv = k.size(1), g = hq / hkv;
  torch::Tensor q5 = q.to(torch::kFloat64).reshape({b, hkv, g * t, d});
  torch::Tensor s = torch::matmul(q5, k.to(torch::kFloat64).transpose(-1, -2)) * scale;
  torch::Tensor lse = torch::logsumexp(s, -1);
  torch::Tensor out = torch::matmul(torch::softmax(s, -1), v.to(torch::kFloat64));
  return {out.reshape({b, hq, t, d}), lse.reshape({b, hq, t})};
}

// Packed [..., D*bits/8] -> codes [..., D] int64: runs of 8 codes in `bits` bytes, code i of a
// run at bit i*bits of their little-endian word.
torch::Tensor unpack_runs(const torch::Tensor& packed, int bits, int64_t d) {
  std::vector<int64_t> shape(packed.sizes().begin(), packed.sizes().end());
  shape.back() = d / 8;
  shape.push_back(bits);
  auto i64 = packed.options().dtype(torch::kLong);
  torch::Tensor bytes = packed.contiguous().to(torch::kLong).reshape(shape);
  torch::Tensor word = (bytes * torch::pow(256, torch::arange(bits, i64))).sum(-1, true);
  torch::Tensor codes =
      torch::floor_divide(word, torch::pow(2, torch::arange(8, i64) * bits)).remainder(1 << bits);
  shape.pop_back();
  shape.back() = d;
  return codes.reshape(shape);
}

}  // namespace

AttentionPart64 int_attention(const torch::Tensor& q, const kernels::IntCache& c, double scale) {
  torch::Tensor k, v;
  if (has_rows(c.key_codes)) {
    k = dequantize_rows({c.key_codes, c.key_scale, c.key_zero}, c.bits, c.group);
    v = dequantize_rows({c.value_codes, c.value_scale, c.value_zero}, c.bits, c.group);
  }
  return attend64(q, k, v, scale);
}

std::pair<torch::Tensor, torch::Tensor> kvquant_dequantize(const kernels::KVQuantCache& c,
                                                           int64_t d) {
  if (!has_rows(c.key_codes)) return {};
  const int64_t h = c.key_codes.size(1), s = c.key_codes.size(2);
  auto f64 = torch::kFloat64;
  torch::Tensor kcb = c.key_codebook.to(f64), vcb = c.value_codebook.to(f64);
  torch::Tensor k = kcb.index({unpack_runs(c.key_codes, c.bits, d)}) *
                        c.key_scale.to(f64).view({1, h, 1, d}) +
                    c.key_zero.to(f64).view({1, h, 1, d});
  torch::Tensor v = vcb.index({unpack_runs(c.value_codes, c.bits, d)}) * c.value_scale.to(f64) +
                    c.value_zero.to(f64);
  if (c.key_outlier_value.defined() && c.key_outlier_value.size(3) > 0) {
    k.scatter_(3, c.key_outlier_index.to(torch::kLong), c.key_outlier_value.to(f64));
    v.scatter_(3, c.value_outlier_index.to(torch::kLong), c.value_outlier_value.to(f64));
  }
  const int64_t ns = std::min(c.sinks, s);
  if (ns > 0) {
    k.narrow(2, 0, ns).copy_(c.sink_keys.narrow(2, 0, ns).to(f64));
    v.narrow(2, 0, ns).copy_(c.sink_values.narrow(2, 0, ns).to(f64));
  }
  return {k, v};
}

AttentionPart64 kvquant_attention(const torch::Tensor& q, const kernels::KVQuantCache& c,
                                  double scale) {
  auto [k, v] = kvquant_dequantize(c, q.size(3));
  return attend64(q, k, v, scale);
}

}  // namespace kvb::reference
