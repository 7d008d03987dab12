// KIVI's plain layout takes a chunk longer than its full-precision window (a prompt) without
// copying it through the window (methods/quant/kivi.cpp, append_values_long): what it holds must
// not depend on the chunking. Views and bytes after chunks of every kind (longer than R with an
// empty or a partly full window, shorter, single tokens) are bitwise those of the same tokens
// appended one at a time.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <vector>

#include "methods/registry.h"
#include "tests/methods_test_util.h"

namespace kvb {
namespace {

TEST(KiviLongChunks, ViewsAndBytesDoNotDependOnTheChunking) {
  const ModelShape shape = test::method_shape(1, 4, 2, 32);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const int64_t n = 150;
  const torch::Tensor k = torch::randn({1, 2, n, 32}, gen), v = torch::randn({1, 2, n, 32}, gen);
  for (const char* spec : {"kivi(bits=2,group=4,residual=8)", "kivi(bits=4,group=8,residual=32)",
                           "kivi(bits=2,group=32,residual=128)"}) {
    for (const std::vector<int64_t>& chunks :
         {std::vector<int64_t>{150}, {40, 3, 1, 50, 56}, {5, 100, 1, 1, 43}, {33, 33, 84}}) {
      SCOPED_TRACE(std::string(spec) + " first chunk " + std::to_string(chunks[0]));
      auto chunked = make_method(spec)->make_state(shape);
      auto single = make_method(spec)->make_state(shape);
      int64_t at = 0;
      for (int64_t c : chunks) {
        chunked->append(0, KVAppend{k.narrow(2, at, c),
                                    {},
                                    v.narrow(2, at, c),
                                    torch::arange(at, at + c, torch::kLong),
                                    {}});
        for (int64_t i = at; i < at + c; ++i)
          single->append(0, KVAppend{k.narrow(2, i, 1),
                                     {},
                                     v.narrow(2, i, 1),
                                     torch::arange(i, i + 1, torch::kLong),
                                     {}});
        at += c;
        const KVView a = chunked->view(0), b = single->view(0);
        EXPECT_TRUE(torch::equal(a.k, b.k)) << "after " << at;
        EXPECT_TRUE(torch::equal(a.v, b.v)) << "after " << at;
        EXPECT_TRUE(torch::equal(a.pos, b.pos)) << "after " << at;
        const MemoryUse ma = chunked->memory(), mb = single->memory();
        EXPECT_EQ(ma.payload_bytes, mb.payload_bytes);
        EXPECT_EQ(ma.metadata_bytes, mb.metadata_bytes);
      }
      ASSERT_EQ(at, n);
      // And it keeps going: decode steps after the chunks.
      const torch::Tensor k1 = torch::randn({1, 2, 1, 32}, gen),
                          v1 = torch::randn({1, 2, 1, 32}, gen);
      for (auto* st : {chunked.get(), single.get()})
        st->append(0, KVAppend{k1, {}, v1, torch::full({1}, n, torch::kLong), {}});
      EXPECT_TRUE(torch::equal(chunked->view(0).v, single->view(0).v));
    }
  }
}

}  // namespace
}  // namespace kvb
