// The JSONL result store: durable appends, reopen, half-written last lines, foreign files.
#include <gtest/gtest.h>

#include "common/check.h"
#include "common/json_io.h"
#include "results/jsonl_store.h"
#include "tests/test_util.h"

namespace kvb {
namespace {

TEST(SuiteStore, AppendsReopensAndDropsAHalfWrittenLine) {
  test::TempDir d;
  const std::string p = d.path("sub/r.jsonl");
  {
    auto s = open_result_store(p);
    EXPECT_FALSE(s->has_cell("a"));
    s->write_cell({{"key", "a"}, {"x", 1}});
    s->write_cell({{"key", "b"}, {"x", 2}});
    EXPECT_TRUE(s->has_cell("a"));
    EXPECT_EQ(test::count_lines(test::slurp(p)), 2);  // on disk at once
    EXPECT_THROW(s->write_cell({{"x", 3}}), Error);
  }
  const std::string two = test::slurp(p);
  write_file(p, two + "{\"key\": \"c\", \"x");
  auto s = open_result_store(p);
  EXPECT_TRUE(s->has_cell("b"));
  EXPECT_FALSE(s->has_cell("c"));
  EXPECT_EQ(test::slurp(p), two);
  ASSERT_EQ(s->cells().size(), 2u);
  EXPECT_EQ(s->cells()[1]["x"], 2);
  s->write_cell({{"key", "c"}});
  EXPECT_EQ(test::count_lines(test::slurp(p)), 3);
}

TEST(SuiteStore, ForeignContentIsAnErrorAndStaysUntouched) {
  test::TempDir d;
  const std::string p = d.path("r.jsonl");
  write_file(p, "{\"key\": \"a\"}\n[1, 2]\n");
  try {
    open_result_store(p);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(p + ":2: not a result record"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(test::slurp(p), "{\"key\": \"a\"}\n[1, 2]\n");
}

}  // namespace
}  // namespace kvb
