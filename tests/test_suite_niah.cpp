// Needle in a haystack: grids are deterministic in the seed and identical across methods, the
// needle sits at a sentence boundary at the requested depth, and scoring.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "datasets/needle.h"
#include "datasets/prose.h"
#include "datasets/text.h"
#include "harness/model/model.h"
#include "methods/registry.h"
#include "suites/niah.h"
#include "tests/suite_test_util.h"

namespace kvb {
namespace {

NiahParams params(std::vector<int64_t> lens, std::vector<double> depths, int64_t needles = 1) {
  NiahParams p;
  p.context_lengths = std::move(lens);
  p.depths = std::move(depths);
  p.needle.needles = needles;
  p.max_new_tokens = 4;
  return p;
}

TEST(SuiteNiah, GridIsDeterministicInTheSeed) {
  auto tok = make_byte_tokenizer(258);
  Haystack h = make_haystack(*tok, generate_prose(3000, 1));
  NiahParams p = params({600, 1200}, grid_depths(3, "linear"));
  auto a = build_niah_grid(*tok, h, p, 42), b = build_niah_grid(*tok, h, p, 42),
       c = build_niah_grid(*tok, h, p, 43);
  ASSERT_EQ(a.size(), 6u);
  bool any_diff = false;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].sample.ids, b[i].sample.ids);
    EXPECT_EQ(a[i].sample.needles[0].number, b[i].sample.needles[0].number);
    EXPECT_EQ(a[i].sample.needles[0].token_pos, b[i].sample.needles[0].token_pos);
    any_diff = any_diff || a[i].sample.needles[0].number != c[i].sample.needles[0].number;
    EXPECT_EQ(a[i].sample.needles[0].number.size(), 7u);
  }
  EXPECT_TRUE(any_diff) << "another seed draws other needles";
  // The prose generator itself is seeded.
  EXPECT_EQ(generate_prose(500, 9), generate_prose(500, 9));
  EXPECT_NE(generate_prose(500, 9), generate_prose(500, 10));
}

TEST(SuiteNiah, SamplesPerCellAddPromptsAndKeepTheFirst) {
  auto tok = make_byte_tokenizer(258);
  Haystack h = make_haystack(*tok, generate_prose(3000, 1));
  NiahParams one = params({600, 900}, {0.0, 0.5});
  NiahParams three = one;
  three.samples_per_cell = 3;
  auto a = build_niah_grid(*tok, h, one, 42), b = build_niah_grid(*tok, h, three, 42);
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 12u);
  for (size_t i = 0; i < a.size(); ++i) {
    // Sample 0 of every cell is the prompt a one-sample grid has (old results stay valid).
    EXPECT_EQ(b[3 * i].sample.ids, a[i].sample.ids);
    EXPECT_EQ(b[3 * i].row, a[i].row);
    EXPECT_EQ(b[3 * i].col, a[i].col);
    EXPECT_NE(b[3 * i + 1].sample.needles[0].number, b[3 * i + 2].sample.needles[0].number);
    EXPECT_NE(b[3 * i + 1].sample.ids, b[3 * i].sample.ids);
  }
  EXPECT_FALSE(niah_params_json(one).contains("samples_per_cell"));
  EXPECT_EQ(niah_params_json(three)["samples_per_cell"], 3);
  // The heatmap holds each cell's mean: a random model scores 0 and a cell's mean stays in [0, 1].
  Model m = Model::random(test::tiny_suite_config(258), 2);
  nlohmann::json r = run_niah(m, *tok, *make_method("full"), b, three);
  ASSERT_EQ(r["samples"].size(), 12u);
  double sum = 0;
  for (const auto& s : r["samples"]) sum += s["score"].get<double>();
  double heat = 0;
  for (const auto& row : r["heatmap"]["scores"])
    for (const auto& c : row) heat += c.get<double>();
  EXPECT_NEAR(heat * 3, sum, 1e-9);
  EXPECT_NEAR(r["score"].get<double>(), sum / 12, 1e-12);
}

// The samples of a grid point differ in their haystack text, not only in their needles: sample
// 0 starts at the corpus' first sentence (as a one-sample grid does), the others at sentences
// drawn from their own seeds.
TEST(SuiteNiah, SamplesOfACellUseTheirOwnHaystackWindows) {
  auto tok = make_byte_tokenizer(258);
  Haystack h = make_haystack(*tok, generate_prose(3000, 1));
  NiahParams p = params({600}, {0.5});
  p.samples_per_cell = 4;
  const auto g = build_niah_grid(*tok, h, p, 42);
  ASSERT_EQ(g.size(), 4u);
  EXPECT_EQ(g[0].sample.first_sentence, 0);
  std::set<int64_t> starts;
  for (const auto& pt : g) {
    starts.insert(pt.sample.first_sentence);
    // The prompt begins with the sentence its haystack starts at.
    const std::string& first = h.sentences[static_cast<size_t>(pt.sample.first_sentence)];
    EXPECT_EQ(pt.sample.prompt.compare(0, first.size(), first), 0)
        << pt.sample.prompt.substr(0, 80);
  }
  EXPECT_EQ(starts.size(), 4u);
  // Deterministic in the seed; recorded per sample.
  EXPECT_EQ(build_niah_grid(*tok, h, p, 42)[2].sample.ids, g[2].sample.ids);
  Model m = Model::random(test::tiny_suite_config(258), 2);
  const nlohmann::json r = run_niah(m, *tok, *make_method("full"), g, p);
  for (size_t i = 0; i < g.size(); ++i)
    EXPECT_EQ(r["samples"][i]["haystack_first_sentence"], g[i].sample.first_sentence);
}

// A pass-key needle (no city, five digits), as in pass-key retrieval.
TEST(SuiteNiah, PassKeyTemplateWithoutCity) {
  NiahParams p = parse_niah_params(
      {{"context_lengths", {400}},
       {"depths", {0.5}},
       {"digits", 5},
       {"needle", "The pass key is {number}. Remember it. {number} is the pass key."},
       {"question", "What is the pass key?"},
       {"answer_prefix", "The pass key is"}},
      "$.runs[0].params");
  EXPECT_EQ(niah_params_json(p)["digits"], 5);
  auto tok = make_byte_tokenizer(258);
  Haystack h = make_haystack(*tok, generate_prose(2000, 1));
  for (const NiahPoint& pt : build_niah_grid(*tok, h, p, 3)) {
    const std::string& key = pt.sample.needles[0].number;
    ASSERT_EQ(key.size(), 5u);
    EXPECT_NE(key[0], '0');
    EXPECT_NE(pt.sample.prompt.find("The pass key is " + key + ". Remember it. " + key), std::string::npos);
    EXPECT_EQ(pt.sample.prompt.substr(pt.sample.prompt.size() - 39),
              "\n\nWhat is the pass key? The pass key is");
  }
}

TEST(SuiteNiah, MethodsSeeTheSameHaystacksNeedlesAndPositions) {
  Model m = Model::random(test::tiny_suite_config(258), 2);
  auto tok = make_byte_tokenizer(258);
  Haystack h = make_haystack(*tok, generate_prose(2000, 3));
  NiahParams p = params({300, 500}, {0.0, 0.5, 1.0});
  auto grid = build_niah_grid(*tok, h, p, 7);
  nlohmann::json a = run_niah(m, *tok, *make_method("full"), grid, p);
  nlohmann::json b = run_niah(m, *tok, *make_method("streaming(sink=4,window=32)"), grid, p);
  ASSERT_EQ(a["samples"].size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(a["samples"][i]["needles"], b["samples"][i]["needles"]);
    EXPECT_EQ(a["samples"][i]["prompt_tokens"], b["samples"][i]["prompt_tokens"]);
  }
  EXPECT_EQ(a["heatmap"]["scores"].size(), 2u);
  EXPECT_EQ(a["heatmap"]["scores"][0].size(), 3u);
  EXPECT_LT(b["max_memory_bytes"].get<int64_t>(), a["max_memory_bytes"].get<int64_t>());
}

// The memory record names what the last decode step read: what the state holds for a method
// that reads everything, a fraction of it for Quest (which holds every slot).
TEST(SuiteNiah, RecordsTheBytesReadPerDecodeStepNextToTheBytesHeld) {
  Model m = Model::random(test::tiny_suite_config(258), 2);
  auto tok = make_byte_tokenizer(258);
  Haystack h = make_haystack(*tok, generate_prose(2000, 3));
  NiahParams p = params({600}, {0.5});
  auto grid = build_niah_grid(*tok, h, p, 7);
  for (const char* spec : {"full", "quest(page=16,budget=64)"}) {
    SCOPED_TRACE(spec);
    const nlohmann::json mem = run_niah(m, *tok, *make_method(spec), grid, p)["memory"];
    const int64_t held = mem["payload_bytes"].get<int64_t>() + mem["metadata_bytes"].get<int64_t>();
    const int64_t read = mem.at("read_bytes_per_step").get<int64_t>();
    if (std::string(spec) == "full") EXPECT_EQ(read, held);
    else EXPECT_LT(read, held / 4);
  }
}

// With the byte tokenizer every byte is one token, so token positions are exact.
TEST(SuiteNiah, NeedleLandsAtTheRequestedDepthWithinOneSentence) {
  auto tok = make_byte_tokenizer(258);
  for (const std::string& src : {std::string("prose"), std::string("essays")}) {
    std::string text;
    if (src == "prose") {
      text = generate_prose(4000, 4);
    } else {
      if (!test::shared_has("data/paul_graham_essays")) continue;
      text = load_text_dir(test::shared_path("data/paul_graham_essays"));
    }
    Haystack h = make_haystack(*tok, text);
    for (int64_t L : {800, 3000})
      for (double d : {0.0, 0.1, 0.25, 0.5, 0.77, 0.9, 1.0}) {
        NeedleOptions o;
        NiahSample s = build_niah_sample(*tok, h, L, d, o, 99);
        ASSERT_EQ(s.needles.size(), 1u);
        const PlacedNeedle& n = s.needles[0];
        EXPECT_LE(static_cast<int64_t>(s.ids.size()), L);
        EXPECT_GT(static_cast<int64_t>(s.ids.size()), L - 2 * h.max_sentence_tokens - 8) << src;
        const double want = d * static_cast<double>(s.haystack_tokens);
        const double got = n.actual_depth * static_cast<double>(s.haystack_tokens);
        EXPECT_LE(std::abs(got - want), static_cast<double>(h.max_sentence_tokens))
            << src << " L=" << L << " depth " << d << " landed at " << n.actual_depth;
        // The needle's tokens start at token_pos, right after a sentence end (or the BOS).
        const std::string needle_text = n.text;
        std::vector<int32_t> nt = tok->encode(needle_text, false);
        ASSERT_LE(n.token_pos + static_cast<int64_t>(nt.size()),
                  static_cast<int64_t>(s.ids.size()));
        EXPECT_TRUE(std::equal(nt.begin(), nt.end(), s.ids.begin() + n.token_pos))
            << src << " depth " << d;
        if (n.token_pos > s.haystack_start) {
          const char before = static_cast<char>(s.ids[static_cast<size_t>(n.token_pos) - 2]);
          EXPECT_TRUE(before == '.' || before == '!' || before == '?' || before == '"' ||
                      before == ')' || before == '\'' || before == ']')
              << src << " depth " << d << ": '" << before << "' before the needle";
        }
        EXPECT_NE(s.prompt.find("What is the special magic number for " + n.city + "?"),
                  std::string::npos);
        EXPECT_EQ(s.prompt.substr(s.prompt.size() - std::string("is").size()), "is");
      }
  }
}

TEST(SuiteNiah, MultiNeedleSpreadsNeedlesAfterTheDepth) {
  auto tok = make_byte_tokenizer(258);
  Haystack h = make_haystack(*tok, generate_prose(3000, 5));
  NeedleOptions o;
  o.needles = 3;
  NiahSample s = build_niah_sample(*tok, h, 2000, 0.2, o, 5);
  ASSERT_EQ(s.needles.size(), 3u);
  const double want[3] = {0.2, 0.2 + 0.8 / 3, 0.2 + 1.6 / 3};
  for (int j = 0; j < 3; ++j) {
    EXPECT_NEAR(
        s.needles[j].actual_depth, want[j],
        static_cast<double>(h.max_sentence_tokens) / static_cast<double>(s.haystack_tokens));
    EXPECT_NE(s.prompt.find(s.needles[j].text), std::string::npos);
  }
  EXPECT_NE(s.needles[0].city, s.needles[1].city);
  EXPECT_NE(s.prompt.find("What are the special magic numbers for " + s.needles[0].city + ", " +
                          s.needles[1].city + " and " + s.needles[2].city + "?"),
            std::string::npos);
}

TEST(SuiteNiah, DepthSpacingAndScoring) {
  EXPECT_EQ(grid_depths(5, "linear"), (std::vector<double>{0, 0.25, 0.5, 0.75, 1}));
  std::vector<double> s = grid_depths(7, "sigmoid");
  ASSERT_EQ(s.size(), 7u);
  EXPECT_EQ(s.front(), 0.0);
  EXPECT_EQ(s.back(), 1.0);
  EXPECT_NEAR(s[3], 0.5, 1e-9);
  EXPECT_TRUE(std::is_sorted(s.begin(), s.end()));
  EXPECT_LT(s[2] - s[1], s[3] - s[2]);  // denser towards the ends than in the middle
  EXPECT_EQ(score_niah(" 1234567.", {"1234567"}, "substring"), 1.0);
  EXPECT_EQ(score_niah(" 123456", {"1234567"}, "substring"), 0.0);
  EXPECT_EQ(score_niah(" 1234567 and 7654321", {"7654321", "1111111"}, "substring"), 0.5);
  EXPECT_EQ(score_niah(" 1234567.", {"1234567"}, "exact"), 1.0);
  EXPECT_EQ(score_niah(" 12 then 1234567", {"1234567"}, "exact"), 0.0);
  EXPECT_EQ(score_niah("7654321, 1234567", {"1234567", "7654321"}, "exact"), 1.0);
}

}  // namespace
}  // namespace kvb
