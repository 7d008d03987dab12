// SCBench-like generators, SCBench's metrics, and the JSONL loader.
#include <gtest/gtest.h>

#include <regex>
#include <set>

#include "datasets/rng.h"
#include "datasets/scbench.h"
#include "common/check.h"
#include "common/json_io.h"
#include "tests/test_util.h"

namespace kvb {
namespace {

TEST(DatasetsScbench, KeyValueRetrievalOverUuids) {
  ScTask t = generate_kv_retrieval(2, 10, 4, 3);
  EXPECT_EQ(t.metric, ScMetric::kSubstring);
  ASSERT_EQ(t.samples.size(), 2u);
  const std::regex uuid("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}");
  for (const auto& s : t.samples) {
    ASSERT_EQ(s.turns.size(), 4u);
    std::set<std::string> asked;
    for (const auto& turn : s.turns) {
      ASSERT_EQ(turn.answers.size(), 1u);
      EXPECT_TRUE(std::regex_match(turn.answers[0], uuid)) << turn.answers[0];
      // The key is in the query; its pair is in the context.
      std::smatch m;
      ASSERT_TRUE(std::regex_search(turn.input, m, uuid));
      EXPECT_NE(s.context.find("\"" + m.str() + "\": \"" + turn.answers[0] + "\""),
                std::string::npos);
      EXPECT_TRUE(asked.insert(m.str()).second) << "keys are distinct across turns";
    }
  }
  EXPECT_NE(t.samples[0].context, t.samples[1].context);
  EXPECT_EQ(generate_kv_retrieval(2, 10, 4, 3).samples[1].context, t.samples[1].context);
}

TEST(DatasetsScbench, PrefixSuffixVariableTracingMathFindIcl) {
  ScTask ps = generate_prefix_suffix(1, 50, 3, 1);
  for (const auto& turn : ps.samples[0].turns) {
    const std::string& w = turn.answers[0];
    EXPECT_NE(ps.samples[0].context.find(w + "\n"), std::string::npos);
    EXPECT_NE(turn.input.find("\"" + w.substr(0, 4) + "\""), std::string::npos);
    EXPECT_NE(turn.input.find("\"" + w.substr(w.size() - 4) + "\""), std::string::npos);
  }
  ScTask vt = generate_variable_tracing(1, 3, 4, 30, 2, 1);
  EXPECT_EQ(vt.metric, ScMetric::kStringMatchAll);
  for (const auto& turn : vt.samples[0].turns) {
    ASSERT_EQ(turn.answers.size(), 5u);  // the first variable and 4 hops
    for (size_t h = 1; h < 5; ++h)
      EXPECT_NE(vt.samples[0].context.find("VAR " + turn.answers[h] + " = VAR " +
                                           turn.answers[h - 1] + "."),
                std::string::npos);
  }
  ScTask mf = generate_math_find(1, 30, 2, 1);
  EXPECT_EQ(mf.metric, ScMetric::kFirstInt);
  EXPECT_NE(mf.samples[0].turns[0].input.find("largest"), std::string::npos);
  EXPECT_NE(mf.samples[0].turns[1].input.find("smallest"), std::string::npos);
  EXPECT_LT(std::stoi(mf.samples[0].turns[1].answers[0]),
            std::stoi(mf.samples[0].turns[0].answers[0]));
  ScTask icl = generate_icl_classification(1, 40, 4, 3, 1);
  size_t shots = 0;
  for (size_t p = icl.samples[0].context.find("Label: "); p != std::string::npos;
       p = icl.samples[0].context.find("Label: ", p + 1))
    ++shots;
  EXPECT_EQ(shots, 40u);
  for (const auto& turn : icl.samples[0].turns)
    EXPECT_NE(icl.samples[0].context.find("Label: " + turn.answers[0] + "\n"), std::string::npos);
  EXPECT_THROW(generate_icl_classification(1, 4, 50, 1, 1), InputError);
}

// The training mixture as shared contexts: the questions are the turns in the trained format,
// every answer's information is in the context, and the trained answer text is the gold history.
TEST(DatasetsScbench, MixtureContextsAskTheTrainedQuestions) {
  ScTask t = generate_mixture_task(6, 1500, 3, {"passkey", "kv", "needle", "vars"}, 11);
  EXPECT_EQ(t.name, "mixture");
  EXPECT_EQ(t.metric, ScMetric::kSubstring);
  ASSERT_EQ(t.samples.size(), 6u);
  size_t turns = 0;
  std::set<std::string> firsts;
  for (const auto& s : t.samples) {
    EXPECT_LT(s.context.size(), 1500u);
    EXPECT_EQ(s.context.find("\n\n"), std::string::npos) << "no question inside the context";
    ASSERT_GE(s.turns.size(), 1u);
    EXPECT_LE(s.turns.size(), 3u);
    turns += s.turns.size();
    for (const auto& turn : s.turns) {
      ASSERT_EQ(turn.answers.size(), 1u);
      const std::string& v = turn.answers[0];
      EXPECT_EQ(turn.gold, " " + v + ".");
      EXPECT_NE(s.context.find(v), std::string::npos) << v << " is somewhere in the context";
      EXPECT_TRUE(turn.input.rfind("What is the", 0) == 0) << turn.input;
      firsts.insert(turn.input.substr(0, 16));
    }
  }
  EXPECT_GT(turns, 6u) << "several turns per context";
  EXPECT_GE(firsts.size(), 3u) << "different tasks are asked";
  // Deterministic in the seed; other seeds draw other documents.
  EXPECT_EQ(generate_mixture_task(6, 1500, 3, {"passkey", "kv", "needle", "vars"}, 11).samples[4].context,
            t.samples[4].context);
  EXPECT_NE(generate_mixture_task(6, 1500, 3, {"passkey", "kv", "needle", "vars"}, 12).samples[4].context,
            t.samples[4].context);
  try {
    generate_mixture_task(1, 1500, 2, {"passkey", "kvv"}, 1);
    ADD_FAILURE() << "an unknown task name is accepted";
  } catch (const InputError& e) {  // the message lists the tasks that ask a question (not copy)
    EXPECT_EQ(std::string(e.what()), "mixture: unknown task 'kvv' (needle, passkey, kv, vars, prefix)");
  }
  EXPECT_THROW(generate_mixture_task(1, 1500, 2, {"copy"}, 1), InputError);
  EXPECT_THROW(generate_mixture_task(1, 40, 1, {"needle"}, 1), InputError);
}

TEST(DatasetsScbench, Metrics) {
  EXPECT_EQ(score_sc_turn(ScMetric::kSubstring, "the value is abc-1.", {"abc-1"}), 1.0);
  EXPECT_EQ(score_sc_turn(ScMetric::kSubstring, "abc", {"abc-1"}), 0.0);
  EXPECT_EQ(score_sc_turn(ScMetric::kStringMatchAll, "AAAAA, CCCCC",
                          {"AAAAA", "BBBBB", "CCCCC", "DDDDD"}),
            0.5);
  EXPECT_EQ(score_sc_turn(ScMetric::kFirstInt, " -42, not 7", {"-42"}), 1.0);
  EXPECT_EQ(score_sc_turn(ScMetric::kFirstInt, " 0042", {"42"}), 1.0);
  EXPECT_EQ(score_sc_turn(ScMetric::kFirstInt, " 7 then -42", {"-42"}), 0.0);
  EXPECT_EQ(score_sc_turn(ScMetric::kFirstInt, "none", {"1"}), 0.0);
  EXPECT_EQ(parse_sc_metric("string_match_all"), ScMetric::kStringMatchAll);
  EXPECT_THROW(parse_sc_metric("rouge"), InputError);
}

TEST(DatasetsScbench, JsonlLoaderReadsScbenchFormatAndNamesBadLines) {
  test::TempDir d;
  const std::string p = d.path("t.jsonl");
  write_file(p,
             "{\"id\": 7, \"context\": \"ctx\", \"multi_turns\": [{\"input\": \"q1\", \"answer\": "
             "\"a1\"}, "
             "{\"input\": \"q2\", \"answer\": [\"x\", 3]}]}\r\n\n"
             "{\"context\": \"c2\", \"multi_turns\": [{\"input\": \"q\", \"answer\": 12}]}\n");
  ScTask t = load_scbench_jsonl(p, ScMetric::kFirstInt);
  ASSERT_EQ(t.samples.size(), 2u);
  EXPECT_EQ(t.samples[0].id, "7");
  EXPECT_EQ(t.samples[0].turns[1].answers, (std::vector<std::string>{"x", "3"}));
  EXPECT_EQ(t.samples[1].id, "3");
  EXPECT_EQ(t.samples[1].turns[0].answers[0], "12");
  EXPECT_EQ(load_scbench_jsonl(p, ScMetric::kFirstInt, 1).samples.size(), 1u);
  auto err = [&](const std::string& text) {
    write_file(p, text);
    try {
      load_scbench_jsonl(p, ScMetric::kSubstring);
      return std::string("<valid>");
    } catch (const InputError& e) {
      return std::string(e.what());
    }
  };
  EXPECT_EQ(err("{\"context\": 1, \"multi_turns\": []}\n"),
            p + ":1: $.context: expected a string, got an integer 1");
  EXPECT_EQ(
      err("\n{\"context\": \"c\", \"multi_turns\": []}\n"),
      p + ":2: $.multi_turns: expected a non-empty array of at most 1024 turns, got an array");
  EXPECT_EQ(err("{\"context\": \"c\", \"multi_turns\": [{\"input\": \"i\", \"answer\": {}}]}\n"),
            p + ":1: $.multi_turns[0].answer: expected a string, a number or a list of them, got "
                "an object");
  EXPECT_EQ(err("{\"context\": \"c\", \"multi_turns\": [{\"input\": \"i\", \"answer\": [\"a\", "
                "null]}]}\n"),
            p + ":1: $.multi_turns[0].answer[1]: expected a string, a number or a list of them, "
                "got null");
  EXPECT_NE(err("{\"context\": \"c\",\n").find(p + ":1: invalid JSON"), std::string::npos);
  EXPECT_EQ(err("\n"), p + ": no samples");
}

TEST(DatasetsScbench, RngIsStable) {
  Rng r(1);
  const uint64_t first = r.next();
  EXPECT_EQ(Rng(1).next(), first);
  EXPECT_NE(Rng(2).next(), first);
  EXPECT_NE(derive_seed(1, "a"), derive_seed(1, "b"));
  Rng u(5);
  std::string id = random_uuid(u);
  EXPECT_EQ(id.size(), 36u);
  EXPECT_EQ(id[14], '4');
}

}  // namespace
}  // namespace kvb
