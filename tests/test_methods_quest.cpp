// Quest (methods/evict/quest.cpp): which pages a decode query reads, the bound behind it, the
// metadata it holds and the bytes it reads.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>
#include <vector>

#include "common/check.h"
#include "methods/evict/quest.h"
#include "methods/registry.h"
#include "tests/methods_test_util.h"

namespace kvb {
namespace {

// The pages a decode query q ([1, H_q, 1, D]) reads from keys k ([1, H_kv, S, D]) of one KV
// head, computed here with plain loops: per page the per-channel min and max, the bound
// sum_d max(q_d min_d, q_d max_d) per query head of the group, the group's maximum, the newest
// page always, then the `want - 1` others of highest bound.
std::set<int64_t> expected_pages(const torch::Tensor& k, const torch::Tensor& q, int64_t head,
                                 int64_t page, int64_t want) {
  const int64_t S = k.size(2), D = k.size(3), hq = q.size(1), hkv = k.size(1), G = hq / hkv;
  const int64_t pages = (S + page - 1) / page;
  auto ka = k.accessor<float, 4>();
  auto qa = q.accessor<float, 4>();
  std::vector<double> score(static_cast<size_t>(pages), -std::numeric_limits<double>::infinity());
  for (int64_t p = 0; p < pages; ++p) {
    std::vector<double> lo(D, std::numeric_limits<double>::infinity()), hi(D, -lo[0]);
    for (int64_t s = p * page; s < std::min(S, (p + 1) * page); ++s)
      for (int64_t d = 0; d < D; ++d) {
        lo[d] = std::min<double>(lo[d], ka[0][head][s][d]);
        hi[d] = std::max<double>(hi[d], ka[0][head][s][d]);
      }
    for (int64_t g = 0; g < G; ++g) {
      double u = 0;
      for (int64_t d = 0; d < D; ++d) {
        const double qd = qa[0][head * G + g][0][d];
        u += std::max(qd * lo[d], qd * hi[d]);
      }
      score[p] = std::max(score[p], u);
    }
  }
  std::set<int64_t> read = {pages - 1};
  std::vector<int64_t> order(static_cast<size_t>(pages - 1));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return score[a] > score[b]; });
  for (int64_t i = 0; i < want - 1 && i < static_cast<int64_t>(order.size()); ++i)
    read.insert(order[i]);
  return read;
}

// The pages a bias ([1, H_kv, S]) reads for head `head`: a page is read when all its slots are
// 0, skipped when all are -inf (anything else fails).
std::set<int64_t> read_pages(const torch::Tensor& bias, int64_t head, int64_t page) {
  const int64_t S = bias.size(2);
  std::set<int64_t> read;
  for (int64_t p = 0; p * page < S; ++p) {
    int zero = 0, off = 0;
    for (int64_t s = p * page; s < std::min(S, (p + 1) * page); ++s) {
      const float b = bias[0][head][s].item<float>();
      if (b == 0) ++zero;
      else if (std::isinf(b) && b < 0) ++off;
    }
    EXPECT_TRUE(zero == 0 || off == 0) << "page " << p << " read in part";
    if (zero > 0) read.insert(p);
  }
  return read;
}

TEST(MethodQuest, DecodeReadsExactlyThePagesTheBoundSelects) {
  const ModelShape shape = test::method_shape(2, 4, 2, 8);
  auto st = make_method("quest(page=4,budget=12)")->make_state(shape);
  test::SyntheticStream in(shape, 3);
  in.feed(*st, 40);
  in.feed(*st, 10);  // 50 slots: 13 pages, the last one partial
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  for (int trial = 0; trial < 5; ++trial) {
    torch::Tensor q = torch::randn({1, 4, 1, 8}, gen);
    for (int l = 0; l < 2; ++l) {
      KVView v = st->read_view(l, q);
      ASSERT_TRUE(v.logit_bias.defined());
      for (int64_t h = 0; h < 2; ++h) {
        const std::set<int64_t> want = expected_pages(in.k[l], q, h, 4, 3);
        EXPECT_EQ(read_pages(v.logit_bias, h, 4), want) << "layer " << l << " head " << h;
        EXPECT_TRUE(want.count((in.n + 3) / 4 - 1));
      }
    }
    in.feed(*st, 1);
  }
  // A prefill chunk reads everything.
  EXPECT_FALSE(st->read_view(0, torch::randn({1, 4, 2, 8}, gen)).logit_bias.defined());
}

TEST(MethodQuest, NewestPageIsAlwaysRead) {
  // Every key of the newest page scores far below the rest: it is read all the same.
  const ModelShape shape = test::method_shape(1, 2, 1, 4);
  auto st = make_method("quest(page=2,budget=4)")->make_state(shape);
  const int64_t n = 11;
  torch::Tensor k = torch::ones({1, 1, n, 4});
  k.narrow(2, 10, 1).fill_(-100);  // page 5 holds slot 10 alone
  torch::Tensor v = torch::randn({1, 1, n, 4});
  st->append(0, KVAppend{k, k, v, torch::arange(n), torch::zeros({1, 2, n, 4})});
  KVView view = st->read_view(0, torch::ones({1, 2, 1, 4}));
  ASSERT_TRUE(view.logit_bias.defined());
  const std::set<int64_t> read = read_pages(view.logit_bias, 0, 2);
  EXPECT_EQ(read.size(), 2u);
  EXPECT_TRUE(read.count(5));
}

TEST(MethodQuest, BoundIsAnUpperBoundOfEveryDotProductInThePage) {
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  torch::Tensor k = torch::randn({2, 2, 37, 16}, gen) * 3;  // [B, H_kv, S, D]
  const QuestBounds b = quest_page_bounds(k, 8);
  ASSERT_EQ(b.lo.sizes(), torch::IntArrayRef({2, 2, 5, 16}));
  for (int trial = 0; trial < 10; ++trial) {
    torch::Tensor q = torch::randn({2, 4, 1, 16}, gen);       // G = 2
    torch::Tensor ub = quest_page_scores(q, b);               // [B, H_kv, G, P]
    torch::Tensor qg = q.view({2, 2, 2, 16});
    torch::Tensor dots = torch::matmul(qg, k.transpose(-1, -2));  // [B, H_kv, G, S]
    for (int64_t s = 0; s < 37; ++s) {
      torch::Tensor bound = ub.select(3, s / 8);  // [B, H_kv, G]
      EXPECT_TRUE((dots.select(3, s) <= bound + 1e-4).all().item<bool>()) << "slot " << s;
    }
    // Tight for a page of one key: the bound is q . k.
    const QuestBounds one = quest_page_bounds(k.narrow(2, 0, 1), 8);
    EXPECT_TRUE(torch::allclose(quest_page_scores(q, one).squeeze(-1), dots.select(3, 0), 1e-4,
                                1e-4));
  }
}

TEST(MethodQuest, MemoryIsTheFullCachePlusThePageBounds) {
  const ModelShape shape = test::method_shape(2, 4, 2, 64);
  auto quest = make_method("quest(page=16,budget=256)");
  auto full = make_method("full");
  for (int64_t tokens : {1000, 4096}) {
    auto q = quest->make_state(shape), f = full->make_state(shape);
    test::SyntheticStream a(shape, 5), b(shape, 5);
    a.feed_chunked(*q, tokens, 300);
    b.feed_chunked(*f, tokens, 300);
    const MemoryUse mq = q->memory(), mf = f->memory();
    const int64_t pages = (tokens + 15) / 16;
    EXPECT_EQ(mq.payload_bytes, mf.payload_bytes);
    EXPECT_EQ(mq.slots, mf.slots);
    EXPECT_EQ(mq.metadata_bytes, mf.metadata_bytes + 2 * 2 * pages * 64 * 2 * 4);
    const auto promised = quest->promised_memory(shape, tokens);
    ASSERT_TRUE(promised);
    EXPECT_EQ(promised->payload_bytes, mq.payload_bytes);
    EXPECT_EQ(promised->metadata_bytes, mq.metadata_bytes);
  }
}

TEST(MethodQuest, ReadsFewerBytesThanItHoldsAtLongContext) {
  const ModelShape shape = test::method_shape(2, 4, 2, 64);
  auto st = make_method("quest(page=16,budget=1024)")->make_state(shape);
  test::SyntheticStream in(shape, 9);
  in.feed_chunked(*st, 4096, 512);
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  // A prefill chunk reads everything it holds and no bound.
  for (int l = 0; l < 2; ++l) st->read_view(l, torch::randn({1, 4, 8, 64}, gen));
  const MemoryUse m = st->memory();
  const int64_t bounds = 2 * 2 * (4096 / 16) * 64 * 2 * 4;
  EXPECT_EQ(m.metadata_bytes, bounds);
  ASSERT_TRUE(st->bytes_read_last_step());
  EXPECT_EQ(*st->bytes_read_last_step(), m.payload_bytes);
  // A decode step: 64 of 256 pages per head, and every bound.
  for (int l = 0; l < 2; ++l) st->read_view(l, torch::randn({1, 4, 1, 64}, gen));
  const int64_t read = *st->bytes_read_last_step();
  EXPECT_EQ(read, m.payload_bytes / 4 + bounds);
  EXPECT_LT(read, m.payload_bytes + m.metadata_bytes);
  // Methods that read all they hold say nothing (the harness takes memory()).
  auto full = make_method("full")->make_state(shape);
  test::SyntheticStream f(shape, 9);
  f.feed(*full, 100);
  EXPECT_FALSE(full->bytes_read_last_step());
}

TEST(MethodQuest, LosslessWhenTheBudgetCoversTheSequence) {
  const ModelShape shape = test::method_shape(1, 4, 2, 8);
  auto st = make_method("quest(page=16,budget=64)")->make_state(shape);
  test::SyntheticStream in(shape, 1);
  in.feed(*st, 64);
  torch::Tensor q = torch::randn({1, 4, 1, 8});
  EXPECT_FALSE(st->read_view(0, q).logit_bias.defined());
  in.feed(*st, 1);  // 65 slots: 5 pages, 4 read
  EXPECT_TRUE(st->read_view(0, q).logit_bias.defined());
}

TEST(MethodQuest, PagesFollowTheStoreAfterAnotherSelectorDrops) {
  // StreamingLLM drops slots in front of Quest: the bounds are recomputed from the held keys.
  const ModelShape shape = test::method_shape(1, 4, 2, 8);
  auto st = make_method("streaming(sink=3,window=30)+quest(page=4,budget=12)")->make_state(shape);
  test::SyntheticStream in(shape, 4);
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  in.feed(*st, 20);
  for (int step = 0; step < 40; ++step) {
    in.feed(*st, 1);
    torch::Tensor q = torch::randn({1, 4, 1, 8}, gen);
    KVView v = st->read_view(0, q);
    ASSERT_EQ(v.slots(), std::min<int64_t>(in.n, 33));
    ASSERT_TRUE(v.logit_bias.defined());
    torch::Tensor held = v.k.contiguous();
    for (int64_t h = 0; h < 2; ++h)
      EXPECT_EQ(read_pages(v.logit_bias, h, 4), expected_pages(held, q, h, 4, 3))
          << "step " << step << " head " << h;
    EXPECT_EQ(st->memory().metadata_bytes,
              2 * ((v.slots() + 3) / 4) * 8 * 2 * 4 + (in.n > 33 ? 2 * 33 * 8 : 0));
  }
}

TEST(MethodQuest, SpecsAndRefusals) {
  EXPECT_EQ(make_method("quest")->spec(), "quest(budget=1024,page=16)");
  EXPECT_EQ(make_method("quest(page=8)+kivi(bits=4)")->spec(),
            "quest(budget=1024,page=8)+kivi(bits=4,group=32,residual=128)");
  EXPECT_THROW(make_method("quest(page=32,budget=16)"), InputError);
  // Its bounds are of post-RoPE keys; positions=cache holds keys before RoPE.
  try {
    make_method("streaming(window=64,positions=cache)+quest");
    FAIL() << "accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot share a chain"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kvb
