// The trainer (`kvbench train`) and its generated mixture: documents are exact and deterministic,
// the training forward pass is the inference forward pass (and, on rows trained through a
// StreamingLLM window, the streaming engine's; scored in row blocks, one [T, T] block's), the
// byte tokenizer.json is the byte tokenizer, key-value questions may end in the key as the list
// writes it (the same pairs asked) and a list may be asked several distinct keys, a phase's
// mixture keeps the weights it does not name, training is bitwise reproducible (a committed loss
// curve, the committed reference model's first steps, a recipe grown by later phases, one with a
// cooldown over its last steps), resuming from a checkpoint equals an uninterrupted run (and skips
// the phases it has passed), and bad train.json files get one line and exit 2.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "datasets/mixture.h"
#include "common/check.h"
#include "common/json_io.h"
#include "harness/model/model.h"
#include "harness/tokenizer/tokenizer.h"
#include "trainer/trainer.h"
#include "methods/registry.h"
#include "tests/test_util.h"

namespace {

namespace fs = std::filesystem;
using kvb::test::q;
using kvb::test::run_kvbench;
using kvb::test::slurp;
using kvb::test::TempDir;
using nlohmann::json;

std::string source(const std::string& rel) { return kvb::test::source_path(rel); }

// The "loss" field of every line of a loss.jsonl, as written (9 significant digits round-trip a
// float32 exactly).
std::vector<std::string> losses(const std::string& path, size_t limit = SIZE_MAX) {
  std::vector<std::string> out;
  std::ifstream in(path);
  std::string line;
  while (out.size() < limit && std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line).at("loss").dump());
  return out;
}

TEST(Mixture, DocumentsAreExactDeterministicAndAnswersPointAtTheAnswer) {
  kvb::MixtureWeights w;
  int with_answers = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const int64_t bytes = 256 + static_cast<int64_t>(seed % 5) * 400;
    kvb::MixDocument d = kvb::make_mix_document(bytes, seed, w);
    ASSERT_EQ(static_cast<int64_t>(d.text.size()), bytes) << "seed " << seed;
    EXPECT_EQ(kvb::make_mix_document(bytes, seed, w).text, d.text);
    with_answers += !d.answers.empty();
    for (const kvb::AnswerSpan& a : d.answers) {
      ASSERT_LT(a.begin, a.end);
      ASSERT_LE(a.end, bytes);
      const std::string ans = d.text.substr(static_cast<size_t>(a.begin), static_cast<size_t>(a.end - a.begin));
      EXPECT_EQ(ans.front(), ' ') << ans;
      EXPECT_EQ(ans.back(), '.') << ans;
      // The answer's content appears earlier in the document (it is retrievable) ...
      const std::string core = ans.substr(1, ans.size() - 2);
      const size_t first = d.text.find(a.task == kvb::MixTask::kPrefix ? core.substr(0, 12) : core);
      EXPECT_LT(static_cast<int64_t>(first), a.begin) << kvb::mix_task_name(a.task) << ": " << core;
    }
  }
  EXPECT_GT(with_answers, 150);
  EXPECT_NE(kvb::make_mix_document(2047, 1, w).text, kvb::make_mix_document(2047, 2, w).text);
}

TEST(Mixture, ForcedDepthPlacesTheInformationThere) {
  kvb::MixtureWeights w;
  for (double depth : {0.05, 0.5, 0.95}) {
    kvb::MixDocument d = kvb::make_mix_document(2047, 11, w, {kvb::MixTask::kPasskey}, depth);
    ASSERT_EQ(d.answers.size(), 1u);
    const std::string key = d.text.substr(static_cast<size_t>(d.answers[0].begin) + 1, 5);
    const double at = static_cast<double>(d.text.find("The pass key is " + key)) / 2047.0;
    EXPECT_NEAR(at, depth * 0.9, 0.08) << "depth " << depth;  // the questions take the last ~10%
  }
  EXPECT_THROW(kvb::make_mix_document(100, 1, w, {kvb::MixTask::kKv}), kvb::InputError);
}

TEST(Mixture, KeyValueQuestionsMayEndInTheKeyAsTheListWritesIt) {
  kvb::MixtureWeights phrase, by_key;
  by_key.kv_ask_by_key = true;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    // 2047 bytes leave room for all 1-3 tasks drawn (a short document may drop a different number).
    const kvb::MixDocument a = kvb::make_mix_document(2047, seed, phrase, {kvb::MixTask::kKv});
    const kvb::MixDocument b = kvb::make_mix_document(2047, seed, by_key, {kvb::MixTask::kKv});
    ASSERT_EQ(a.questions.size(), b.questions.size()) << "seed " << seed;
    for (size_t i = 0; i < a.questions.size(); ++i) {
      // Same key asked, same answer; only the question's ending differs.
      const std::string& qa = a.questions[i].question;
      const std::string& qb = b.questions[i].question;
      const std::string key = qb.substr(qb.size() - 7, 6);
      EXPECT_EQ(qb, "What is the value of key " + key + "? " + key + ":");
      EXPECT_EQ(qa, "What is the value of key " + key + "? The value of key " + key + " is");
      EXPECT_EQ(a.questions[i].answer, b.questions[i].answer);
      // The list holds the pair exactly as the question ends, followed by the answer's value.
      const std::string value = b.questions[i].answer.substr(1, 6);
      EXPECT_LT(b.text.find(key + ": " + value), static_cast<size_t>(b.body_bytes)) << key;
    }
  }
}

// kv_asks = 3 asks up to three distinct keys of each list (fewer when the list has fewer
// pairs), right after one another; the first question is the one kv_asks = 1 asks, and every
// answer is the value the list gives its key.
TEST(Mixture, KeyValueListsMayBeAskedSeveralDistinctKeys) {
  kvb::MixtureWeights one, three;
  one.kv_ask_by_key = three.kv_ask_by_key = true;
  three.kv_asks = 3;
  size_t asked = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const kvb::MixDocument a = kvb::make_mix_document(2047, seed, one, {kvb::MixTask::kKv}, 0.5);
    const kvb::MixDocument b = kvb::make_mix_document(2047, seed, three, {kvb::MixTask::kKv}, 0.5);
    ASSERT_EQ(a.questions.size(), 1u);
    ASSERT_GE(b.questions.size(), 2u) << "lists have 3-8 pairs: at least 2 distinct keys";
    ASSERT_LE(b.questions.size(), 3u);
    asked += b.questions.size();
    EXPECT_EQ(b.questions[0].question, a.questions[0].question) << "seed " << seed;
    EXPECT_EQ(b.questions[0].answer, a.questions[0].answer);
    ASSERT_EQ(b.answers.size(), b.questions.size());
    std::set<std::string> keys;
    for (size_t i = 0; i < b.questions.size(); ++i) {
      const std::string& q = b.questions[i].question;
      const std::string key = q.substr(q.size() - 7, 6), value = b.questions[i].answer.substr(1, 6);
      keys.insert(key);
      EXPECT_LT(b.text.find(key + ": " + value), static_cast<size_t>(b.body_bytes)) << key;
      const kvb::AnswerSpan& sp = b.answers[i];
      EXPECT_EQ(b.text.substr(static_cast<size_t>(sp.begin), static_cast<size_t>(sp.end - sp.begin)),
                b.questions[i].answer);
      EXPECT_EQ(b.text.substr(static_cast<size_t>(sp.begin) - q.size(), q.size()), q);
    }
    EXPECT_EQ(keys.size(), b.questions.size()) << "distinct keys";
    EXPECT_EQ(static_cast<int64_t>(b.text.size()), 2047);
  }
  EXPECT_GT(asked, 80u) << "most lists have 3 or more pairs";
}

TEST(Train, APhaseMayAskKeyValueQuestionsByKeyAndKeepTheOtherWeights) {
  const json j = json::parse(R"({"name":"x","model":{"hidden_size":64,"intermediate_size":64,
      "n_layers":1,"n_heads":4},"mixture":{"kv":3,"copy":2},
      "phases":[{"steps":1,"seq_len":64,"batch":1},
                {"steps":1,"seq_len":64,"batch":1,"mixture":{"kv":5,"kv_question":"key"}},
                {"steps":1,"seq_len":64,"batch":1,"mixture":{"kv_question":"phrase"}}]})");
  const kvb::TrainConfig c = kvb::parse_train_config(j, "train.json");
  ASSERT_EQ(c.phases.size(), 3u);
  EXPECT_FALSE(c.mixture.kv_ask_by_key);
  EXPECT_FALSE(c.phases[0].mixture.kv_ask_by_key);
  EXPECT_TRUE(c.phases[1].mixture.kv_ask_by_key);
  EXPECT_EQ(c.phases[1].mixture.kv, 5);
  EXPECT_EQ(c.phases[1].mixture.copy, 2);  // not named by the phase: the global weight
  EXPECT_FALSE(c.phases[2].mixture.kv_ask_by_key);
  EXPECT_EQ(c.phases[2].mixture.kv, 3);
}

TEST(Train, ForwardPassEqualsTheInferenceForwardPass) {
  kvb::TrainConfig c = kvb::parse_train_config(
      json::parse(R"({"name":"t","model":{"hidden_size":64,"intermediate_size":96,"n_layers":2,
        "n_heads":4,"n_kv_heads":2,"head_dim":16},"phases":[{"steps":1,"seq_len":64,"batch":1}]})"),
      "inline");
  c10::InferenceMode guard;
  kvb::Model m = kvb::Model::random(c.model, 5);
  torch::Tensor ids = torch::randint(0, 258, {2, 64}, torch::kLong);
  torch::Tensor train = kvb::train_forward(c.model, m.weights(), ids);
  for (int64_t b = 0; b < 2; ++b) {
    auto st = kvb::make_method("full")->make_state(m.shape());
    kvb::ForwardOptions fo;
    fo.all_logits = true;
    torch::Tensor inf = m.forward(ids.narrow(0, b, 1), torch::arange(64), *st, fo);
    EXPECT_LT((inf[0] - train[b]).abs().max().item<double>(), 1e-5);
  }
}

// Row blocks (each scored against the keys up to its last row) are the same attention as one
// [T, T] block, forward and backward, with and without streaming windows; a block size that
// does not divide T leaves a short last block.
TEST(Train, RowBlockedAttentionEqualsOneBlockWithItsGradients) {
  kvb::TrainConfig c = kvb::parse_train_config(
      json::parse(R"({"name":"t","model":{"hidden_size":64,"intermediate_size":96,"n_layers":2,
        "n_heads":4,"n_kv_heads":2,"head_dim":16},"phases":[{"steps":1,"seq_len":64,"batch":1}]})"),
      "inline");
  kvb::Model m = kvb::Model::random(c.model, 11);
  const kvb::ModelWeights& w = m.weights();
  torch::manual_seed(3);
  const torch::Tensor ids = torch::randint(0, 258, {2, 70}, torch::kLong);
  const torch::Tensor targets = torch::randint(0, 258, {2, 70}, torch::kLong);
  for (const torch::Tensor& windows : {torch::Tensor(), torch::tensor({int64_t{9}, int64_t{0}})}) {
    auto run = [&](int64_t rb) {
      torch::Tensor wq = w.layers[0].wq.detach().clone().requires_grad_(true);
      kvb::ModelWeights v = w;
      v.layers[0].wq = wq;
      torch::Tensor logits = kvb::train_forward(c.model, v, ids, windows, rb);
      (-logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1))).mean().backward();
      return std::pair{logits.detach(), wq.grad()};
    };
    const auto [one, g_one] = run(70);
    for (int64_t rb : {16, 32, 69}) {
      const auto [blocked, g] = run(rb);
      EXPECT_LT((blocked - one).abs().max().item<double>(), 1e-5) << "row block " << rb;
      EXPECT_LT((g - g_one).abs().max().item<double>(), 1e-6 + 1e-4 * g_one.abs().max().item<double>())
          << "row block " << rb;
    }
    EXPECT_GT(g_one.abs().max().item<double>(), 0.0) << "the gradient reaches wq";
  }
  const kvb::TrainConfig rc = kvb::parse_train_config(
      json::parse(R"({"name":"t","model":{"hidden_size":64,"intermediate_size":96,"n_layers":2,
        "n_heads":4,"n_kv_heads":2,"head_dim":16},"phases":[{"steps":1,"seq_len":64,"batch":1},
        {"steps":1,"seq_len":128,"batch":1,"row_block":32}]})"),
      "inline");
  EXPECT_EQ(rc.phases[0].row_block, 0) << "one block unless the phase names one";
  EXPECT_EQ(rc.phases[1].row_block, 32);
}

// A row trained with a StreamingLLM window sees what streaming(sink=4,window=W) leaves a query
// that is decoded one token at a time.
TEST(Train, WindowedRowsAttendAsAStreamingCacheDoes) {
  kvb::TrainConfig c = kvb::parse_train_config(
      json::parse(R"({"name":"t","model":{"hidden_size":64,"intermediate_size":96,"n_layers":2,
        "n_heads":4,"n_kv_heads":2,"head_dim":16},"phases":[{"steps":1,"seq_len":64,"batch":1,
        "window_rows":0.5}]})"),
      "inline");
  EXPECT_EQ(c.phases[0].window_rows, 0.5);
  c10::InferenceMode guard;
  kvb::Model m = kvb::Model::random(c.model, 5);
  torch::Tensor ids = torch::randint(0, 258, {2, 48}, torch::kLong);
  const torch::Tensor windows = torch::tensor({int64_t{12}, int64_t{0}});
  torch::Tensor train = kvb::train_forward(c.model, m.weights(), ids, windows);
  torch::Tensor full = kvb::train_forward(c.model, m.weights(), ids);
  EXPECT_LT((train[1] - full[1]).abs().max().item<double>(), 1e-6) << "window 0 is full attention";
  EXPECT_GT((train[0] - full[0]).abs().max().item<double>(), 1e-3) << "the window changes row 0";
  auto st = kvb::make_method("streaming(sink=4,window=12)")->make_state(m.shape());
  for (int64_t t = 0; t < 48; ++t) {
    torch::Tensor inf = m.forward(ids.narrow(0, 0, 1).narrow(1, t, 1), torch::arange(t, t + 1), *st);
    EXPECT_LT((inf.reshape({-1}) - train[0][t]).abs().max().item<double>(), 1e-5) << "position " << t;
  }
}

TEST(Train, ByteTokenizerJsonIsTheByteTokenizer) {
  TempDir tmp;
  kvb::write_file(tmp.path("tokenizer.json"), kvb::byte_tokenizer_json());
  auto hf = kvb::load_tokenizer(tmp.path("tokenizer.json"));
  auto bytes = kvb::make_byte_tokenizer();
  for (const std::string s : {"", "The pass key is 12345.", "caf\xc3\xa9 \xe2\x82\xac\n\tx", "  two  spaces"}) {
    EXPECT_EQ(hf->encode(s, true), bytes->encode(s, true)) << s;
    EXPECT_EQ(hf->encode(s, false), bytes->encode(s, false)) << s;
    EXPECT_EQ(hf->decode(hf->encode(s, true), true), s);
  }
  EXPECT_EQ(hf->vocab_size(), 258);
  EXPECT_EQ(hf->bos_id(), std::optional<int32_t>(256));
}

TEST(Train, ReadmeKeepsTheRecipeHistoryOfTheOldOne) {
  EXPECT_EQ(kvb::readme_keeping_history("# m\n\ncurve\n", ""), "# m\n\ncurve\n");
  EXPECT_EQ(kvb::readme_keeping_history("# m\n\ncurve\n", "# m\n\nold\n"), "# m\n\ncurve\n");
  EXPECT_EQ(kvb::readme_keeping_history("# m\n\ncurve\n",
                                        "# m\n\nold\n\n## Recipe history\n\nv1, v2.\n"),
            "# m\n\ncurve\n\n## Recipe history\n\nv1, v2.\n");
  // Only a heading at the start of a line counts.
  EXPECT_EQ(kvb::readme_keeping_history("# m\n", "see ## Recipe history\n"), "# m\n");
}

// A config small enough for a unit test: 200 steps in well under a minute on 2 threads.
TEST(Train, TinyConfigReproducesItsCommittedLossCurveBitwise) {
  TempDir tmp;
  const std::string cfg = source("tests/data/train_tiny/train.json");
  // A README from an earlier run: its curve is replaced, its recipe history kept.
  fs::create_directories(tmp.path("m"));
  kvb::write_file(tmp.path("m/README.md"),
                  "# train-tiny\n\nold curve\n\n## Recipe history\n\nv1 tried first.\n");
  auto r = run_kvbench("train --config " + q(cfg) + " --out " + q(tmp.path("m")) + " --no-eval --threads 2");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string readme = kvb::read_file(tmp.path("m/README.md"));
  EXPECT_EQ(readme.find("old curve"), std::string::npos) << readme;
  EXPECT_NE(readme.find("## Loss curve"), std::string::npos) << readme;
  EXPECT_EQ(readme.substr(readme.find("## Recipe history")),
            "## Recipe history\n\nv1 tried first.\n");
  // The CLI runs the first phase in a child process and the second in a fresh one, resumed from
  // the phase-boundary checkpoint; the curve must not notice.
  EXPECT_NE(r.out.find("stopped at step 150 of 200"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("resuming train-tiny at step 150"), std::string::npos) << r.out;
  const auto committed = losses(source("tests/data/train_tiny/loss.jsonl"));
  ASSERT_EQ(committed.size(), 200u);
  EXPECT_EQ(losses(tmp.path("m/loss.jsonl")), committed);
  EXPECT_TRUE(fs::exists(tmp.path("m/model.safetensors")));
  EXPECT_FALSE(fs::exists(tmp.path("m/checkpoint"))) << "the checkpoint is removed once complete";
}

TEST(Train, ResumingFromACheckpointEqualsAnUninterruptedRun) {
  TempDir tmp;
  const std::string cfg = source("tests/data/train_tiny/train.json");
  ASSERT_EQ(run_kvbench("train --config " + q(cfg) + " --out " + q(tmp.path("a")) + " --no-eval").code, 0);
  // Stop at step 70 (checkpoints every 50: the resume repeats steps 50..69 from the checkpoint).
  auto r = run_kvbench("train --config " + q(cfg) + " --out " + q(tmp.path("b")) + " --no-eval --max-steps 70");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(losses(tmp.path("b/loss.jsonl")).size(), 70u);
  EXPECT_FALSE(fs::exists(tmp.path("b/model.safetensors")));
  r = run_kvbench("train --config " + q(cfg) + " --out " + q(tmp.path("b")) + " --no-eval");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("resuming"), std::string::npos) << r.out;
  EXPECT_EQ(losses(tmp.path("b/loss.jsonl")), losses(tmp.path("a/loss.jsonl")));
  EXPECT_EQ(slurp(tmp.path("b/model.safetensors")), slurp(tmp.path("a/model.safetensors")));
  // Stopped in the second phase (at 170): the resume starts there, with no pass through phase 1.
  ASSERT_EQ(run_kvbench("train --config " + q(cfg) + " --out " + q(tmp.path("c")) +
                        " --no-eval --max-steps 170").code, 0);
  r = run_kvbench("train --config " + q(cfg) + " --out " + q(tmp.path("c")) + " --no-eval");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("resuming train-tiny at step 170\n", 0), 0u) << r.out;
  EXPECT_EQ(r.out.find("stopped"), std::string::npos) << r.out;
  EXPECT_EQ(losses(tmp.path("c/loss.jsonl")), losses(tmp.path("a/loss.jsonl")));
}

// Trains tmp/train.json, the tiny config extended by 20 steps, checks that its first 200 losses
// are the committed curve's bitwise and returns the learning rates of the 20 added steps.
std::vector<double> extended_tiny_lrs(TempDir& tmp) {
  auto r = run_kvbench("train --config " + q(tmp.path("train.json")) + " --out " + q(tmp.path("m")) +
                       " --no-eval --threads 2");
  EXPECT_EQ(r.code, 0) << r.err;
  const auto all = losses(tmp.path("m/loss.jsonl"));
  EXPECT_EQ(all.size(), 220u);
  if (all.size() != 220u) return {};
  EXPECT_EQ(std::vector<std::string>(all.begin(), all.begin() + 200),
            losses(source("tests/data/train_tiny/loss.jsonl")));
  std::vector<double> lrs;
  std::ifstream in(tmp.path("m/loss.jsonl"));
  int64_t n = 0;
  for (std::string line; std::getline(in, line); ++n)
    if (n >= 200) lrs.push_back(json::parse(line).at("lr").get<double>());
  return lrs;
}

// A recipe extended by later phases, with decay_steps holding the schedule of the original:
// the original's steps are reproduced bitwise, the added ones train at min_lr on their own
// mixture (the phase names only the weights it changes).
TEST(Train, ExtendedRecipeWithDecayStepsRepeatsTheOriginalBitwise) {
  TempDir tmp;
  json cfg = kvb::read_json_file(source("tests/data/train_tiny/train.json"));
  cfg["optimizer"]["decay_steps"] = 200;
  cfg["phases"].push_back({{"steps", 20}, {"seq_len", 96}, {"batch", 4}, {"mixture", {{"kv", 10}}}});
  kvb::write_file(tmp.path("train.json"), cfg.dump());
  const kvb::TrainConfig c = kvb::load_train_config(tmp.path("train.json"));
  ASSERT_EQ(c.phases.size(), 3u);
  EXPECT_EQ(c.phases[0].mixture.kv, c.mixture.kv);
  EXPECT_EQ(c.phases[2].mixture.kv, 10);
  EXPECT_EQ(c.phases[2].mixture.copy, c.mixture.copy);
  EXPECT_EQ(c.phases[2].mixture.max_tasks, c.mixture.max_tasks);
  for (double lr : extended_tiny_lrs(tmp)) EXPECT_EQ(lr, 3e-4);
}

// A cooldown over the last steps (optimizer.cooldown_steps) of a recipe extended by a phase: the
// original's steps stay bitwise, the added ones decay linearly from min_lr (where decay_steps
// holds the schedule) towards 0, (N - k) / N of it at the k-th of N.
TEST(Train, CooldownDecaysTheLastStepsLinearlyAndKeepsTheEarlierOnesBitwise) {
  TempDir tmp;
  json cfg = kvb::read_json_file(source("tests/data/train_tiny/train.json"));
  cfg["optimizer"]["decay_steps"] = 200;
  cfg["optimizer"]["cooldown_steps"] = 20;
  cfg["phases"].push_back({{"steps", 20}, {"seq_len", 96}, {"batch", 4}});
  kvb::write_file(tmp.path("train.json"), cfg.dump());
  EXPECT_EQ(kvb::load_train_config(tmp.path("train.json")).cooldown_steps, 20);
  const std::vector<double> lrs = extended_tiny_lrs(tmp);
  for (size_t k = 0; k < lrs.size(); ++k)
    EXPECT_DOUBLE_EQ(lrs[k], 3e-4 * static_cast<double>(20 - k) / 20.0) << "added step " << k;
}

// The committed reference model's curve starts where retraining from its train.json starts.
TEST(Train, ReferenceModelFirstStepsReproduceBitwise) {
  const std::string dir = source("models/kvb-ref-s");
  if (!fs::exists(fs::path(dir) / "loss.jsonl")) GTEST_SKIP() << dir << "/loss.jsonl not committed";
  TempDir tmp;
  auto r = run_kvbench("train --config " + q(dir + "/train.json") + " --out " + q(tmp.path("m")) +
                       " --max-steps 4");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(losses(tmp.path("m/loss.jsonl")), losses(dir + "/loss.jsonl", 4));
}

TEST(Train, BadConfigsGetOneLineAndExitTwo) {
  TempDir tmp;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{", "train.json"},
      {R"({"name":"x","phases":[{"steps":1,"seq_len":64,"batch":1}]})", "model: missing"},
      {R"({"name":"x","model":{"hidden_size":48,"intermediate_size":64,"n_layers":1,"n_heads":3,
          "n_kv_heads":2},"phases":[{"steps":1,"seq_len":64,"batch":1}]})",
       "multiple of n_kv_heads"},
      {R"({"name":"x","model":{"hidden_size":64,"intermediate_size":64,"n_layers":1,"n_heads":4},
          "phases":[]})",
       "phases: expected a non-empty array"},
      {R"({"name":"x","model":{"hidden_size":64,"intermediate_size":64,"n_layers":1,"n_heads":4},
          "phases":[{"steps":1,"seq_len":64,"batch":1}],"optimiser":{}})",
       "unknown field \"optimiser\""},
      {R"({"name":"x","model":{"hidden_size":"big","intermediate_size":64,"n_layers":1,"n_heads":4},
          "phases":[{"steps":1,"seq_len":64,"batch":1}]})",
       "model.hidden_size: expected an integer in [1, 8192], got a string \"big\""},
      {R"({"name":"x","model":{"hidden_size":64,"intermediate_size":64,"n_layers":1,"n_heads":4},
          "phases":[{"steps":1,"seq_len":64,"batch":1,"mixture":{"kv":-1}}]})",
       "phases[0].mixture.kv: expected a number in [0, 1e+06], got an integer -1"},
      {R"({"name":"x","model":{"hidden_size":64,"intermediate_size":64,"n_layers":1,"n_heads":4},
          "phases":[{"steps":1,"seq_len":64,"batch":1,"mixture":{"keyvalue":1}}]})",
       "phases[0].mixture: unknown field \"keyvalue\""},
      {R"({"name":"x","model":{"hidden_size":64,"intermediate_size":64,"n_layers":1,"n_heads":4},
          "mixture":{"kv_question":"value"},"phases":[{"steps":1,"seq_len":64,"batch":1}]})",
       "mixture.kv_question: expected one of phrase, key, got a string \"value\""},
      {R"({"name":"x","model":{"hidden_size":64,"intermediate_size":64,"n_layers":1,"n_heads":4},
          "optimizer":{"warmup":10,"decay_steps":10},"phases":[{"steps":1,"seq_len":64,"batch":1}]})",
       "optimizer.decay_steps: must be 0"},
      {R"({"name":"x","model":{"hidden_size":64,"intermediate_size":64,"n_layers":1,"n_heads":4},
          "phases":[{"steps":1,"seq_len":64,"batch":1,"window_rows":1.5}]})",
       "phases[0].window_rows: expected a number in [0, 1], got a number 1.5"},
      {R"({"name":"x","model":{"hidden_size":64,"intermediate_size":64,"n_layers":1,"n_heads":4},
          "phases":[{"steps":1,"seq_len":64,"batch":1,"row_block":-1}]})",
       "phases[0].row_block: expected an integer in [0, 65536], got an integer -1"},
      {R"({"name":"x","model":{"hidden_size":64,"intermediate_size":64,"n_layers":1,"n_heads":4},
          "optimizer":{"warmup":1,"cooldown_steps":5},"phases":[{"steps":4,"seq_len":64,"batch":1}]})",
       "optimizer.cooldown_steps: must leave the warm-up before it"},
  };
  for (const auto& [text, want] : cases) {
    kvb::write_file(tmp.path("train.json"), text);
    auto r = run_kvbench("train --config " + q(tmp.path("train.json")) + " --out " + q(tmp.path("o")));
    EXPECT_EQ(r.code, 2) << text;
    EXPECT_EQ(kvb::test::count_lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find("train.json"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(want), std::string::npos) << r.err;
  }
  // A checkpoint from another config is refused, and left alone.
  const std::string cfg = source("tests/data/train_tiny/train.json");
  ASSERT_EQ(run_kvbench("train --config " + q(cfg) + " --out " + q(tmp.path("c")) + " --max-steps 50").code, 0);
  const std::string before = slurp(tmp.path("c/checkpoint/state.json"));
  json other = kvb::read_json_file(cfg);
  other["seed"] = 99;
  kvb::write_file(tmp.path("other.json"), other.dump());
  auto r = run_kvbench("train --config " + q(tmp.path("other.json")) + " --out " + q(tmp.path("c")));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("different train.json"), std::string::npos) << r.err;
  EXPECT_EQ(slurp(tmp.path("c/checkpoint/state.json")), before);
}

}  // namespace
