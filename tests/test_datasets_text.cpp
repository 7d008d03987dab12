// Text loaders (CRLF, folders, WikiText-2), sentence splitting, and the prose generator.
#include <gtest/gtest.h>

#include <set>
#include <sstream>

#include "datasets/loader.h"
#include "datasets/prose.h"
#include "datasets/text.h"
#include "common/check.h"
#include "common/json_io.h"
#include "tests/test_util.h"

namespace kvb {
namespace {

TEST(DatasetsText, LineEndsAreNormalised) {
  EXPECT_EQ(normalize_newlines("a\r\nb\rc\n\r\n"), "a\nb\nc\n\n");
  test::TempDir d;
  write_file(d.path("x.txt"), "One.\r\nTwo.\r\n");
  EXPECT_EQ(load_text_file(d.path("x.txt")), "One.\nTwo.\n");
  write_file(d.path("empty.txt"), "");
  EXPECT_THROW(load_text_file(d.path("empty.txt")), InputError);
  try {
    load_text_file(d.path("missing.txt"));
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(d.path("missing.txt")), std::string::npos) << e.what();
  }
}

TEST(DatasetsText, FolderIsReadInNameOrder) {
  test::TempDir d;
  write_file(d.path("b.txt"), "  Second file.\n");
  write_file(d.path("a.txt"), "First file.\r\n");
  write_file(d.path("c.md"), "ignored");
  EXPECT_EQ(load_text_dir(d.path()), "First file.\n\nSecond file.");
  EXPECT_THROW(load_text_dir(d.path("a.txt")), InputError);
  test::TempDir e;
  EXPECT_THROW(load_text_dir(e.path()), InputError);
}

TEST(DatasetsText, SentencesEndAtTerminatorsAndBlankLines) {
  auto s = split_sentences(
      "Hello there.  He said \"Go!\" Then   left?\nNo\n\nNew para. e.g.x stays. 3.5 too.");
  std::vector<std::string> want = {"Hello there.", "He said \"Go!\"", "Then left?", "No",
                                   "New para.",    "e.g.x stays.",    "3.5 too."};
  EXPECT_EQ(s, want);
}

TEST(DatasetsText, WikiText2HasNoCarriageReturns) {
  if (!test::shared_has("data/wikitext-2-raw/wiki.test.raw"))
    GTEST_SKIP() << "../shared/data/wikitext-2-raw missing";
  std::string t = load_wikitext2(test::shared_path("data/wikitext-2-raw/wiki.test.raw"));
  EXPECT_EQ(t.find('\r'), std::string::npos);
  EXPECT_EQ(t.rfind(" = Robert Boulter = \n", 0), 0u) << t.substr(0, 40);
  EXPECT_GT(t.size(), 1200000u);
}

TEST(DatasetsText, PaulGrahamEssaysLoad) {
  if (!test::shared_has("data/paul_graham_essays"))
    GTEST_SKIP() << "../shared/data/paul_graham_essays missing";
  std::string t = load_text_dir(test::shared_path("data/paul_graham_essays"));
  EXPECT_GT(t.size(), 500000u);
  EXPECT_GT(split_sentences(t).size(), 5000u);
}

TEST(DatasetsProse, SeededGrammaticalAndVaried) {
  const std::string a = generate_prose(3000, 1);
  EXPECT_EQ(a, generate_prose(3000, 1));
  EXPECT_NE(a, generate_prose(3000, 2));
  std::set<std::string> words;
  std::istringstream in(a);
  std::string w;
  int64_t n = 0;
  while (in >> w) {
    ++n;
    while (!w.empty() && (w.back() == '.' || w.back() == ',' || w.back() == '!')) w.pop_back();
    words.insert(w);
  }
  EXPECT_GE(n, 3000);
  EXPECT_GT(words.size(), 400u) << "a decent vocabulary";
  for (const auto& s : split_sentences(a)) {
    EXPECT_TRUE(std::isupper(static_cast<unsigned char>(s[0]))) << s;
    EXPECT_TRUE(s.back() == '.' || s.back() == '!') << s;
  }
  EXPECT_NE(a.find("\n\n"), std::string::npos) << "paragraphs";
}

TEST(DatasetsLoader, SpecsLoadOrGenerate) {
  test::TempDir d;
  write_file(d.path("t.txt"), "Alpha beta gamma delta. Epsilon zeta.\r\n");
  Dataset t = load_dataset({{"type", "text"}, {"path", d.path("t.txt")}, {"max_chars", 20}}, 0);
  EXPECT_TRUE(t.is_text);
  EXPECT_EQ(t.text, "Alpha beta gamma");
  Dataset p1 = load_dataset({{"type", "prose"}, {"words", 100}}, 7),
          p2 = load_dataset({{"type", "prose"}, {"words", 100}}, 7);
  EXPECT_EQ(p1.text, p2.text);
  EXPECT_NE(p1.text, load_dataset({{"type", "prose"}, {"words", 100}}, 8).text);
  Dataset kv =
      load_dataset({{"type", "scbench_kv"}, {"samples", 2}, {"pairs", 5}, {"turns", 3}}, 1);
  EXPECT_FALSE(kv.is_text);
  EXPECT_EQ(kv.task.samples.size(), 2u);
  EXPECT_EQ(kv.task.samples[0].turns.size(), 3u);
  EXPECT_THROW(load_dataset({{"type", "text"}, {"path", d.path("nope.txt")}}, 0), InputError);
}

}  // namespace
}  // namespace kvb
