// Bad suite configs, datasets, method specs, train.json and Google Benchmark JSON through the real
// binary: exit 2, exactly one line on stderr naming the file (or spec) and the problem, control
// characters escaped, long values cut, and nothing written: a refused `run` or `import-bench`
// leaves its database as it was (or absent), a refused `train` makes no output directory.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/check.h"
#include "common/json_io.h"
#include "common/json_reader.h"
#include "suites/json_schema.h"
#include "tests/suite_test_util.h"
#include "tests/test_util.h"

namespace kvb {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::q;

// The marker a JSON text's value is replaced at: the mutant is written as raw text, so it can be
// what no JSON library writes (1e999, a duplicate key, 10^5 nested brackets).
constexpr const char* kMark = "\"@@MUTANT@@\"";

std::string deep(int levels) { return std::string(levels, '[') + std::string(levels, ']'); }

std::optional<std::string> file_bytes(const std::string& path) {
  if (!fs::exists(path)) return std::nullopt;
  return test::slurp(path);
}

// Exit 2, one line, "kvbench: error: " + something naming `who` and `problem`; no internal error.
void expect_refused(const test::CmdResult& r, const std::string& who, const std::string& problem) {
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_EQ(r.err.rfind("kvbench: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(who), std::string::npos) << "'" << who << "' not in: " << r.err;
  EXPECT_NE(r.err.find(problem), std::string::npos) << "'" << problem << "' not in: " << r.err;
  EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
  EXPECT_LE(r.err.size(), 1100u) << r.err;
}

// Suite configs and their datasets, through `kvbench run --suite F --db D`: each refusal comes
// before a model is loaded, and the database is left as it was.
class InputSuiteConfig : public ::testing::Test {
 protected:
  void SetUp() override {
    test::make_tiny_model_dir(dir_.path("m"));
    write_file(
        dir_.path("sc.jsonl"),
        R"({"id": "a", "context": "k1: v1", "multi_turns": [{"input": "k1?", "answer": "v1"}]})"
        "\n");
    base_ = {
        {"name", "t"},
        {"seed", 1},
        {"models", {dir_.path("m")}},
        {"methods", {"full"}},
        {"datasets",
         {{"prose", {{"type", "prose"}, {"words", 300}}},
          {"sc",
           {{"type", "scbench_jsonl"}, {"path", dir_.path("sc.jsonl")}, {"metric", "substring"}}}}},
        {"runs",
         {{{"suite", "perplexity"}, {"datasets", {"prose"}}, {"params", {{"ctx", 32}}}},
          {{"suite", "scbench"}, {"datasets", {"sc"}}}}}};
  }
  std::string cfg() const { return dir_.path("suite.json"); }
  std::string db() const { return dir_.path("r.db"); }

  // `kvbench run` on the config text; checks the database did not change (or appear).
  test::CmdResult run_text(const std::string& text) {
    write_file(cfg(), text);
    const auto before = file_bytes(db());
    auto r = test::run_kvbench("run --progress lines --suite " + q(cfg()) + " --db " + q(db()));
    EXPECT_EQ(file_bytes(db()), before) << "a refused run changed the database";
    return r;
  }
  // The base config with `edit` applied, and the value at kMark (if the edit put one) replaced
  // by `raw`.
  test::CmdResult run_edit(const std::function<void(json&)>& edit, const std::string& raw = "") {
    json j = base_;
    edit(j);
    std::string text = j.dump();
    if (const size_t at = text.find(kMark); at != std::string::npos)
      text.replace(at, std::string(kMark).size(), raw);
    return run_text(text);
  }
  test::TempDir dir_;
  json base_;
};

TEST_F(InputSuiteConfig, DeepNestingIsRefusedWithoutRecursing) {
  expect_refused(run_edit([](json& j) { j["description"] = "@@MUTANT@@"; }, deep(100000)), cfg(),
                 "nesting deeper than 64");
  expect_refused(
      run_edit([](json& j) { j["runs"][0]["params"]["ctx"] = "@@MUTANT@@"; }, deep(100000)), cfg(),
      "nesting deeper than 64");
}

TEST_F(InputSuiteConfig, NumbersBeyondADoubleAndOutOfRangeIntegers) {
  expect_refused(run_edit([](json& j) { j["seed"] = "@@MUTANT@@"; }, "1e999"), cfg(),
                 "number overflow parsing '1e999'");
  expect_refused(run_edit([](json& j) { j["runs"][0]["params"]["ctx"] = "@@MUTANT@@"; },
                          "99999999999999999999"),
                 cfg() + ": $.runs[0].params.ctx: must be <= 1048576", "got");
  expect_refused(run_edit([](json& j) { j["seed"] = "@@MUTANT@@"; }, "9223372036854775808"),
                 cfg() + ": $.seed", "expected an integer in [0, 9223372036854775807]");
}

TEST_F(InputSuiteConfig, WrongTypesNameFilePathExpectedAndGot) {
  expect_refused(run_edit([](json& j) { j["threads"] = "many"; }), cfg() + ": $.threads",
                 "expected an integer, got a string");
  expect_refused(run_edit([](json& j) {
                   j["runs"][1]["params"] = {{"max_new_tokens", true}};
                 }),
                 cfg() + ": $.runs[1].params.max_new_tokens", "expected an integer, got a boolean");
  expect_refused(run_edit([](json& j) { j["datasets"]["prose"]["words"] = 1.5; }),
                 cfg() + ": $.datasets.prose.words", "expected an integer, got a number");
}

TEST_F(InputSuiteConfig, DuplicateKeysAreRefused) {
  std::string text = base_.dump();
  text.replace(text.find("\"seed\":1"), 8, "\"seed\":1,\"seed\":2");
  expect_refused(run_text(text), cfg(), "duplicate key \"seed\"");
  text = base_.dump();
  text.replace(text.find("\"words\":300"), 11, "\"words\":300,\"words\":2000000000");
  expect_refused(run_text(text), cfg() + ": datasets.prose: duplicate key \"words\"", "words");
}

// `words: 2e9` would generate gigabytes of prose: refused by its documented maximum in
// milliseconds, before any allocation; so are the other sizes.
TEST_F(InputSuiteConfig, HugeSizesAreRefusedBeforeAnyAllocation) {
  const auto t0 = std::chrono::steady_clock::now();
  expect_refused(run_edit([](json& j) { j["datasets"]["prose"]["words"] = "@@MUTANT@@"; }, "2e9"),
                 cfg() + ": $.datasets.prose.words", "must be <= 16777216");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 20.0);
  expect_refused(run_edit([](json& j) { j["threads"] = 5000; }), cfg() + ": $.threads",
                 "must be <= 256");
  expect_refused(
      run_edit([](json& j) {
        j["datasets"]["mix"] = {{"type", "mixture"}, {"samples", 4096}, {"bytes", 16777216}};
      }),
      cfg() + ": $.datasets.mix", "samples x bytes");
  expect_refused(run_edit([](json& j) {
                   j["datasets"]["vt"] = {{"type", "scbench_vt"}, {"chains", 4096}, {"hops", 256}};
                 }),
                 cfg() + ": $.datasets.vt", "chains x (hops + 1)");
  expect_refused(
      run_edit([](json& j) {
        j["datasets"]["kv"] = {{"type", "scbench_kv"}, {"samples", 4096}, {"pairs", 1048576}};
      }),
      cfg() + ": $.datasets.kv", "samples x pairs");
  expect_refused(run_edit([](json& j) {
                   j["runs"][0] = {{"suite", "niah"},
                                   {"datasets", {"prose"}},
                                   {"params",
                                    {{"context_lengths", {1048576, 1048575}},
                                     {"depths", {{"n", 1024}}},
                                     {"allow_extrapolation", true}}}};
                 }),
                 cfg() + ": $.runs[0].params", "the grid");
}

TEST_F(InputSuiteConfig, LongValuesAreCutAndControlCharactersEscaped) {
  const std::string long_name(500, 'z');  // within the schema's 1000, beyond 200
  auto r = run_edit([&](json& j) { j["runs"][0]["datasets"] = {long_name}; });
  expect_refused(r, cfg() + ": $.runs[0].datasets[0]", "unknown dataset \"zzz");
  EXPECT_EQ(r.err.find(std::string(201, 'z')), std::string::npos) << "cut at 200";
  r = run_edit([](json& j) { j["methods"] = {"kivi(bi\nts=2)"}; });
  expect_refused(r, cfg() + ": $.methods[0]: spec 'kivi(bi\\nts=2)'", "bad parameter name");
  r = run_edit([&](json& j) { j["methods"] = {"kivi(bits=" + std::string(3000, '9') + ")"}; });
  expect_refused(r, cfg() + ": $.methods[0]", "expected at most 1024 characters");
}

// Each line of an SCBench JSONL file goes through the JSON layer as "<file>:<line>".
TEST_F(InputSuiteConfig, ScbenchJsonlLinesGoThroughTheJsonLayer) {
  const std::string good =
      R"({"id": "a", "context": "k1: v1", "multi_turns": [{"input": "k1?", "answer": "v1"}]})";
  const std::string data = dir_.path("sc.jsonl"), at2 = data + ":2: ";
  auto with_line2 = [&](const std::string& line) {
    write_file(data, good + "\n" + line + "\n");
    return run_text(base_.dump());
  };
  expect_refused(with_line2(R"({"context": "c", "multi_turns": )" + deep(100000) + "}"), at2,
                 "nesting deeper than 64");
  expect_refused(with_line2(R"({"id": 1e999, "context": "c", "multi_turns": []})"), at2,
                 "number overflow parsing '1e999'");
  expect_refused(with_line2(R"({"context": "c", "context": "d", "multi_turns": []})"), at2,
                 "duplicate key \"context\"");
  expect_refused(with_line2(R"({"context": 5, "multi_turns": [{"input": "i", "answer": "a"}]})"),
                 at2 + "$.context", "expected a string, got an integer 5");
  expect_refused(with_line2(R"({"id": 99999999999999999999, "context": "c",)"
                            R"( "multi_turns": [{"input": "i", "answer": "a"}]})"),
                 at2 + "$.id", "expected an integer");
  expect_refused(
      with_line2("{\"context\": \"c\", \"multi_turns\": [{\"input\": \"i\", \"answer\": {}}], "
                 "\"x\": \"a\\u0001b\"}"),
      at2 + "$.multi_turns[0].answer", "expected a string, a number or a list of them");
}

// The validator keeps itself safe whatever value it is handed (built in memory, not parsed).
TEST(InputSchemaValidator, DeepValuesAndLongStringsDoNotReachRecursion) {
  const json schema = {{"$ref", "#/$defs/n"},
                       {"$defs", {{"n", {{"type", "array"}, {"items", {{"$ref", "#/$defs/n"}}}}}}}};
  json v = json::array();
  for (int i = 0; i < 100000; ++i) {
    json w = json::array();
    w.push_back(std::move(v));
    v = std::move(w);
  }
  const auto err = validate_json_schema(schema, v);
  ASSERT_TRUE(err.has_value());
  EXPECT_NE(err->find("nested too deeply"), std::string::npos) << err->substr(0, 300);
  const json pattern = {{"type", "string"}, {"pattern", "^[a-z]+$"}};
  const auto long_err = validate_json_schema(pattern, json(std::string(1000000, 'a')));
  ASSERT_TRUE(long_err.has_value());
  EXPECT_NE(long_err->find("expected at most 1000 characters"), std::string::npos) << *long_err;
}

// Method specs through `kvbench methods --describe`.
test::CmdResult describe(const std::string& spec) {
  return test::run_kvbench("methods --describe " + q(spec));
}

TEST(InputSpec, IntegersAreRangeCheckedBeforeArithmetic) {
  expect_refused(describe("streaming(window=9223372036854775807)"),
                 "spec 'streaming(window=9223372036854775807)'",
                 "window=9223372036854775807): must be at least 1 and at most 16777216");
  expect_refused(describe("streaming(window=99999999999999999999)"),
                 "spec 'streaming(window=99999999999999999999)'", "out of range");
  expect_refused(describe("kivi(residual=16777344)"), "spec 'kivi(residual=16777344)'",
                 "at most 16777216");
  expect_refused(describe("random(budget=8,seed=4294967296)"), "seed=4294967296",
                 "at most 4294967295");
  expect_refused(describe("kivi(bits=3)"), "spec 'kivi(bits=3)'", "expected one of 2, 4");
  // The edges of the ranges are accepted, and a value is canonical whatever its spelling.
  auto r = test::run_kvbench(
      "methods --json --describe 'streaming(sink=0,window=16777216)' --tokens 64");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["spec"], "streaming(sink=0,window=16777216)");
  r = test::run_kvbench("methods --json --describe 'random(budget=0008,seed=4294967295)'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["spec"], "random(budget=8,seed=4294967295)");
}

TEST(InputSpec, DescribeShapeFlagsAreBounded) {
  // The shape `methods --describe` computes a promise for has the limits a config.json has.
  for (const char* flag : {"--layers 1025", "--heads 0", "--kv-heads 2000", "--head-dim 4096",
                           "--tokens 16777217", "--tokens 99999999999999999999"}) {
    const auto r = test::run_kvbench(std::string("methods --describe kivi ") + flag);
    EXPECT_EQ(r.code, 2) << flag << ": " << r.err;
    EXPECT_EQ(test::count_lines(r.err), 1) << flag << ": " << r.err;
    EXPECT_NE(r.err.find(std::string(flag).substr(0, std::string(flag).find(' '))),
              std::string::npos) << r.err;
  }
}

TEST(InputSpec, NonFiniteDuplicateAndMalformedParams) {
  for (const char* v : {"inf", "nan", "1e999", "-", "0x10", "1.5"})
    expect_refused(describe(std::string("streaming(window=") + v + ")"),
                   std::string("spec 'streaming(window=") + v + ")'", "not an integer");
  expect_refused(describe("kivi(bits=2,bits=4)"), "spec 'kivi(bits=2,bits=4)'",
                 "parameter 'bits' given twice");
  expect_refused(describe("kivi(bits=2, bits =4)"), "spec 'kivi(bits=2, bits =4)'", "given twice");
}

TEST(InputSpec, ControlCharactersAreEscapedAndLongSpecsCut) {
  auto r = describe("kivi(bi\nts=2)");
  expect_refused(r, "spec 'kivi(bi\\nts=2)'", "bad parameter name 'bi\\nts'");
  r = describe(std::string("streaming(window=1\x01") + ")");
  expect_refused(r, "spec 'streaming(window=1\\x01)'", "not an integer");
  const std::string long_spec = "kivi(bits=2)" + std::string(5000, '(');
  r = describe(long_spec);
  expect_refused(r, "spec 'kivi(bits=2)((((", "more than the 1024 a spec may have");
  EXPECT_EQ(r.err.find(std::string(201, '(')), std::string::npos) << "cut at 200";
  std::string chain = "full";
  for (int i = 0; i < 16; ++i) chain = "streaming(window=8)+" + chain;
  expect_refused(describe(chain), "spec 'streaming(window=8)+", "more than 16 stages");
  r = describe("kivi(" + std::string(900, 'k') + "=2)");
  expect_refused(r, "spec 'kivi(kkk", "has no parameter");
}

// train.json through `kvbench train --config F --out O`: refused before O is made.
class InputTrainJson : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = json::parse(R"({"name": "x", "threads": 1,
        "model": {"hidden_size": 32, "intermediate_size": 64, "n_layers": 1, "n_heads": 4},
        "phases": [{"steps": 1, "seq_len": 64, "batch": 1}]})");
  }
  std::string cfg() const { return dir_.path("train.json"); }
  test::CmdResult train_text(const std::string& text, const std::string& extra = "") {
    write_file(cfg(), text);
    auto r = test::run_kvbench("train --config " + q(cfg()) + " --out " + q(dir_.path("o")) +
                               " --max-steps 0 --no-eval " + extra);
    EXPECT_FALSE(fs::exists(dir_.path("o"))) << "a refused train made its output directory";
    return r;
  }
  test::CmdResult train_edit(const std::function<void(json&)>& edit, const std::string& raw = "") {
    json j = base_;
    edit(j);
    std::string text = j.dump();
    if (const size_t at = text.find(kMark); at != std::string::npos)
      text.replace(at, std::string(kMark).size(), raw);
    return train_text(text);
  }
  test::TempDir dir_;
  json base_;
};

TEST_F(InputTrainJson, EachKindOfBadInputIsOneLine) {
  expect_refused(train_edit([](json& j) { j["$comment"] = "@@MUTANT@@"; }, deep(100000)), cfg(),
                 "nesting deeper than 64");
  expect_refused(train_edit(
                     [](json& j) {
                       j["optimizer"] = {{"lr", "@@MUTANT@@"}};
                     },
                     "1e999"),
                 cfg(), "number overflow parsing '1e999'");
  expect_refused(train_edit([](json& j) { j["model"]["n_layers"] = "three"; }),
                 cfg() + ": model.n_layers",
                 "expected an integer in [1, 64], got a string \"three\"");
  expect_refused(train_text(R"({"name": "x", "name": "y"})"), cfg(), "duplicate key \"name\"");
  expect_refused(
      train_edit([](json& j) { j["phases"][0]["steps"] = "@@MUTANT@@"; }, "99999999999999999999"),
      cfg() + ": phases[0].steps", "expected an integer in [1, 1073741824]");
  expect_refused(train_edit([](json& j) { j["name"] = std::string(300, 'n') + "\n"; }),
                 cfg() + ": name", "expected a name of 1 to 100 characters");
}

// threads: 5000 would hang training; sizes that would allocate gigabytes are refused up front.
TEST_F(InputTrainJson, ThreadsAndSizesHaveDocumentedMaxima) {
  expect_refused(train_edit([](json& j) { j["threads"] = 5000; }), cfg() + ": threads",
                 "expected an integer in [1, 256], got an integer 5000");
  expect_refused(train_text(base_.dump(), "--threads 5000"), "train --threads: 5000",
                 "more than the 256");
  expect_refused(
      train_edit([](json& j) {
        j["model"] = {
            {"hidden_size", 8192}, {"intermediate_size", 32768}, {"n_layers", 64}, {"n_heads", 64}};
      }),
      cfg() + ": model", "parameters, more than the 268435456");
  expect_refused(train_edit([](json& j) {
                   j["phases"][0]["batch"] = 4096;
                   j["phases"][0]["seq_len"] = 4096;
                 }),
                 cfg() + ": phases[0]", "batch x seq_len");
  expect_refused(train_edit([](json& j) { j["model"]["hidden_size"] = "@@MUTANT@@"; }, "2e9"),
                 cfg() + ": model.hidden_size", "expected an integer in [1, 8192]");
  expect_refused(train_edit([](json& j) {
                   j["eval"] = {{"per_decile", 0}};
                 }),
                 cfg() + ": eval.per_decile", "expected an integer in [1, 100000]");
}

// Google Benchmark JSON through `kvbench import-bench --db D --json F`.
class InputBenchJson : public ::testing::Test {
 protected:
  void SetUp() override {
    entry_ = {{"name", "BM_Quantize/4096"}, {"run_name", "BM_Quantize/4096"},
              {"run_type", "iteration"},    {"repetitions", 1},
              {"iterations", 100},          {"real_time", 12.5},
              {"time_unit", "us"},          {"bytes_per_second", 1.0e9}};
  }
  std::string bench() const { return dir_.path("b.json"); }
  std::string db() const { return dir_.path("b.db"); }
  test::CmdResult import_text(const std::string& text) {
    write_file(bench(), text);
    const auto before = file_bytes(db());
    auto r = test::run_kvbench("import-bench --db " + q(db()) + " --json " + q(bench()));
    EXPECT_EQ(file_bytes(db()), before) << "a refused import changed the database";
    return r;
  }
  test::CmdResult import_entry(const std::function<void(json&)>& edit,
                               const std::string& raw = "") {
    json e = entry_;
    edit(e);
    std::string text = json{{"context", {{"host_name", "h"}}}, {"benchmarks", {e}}}.dump();
    if (const size_t at = text.find(kMark); at != std::string::npos)
      text.replace(at, std::string(kMark).size(), raw);
    return import_text(text);
  }
  // The kinds of bad input that the parse layer refuses, then the typed reads (`all`: every
  // case; else one of each kind).
  void each_case(bool all) {
    expect_refused(import_text("{\"context\": {\"x\": " + deep(100000) + "}, \"benchmarks\": []}"),
                   bench(), "nesting deeper than 64");
    expect_refused(import_entry([](json& e) { e["real_time"] = "@@MUTANT@@"; }, "1e999"), bench(),
                   "number overflow parsing '1e999'");
    expect_refused(import_entry([](json& e) { e["real_time"] = "fast"; }),
                   bench() + ": benchmarks[0].real_time", "got a string \"fast\"");
    if (!all) return;
    expect_refused(import_entry([](json& e) { e["real_time"] = -1; }),
                   bench() + ": benchmarks[0].real_time", "expected a number in [0, 1e+15]");
    expect_refused(import_entry([](json& e) { e["error_occurred"] = "yes"; }),
                   bench() + ": benchmarks[0].error_occurred", "expected a boolean");
    expect_refused(import_entry([](json& e) { e["bytes_moved"] = 1e300; }),
                   bench() + ": benchmarks[0].bytes_moved", "expected a number in [0, 1e+18]");
    expect_refused(
        import_entry([](json& e) { e["repetitions"] = "@@MUTANT@@"; }, "9223372036854775807"),
        bench() + ": benchmarks[0].repetitions", "expected an integer in [0, 1000000000]");
    expect_refused(import_entry([](json& e) { e["time_unit"] = "fortnights"; }),
                   bench() + ": benchmarks[0].time_unit", "expected one of ns, us, ms, s");
    expect_refused(import_entry([](json& e) { e["iterations"] = -1; }),
                   bench() + ": benchmarks[0].iterations", "expected an integer in [0, ");
    expect_refused(
        import_text(json{{"context", {{"date", "tomorrow"}}}, {"benchmarks", {entry_}}}.dump()),
        bench() + ": context.date", "expected an ISO 8601 date");
    std::string dup = json{{"benchmarks", {entry_}}}.dump();
    dup.replace(dup.find("\"real_time\":12.5"), 16, "\"real_time\":12.5,\"real_time\":1");
    expect_refused(import_text(dup), bench(), "duplicate key \"real_time\"");
    auto r = import_entry([](json& e) { e["name"] = "BM_x\n" + std::string(5000, 'y'); });
    expect_refused(r, bench() + ": benchmarks[0].name", "without control characters");
    EXPECT_NE(r.err.find("BM_x\\n"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find(std::string(201, 'y')), std::string::npos) << "cut at 200";
  }
  test::TempDir dir_;
  json entry_;
};

TEST_F(InputBenchJson, RefusedWithNoDatabaseCreated) {
  each_case(true);
  EXPECT_FALSE(fs::exists(db()));
}

TEST_F(InputBenchJson, RefusedWithTheExistingDatabaseUnchanged) {
  write_file(bench(), json{{"benchmarks", {entry_}}}.dump());
  ASSERT_EQ(test::run_kvbench("import-bench --db " + q(db()) + " --json " + q(bench())).code, 0);
  ASSERT_TRUE(fs::exists(db()));
  each_case(false);
}

}  // namespace
}  // namespace kvb
