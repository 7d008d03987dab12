// GEAR, ZipCache and MiKV (methods/quant/gear.cpp, zipcache.cpp, mikv.cpp): what each component
// buys, which tokens get which precision, and bytes counted exactly from hand formulas.
#include <gtest/gtest.h>

#include "methods/quant/mixed_store.h"
#include "methods/registry.h"
#include "tests/methods_test_util.h"

namespace kvb {
namespace {

// Appends k/v (and q) [1, H, N, D] to layer 0 of `st` in chunks of `chunk`.
void feed(KVCacheState& st, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& q,
          int64_t chunk) {
  for (int64_t s = 0; s < k.size(2); s += chunk) {
    const int64_t t = std::min(chunk, k.size(2) - s);
    st.append(0, KVAppend{k.narrow(2, s, t), k.narrow(2, s, t), v.narrow(2, s, t),
                          torch::arange(s, s + t, torch::kLong), q.narrow(2, s, t)});
  }
}

double view_mse(const KVCacheState& st, const torch::Tensor& k, const torch::Tensor& v) {
  KVView w = st.view(0);
  return ((w.k - k).pow(2).mean() + (w.v - v).pow(2).mean()).item<double>() / 2;
}

// Heavy-tailed rows: Gaussian plus a few large outliers per row.
torch::Tensor outlier_data(int64_t h, int64_t n, int64_t d, uint64_t seed) {
  torch::manual_seed(static_cast<int64_t>(seed));
  torch::Tensor x = torch::randn({1, h, n, d});
  torch::Tensor spikes = (torch::rand({1, h, n, d}) < 0.03).to(torch::kFloat32) * 12 *
                         torch::randn({1, h, n, d}).sign();
  return x + spikes;
}

TEST(GearMethod, EachComponentReducesReconstructionError) {
  const ModelShape shape = test::method_shape(1, 2, 2, 64);
  torch::Tensor k = outlier_data(2, 192, 64, 1), v = outlier_data(2, 192, 64, 2);
  torch::Tensor q = torch::randn({1, 2, 192, 64});
  double err[3];
  const char* specs[3] = {"gear(bits=2,rank=0,sparsity=0,buffer=64)",
                          "gear(bits=2,rank=8,sparsity=0,buffer=64)",
                          "gear(bits=2,rank=8,sparsity=0.05,buffer=64)"};
  for (int i = 0; i < 3; ++i) {
    auto st = make_method(specs[i])->make_state(shape);
    feed(*st, k, v, q, 50);
    err[i] = view_mse(*st, k, v);
  }
  std::printf("gear 2-bit mse: quant %.5f, +lowrank %.5f, +sparse %.5f\n", err[0], err[1], err[2]);
  EXPECT_GT(err[0], err[1]);
  EXPECT_GT(err[1], err[2]);
  EXPECT_LT(err[2], 0.5 * err[0]);
}

TEST(GearMethod, BytesCountedExactly) {
  const ModelShape shape = test::method_shape(1, 4, 2, 64);
  torch::Tensor k = outlier_data(2, 130, 64, 3), v = outlier_data(2, 130, 64, 4);
  auto m = make_method("gear(bits=4,rank=4,sparsity=0.05,buffer=64,group=32)");
  auto st = m->make_state(shape);
  feed(*st, k, v, torch::randn({1, 4, 130, 64}), 7);
  // Per head and side: 128 compressed rows (2 blocks of 64), 2 fp32 rows. k = floor(0.05*64) = 3.
  const int64_t payload = 2 * 2 * (128 * (32 + 2 * 4 + 2 * 3) + 2 * (2 * 64 * 4) + 2 * 64 * 4);
  const int64_t metadata = 2 * 2 * 128 * (2 * 4 + 3 * 1);  // 2 groups x scale/zero, uint8 index
  MemoryUse got = st->memory();
  EXPECT_EQ(got.payload_bytes, payload);
  EXPECT_EQ(got.metadata_bytes, metadata);
  MemoryUse want = *m->promised_memory(shape, 130);
  EXPECT_EQ(want.payload_bytes, payload);
  EXPECT_EQ(want.metadata_bytes, metadata);
  // The buffered rows are exact; the outliers come back at fp16 precision.
  KVView w = st->view(0);
  EXPECT_TRUE(torch::equal(w.k.narrow(2, 128, 2), k.narrow(2, 128, 2)));
}

// Keys: one strongly attended token per block; queries all point at it.
TEST(ZipCacheMethod, SalientTokensByNormalizedAttentionGetHiBits) {
  const ModelShape shape = test::method_shape(1, 2, 1, 32);
  torch::manual_seed(5);
  const int64_t n = 64;
  torch::Tensor dir = torch::randn({32});
  dir = dir / dir.norm();
  torch::Tensor k = 0.1 * torch::randn({1, 1, n, 32});
  for (int64_t j : {3, 20, 40, 50}) k[0][0][j] = 8 * dir;  // attended tokens
  torch::Tensor q = (dir * 8).view({1, 1, 1, 32}).expand({1, 2, n, 32}).contiguous();
  torch::Tensor v = torch::randn({1, 1, n, 32});
  auto m = make_method("zipcache(hi=8,lo=2,salient=0.125,residual=16)");
  auto st = m->make_state(shape);
  feed(*st, k, v, q, 10);
  auto* store = dynamic_cast<MixedStore*>(st.get());
  ASSERT_NE(store, nullptr);
  torch::Tensor cls = store->classes(0)[0][0];
  // 4 blocks of 16, 2 salient each: the attended token of each block is among them.
  EXPECT_EQ((cls == kMixedHi).sum().item<int64_t>(), 8);
  for (int64_t j : {3, 20, 40, 50}) EXPECT_EQ(cls[j].item<int8_t>(), kMixedHi) << j;
  // Bytes: 64 quantized rows, 8 at 8 bits, 56 at 2 bits, no buffer left.
  MemoryUse got = st->memory();
  EXPECT_EQ(got.payload_bytes, 2 * (8 * 32 + 56 * 8));
  EXPECT_EQ(got.metadata_bytes, 2 * 64 * 4 + 64 + 2 * 32);
  MemoryUse want = *m->promised_memory(shape, n);
  EXPECT_EQ(got.payload_bytes, want.payload_bytes);
  EXPECT_EQ(got.metadata_bytes, want.metadata_bytes);
  // Salient rows are reconstructed far better than the rest.
  KVView w = st->view(0);
  torch::Tensor err = (w.v - v).abs().mean(-1)[0][0];
  torch::Tensor hi = cls == kMixedHi;
  EXPECT_LT(err.masked_select(hi).mean().item<double>(),
            0.3 * err.masked_select(~hi).mean().item<double>());
}

TEST(MiKVMethod, NoTokenIsEvictedAndTheBudgetStaysAtHiPrecision) {
  const ModelShape shape = test::method_shape(1, 2, 1, 32);
  torch::manual_seed(7);
  const int64_t n = 100;
  torch::Tensor dir = torch::randn({32});
  dir = dir / dir.norm();
  torch::Tensor k = 0.1 * torch::randn({1, 1, n, 32});
  k[0][0][5] = 6 * dir;  // a heavy hitter
  torch::Tensor q = (dir * 6).view({1, 1, 1, 32}).expand({1, 2, n, 32}).contiguous();
  torch::Tensor v = torch::randn({1, 1, n, 32});
  auto m = make_method("mikv(budget=32,hi=full,lo=2)");
  auto st = m->make_state(shape);
  feed(*st, k, v, q, 1);
  EXPECT_EQ(st->view(0).slots(), n);
  torch::Tensor cls = dynamic_cast<MixedStore*>(st.get())->classes(0)[0][0];
  EXPECT_EQ((cls == kMixedHi).sum().item<int64_t>(), 32);
  EXPECT_EQ((cls.narrow(0, n - 16, 16) == kMixedHi).sum().item<int64_t>(), 16);  // recent
  EXPECT_EQ(cls[5].item<int8_t>(), kMixedHi);  // the heavy hitter
  // hi=full: important tokens exact, demoted ones at 2 bits.
  KVView w = st->view(0);
  torch::Tensor hi = (cls == kMixedHi).view({1, 1, n, 1});
  EXPECT_TRUE(torch::equal(w.v.masked_select(hi), v.masked_select(hi)));
  EXPECT_GT((w.v - v).abs().masked_select(~hi).mean().item<double>(), 0.05);
  // Bytes: 32 fp32 rows + 68 2-bit rows per side; scale/zero per group of 32 for lo rows; class
  // byte and float32 score per slot.
  MemoryUse got = st->memory();
  EXPECT_EQ(got.payload_bytes, 2 * (32 * 32 * 4 + 68 * 8));
  EXPECT_EQ(got.metadata_bytes, 2 * 68 * 4 + n + 4 * n);
  MemoryUse want = *m->promised_memory(shape, n);
  EXPECT_EQ(got.payload_bytes, want.payload_bytes);
  EXPECT_EQ(got.metadata_bytes, want.metadata_bytes);
}

// Behind a selector: the stores score from the appended queries (no observe() reaches a storage
// stage in a chain), drop what the selector drops, and hold at most the promise (a bound).
TEST(MixedStorage, ChainsBehindASelectorHoldAtMostThePromise) {
  const ModelShape shape = test::method_shape(2, 4, 2, 32);
  for (const char* spec : {"h2o(budget=40)+zipcache(residual=16)", "h2o(budget=40)+mikv(budget=16)",
                           "h2o(budget=40)+gear(buffer=16)", "snapkv(budget=48)+gear(buffer=8)",
                           "snapkv(budget=48)+zipcache(residual=8)"}) {
    SCOPED_TRACE(spec);
    auto m = make_method(spec);
    EXPECT_FALSE(m->promise_is_exact());
    auto st = m->make_state(shape);
    test::SyntheticStream in(shape, 3);
    in.feed_chunked(*st, 90, 30);
    st->end_prefill();
    for (int i = 0; i < 10; ++i) in.feed(*st, 1);
    MemoryUse got = st->memory(), want = *m->promised_memory(shape, 100, torch::kFloat32, 90);
    EXPECT_EQ(got.slots, want.slots);
    EXPECT_LE(got.payload_bytes, want.payload_bytes);
    EXPECT_LE(got.payload_bytes + got.metadata_bytes, want.payload_bytes + want.metadata_bytes);
  }
}

}  // namespace
}  // namespace kvb
