#include "kernels/reference/topk_quest_reference.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/check.h"

namespace kvb::reference {

torch::Tensor topk_lower_index(const torch::Tensor& scores,
                               const std::vector<int64_t>& k_per_head) {
  const torch::Tensor s = scores.to(torch::kFloat64).contiguous();
  const int64_t B = s.size(0), H = s.size(1), S = s.size(2);
  KVB_CHECK(static_cast<int64_t>(k_per_head.size()) == H, "topk_lower_index: k per head");
  int64_t width = 0;
  for (int64_t k : k_per_head) width = std::max(width, std::clamp<int64_t>(k, 0, S));
  torch::Tensor out = torch::full({B, H, width}, -1, torch::kInt64);
  auto a = s.accessor<double, 3>();
  auto o = out.accessor<int64_t, 3>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      std::vector<int64_t> idx(static_cast<size_t>(S));
      std::iota(idx.begin(), idx.end(), 0);
      auto before = [&](int64_t x, int64_t y) {  // x ranks before y
        const double vx = a[b][h][x], vy = a[b][h][y];
        const bool nx = std::isnan(vx), ny = std::isnan(vy);
        if (nx != ny) return nx;
        if (!nx && vx != vy) return vx > vy;
        return x < y;
      };
      std::sort(idx.begin(), idx.end(), before);
      const int64_t k = std::clamp<int64_t>(k_per_head[static_cast<size_t>(h)], 0, S);
      std::sort(idx.begin(), idx.begin() + k);
      for (int64_t j = 0; j < k; ++j) o[b][h][j] = idx[static_cast<size_t>(j)];
    }
  return out;
}

torch::Tensor quest_upper_bounds(const torch::Tensor& q, const torch::Tensor& lo,
                                 const torch::Tensor& hi) {
  const torch::Tensor qd = q.to(torch::kFloat64).contiguous();
  const torch::Tensor l = lo.to(torch::kFloat64).contiguous(), u = hi.to(torch::kFloat64).contiguous();
  const int64_t B = l.size(0), H = l.size(1), P = l.size(2), D = l.size(3), G = qd.size(1) / H;
  torch::Tensor out = torch::empty({B, H, P}, torch::kFloat64);
  auto qa = qd.accessor<double, 3>();
  auto la = l.accessor<double, 4>();
  auto ua = u.accessor<double, 4>();
  auto o = out.accessor<double, 3>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t p = 0; p < P; ++p) {
        double best = -INFINITY;
        for (int64_t g = 0; g < G; ++g) {
          double sum = 0;
          for (int64_t c = 0; c < D; ++c) {
            const double x = qa[b][h * G + g][c];
            sum += std::max(x * la[b][h][p][c], x * ua[b][h][p][c]);
          }
          best = std::max(best, sum);
        }
        o[b][h][p] = best;
      }
  return out;
}

}  // namespace kvb::reference
