// Suite configs: the schema validator's error paths, and configs checked in-process (every
// problem is "<file>: <json path>: <problem>").
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include "common/check.h"
#include "common/json_io.h"
#include "suites/config.h"
#include "suites/json_schema.h"
#include "tests/suite_test_util.h"

namespace kvb {
namespace {

using json = nlohmann::json;

TEST(SuiteSchema, ValidatorReportsTheFirstViolationWithItsPath) {
  json schema = {
      {"type", "object"},
      {"required", {"a"}},
      {"additionalProperties", false},
      {"properties",
       {{"a", {{"type", "array"}, {"items", {{"type", "string"}}}}},
        {"b",
         {{"anyOf",
           {{{"type", "integer"}, {"minimum", 1}}, {{"type", "object"}, {"required", {"n"}}}}}}},
        {"c", {{"enum", {"x", "y"}}}},
        {"weird key", {{"type", "number"}, {"maximum", 1}}}}}};
  auto err = [&](const json& v) { return validate_json_schema(schema, v).value_or("<valid>"); };
  EXPECT_EQ(err({{"a", {"p", "q", 3}}}), "$.a[2]: expected a string, got an integer");
  EXPECT_EQ(err(json::object()), "$: missing required field \"a\"");
  EXPECT_EQ(err({{"a", json::array()}, {"z", 1}}),
            "$.z: unknown field (expected one of: a, b, c, weird key)");
  EXPECT_EQ(err({{"a", json::array()}, {"b", 0}}), "$.b: must be >= 1; got 0");
  EXPECT_EQ(err({{"a", json::array()}, {"b", json::object()}}),
            "$.b: missing required field \"n\"");
  EXPECT_EQ(err({{"a", json::array()}, {"b", "s"}}),
            "$.b: expected an integer or an object, got a string");
  EXPECT_EQ(err({{"a", json::array()}, {"c", "w"}}),
            "$.c: expected one of \"x\", \"y\"; got \"w\"");
  EXPECT_EQ(err({{"a", json::array()}, {"weird key", 2}}), "$[\"weird key\"]: must be <= 1; got 2");
  EXPECT_EQ(err({{"a", json::array()}, {"b", 2.0}}), "<valid>");  // 2.0 is an integer
  EXPECT_THROW(validate_json_schema(json{{"typo", 1}}, json(1)), Error);
}

TEST(SuiteSchema, ShippedConfigsFollowTheSchema) {
  const json schema = read_json_file(suite_schema_path());
  int n = 0;
  for (const auto& e :
       std::filesystem::directory_iterator(test::source_path("suites/configs"))) {
    if (e.path().extension() != ".json" || e.path().filename() == "schema.json") continue;
    ++n;
    auto err = validate_json_schema(schema, read_json_file(e.path().string()));
    EXPECT_FALSE(err.has_value()) << e.path() << ": " << *err;
  }
  EXPECT_GE(n, 1);
}

class SuiteConfigErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    test::make_tiny_model_dir(dir_.path("m"));
    write_file(dir_.path("t.txt"), "One sentence here. Another one there.\r\nAnd a third.\r\n");
    base_ = {
        {"name", "t"},
        {"seed", 3},
        {"models", {dir_.path("m")}},
        {"methods", {"full", "int(bits=8)", "streaming(window=16)"}},
        {"datasets",
         {{"txt", {{"type", "text"}, {"path", dir_.path("t.txt")}}},
          {"prose", {{"type", "prose"}, {"words", 300}}},
          {"kv", {{"type", "scbench_kv"}, {"samples", 1}, {"pairs", 3}, {"turns", 2}}}}},
        {"runs",
         {{{"suite", "perplexity"}, {"datasets", {"txt"}}, {"params", {{"ctx", 32}, {"chunk", 8}}}},
          {{"suite", "niah"}, {"datasets", {"prose"}}, {"params", {{"context_lengths", {200}}}}},
          {{"suite", "scbench"}, {"datasets", {"kv"}}}}}};
  }
  // The error for `base_` changed by `edit`, or "<valid>".
  std::string error(const std::function<void(json&)>& edit) {
    json j = base_;
    edit(j);
    const std::string p = dir_.path("x.json");
    write_file(p, j.dump(2));
    try {
      load_suite_config(p);
      return "<valid>";
    } catch (const InputError& e) {
      return e.what();
    }
  }
  void expect(const std::function<void(json&)>& edit, const std::string& path_and_problem) {
    const std::string e = error(edit);
    EXPECT_EQ(e.rfind(dir_.path("x.json") + ": ", 0), 0u) << e;
    EXPECT_NE(e.find(path_and_problem), std::string::npos)
        << "'" << path_and_problem << "' not in: " << e;
  }
  test::TempDir dir_;
  json base_;
};

TEST_F(SuiteConfigErrors, ValidConfigLoadsWithDefaultsFilled) {
  EXPECT_EQ(error([](json&) {}), "<valid>");
  SuiteConfig c = load_suite_config(dir_.path("x.json"));
  EXPECT_EQ(c.canonical[1], "int(bits=8,group=64)");
  EXPECT_EQ(c.runs[0].params["stride"], 0);
  EXPECT_EQ(c.runs[1].params["depths"].size(), 5u);
  EXPECT_EQ(c.runs[1].params["needle"], "The special magic number for {city} is {number}.");
  EXPECT_EQ(c.runs[2].params["mode"], "multi_turn");
}

TEST_F(SuiteConfigErrors, SchemaViolationsNameTheJsonPath) {
  expect([](json& j) { j["methods"][2] = 5; }, "$.methods[2]: expected a string, got an integer");
  expect([](json& j) { j.erase("runs"); }, "$: missing required field \"runs\"");
  expect([](json& j) { j["metods"] = 1; }, "$.metods: unknown field");
  expect([](json& j) { j["runs"][0]["params"]["ctx"] = "32"; },
         "$.runs[0].params.ctx: expected an integer, got a string");
  expect([](json& j) { j["runs"][0]["params"]["chunk"] = 0; },
         "$.runs[0].params.chunk: must be >= 1; got 0");
  expect(
      [](json& j) {
        j["runs"][1]["params"]["depths"] = {0.5, 1.5};
      },
      "$.runs[1].params.depths[1]: must be <= 1");
  expect(
      [](json& j) {
        j["runs"][1]["params"]["depths"] = {{"n", 3}, {"spacing", "log"}};
      },
      "$.runs[1].params.depths.spacing: expected one of \"linear\", \"sigmoid\"");
  expect([](json& j) { j["runs"][2]["suite"] = "ruler"; }, "$.runs[2].suite: expected one of");
  expect([](json& j) { j["datasets"]["kv"]["pairs"] = -1; }, "$.datasets.kv.pairs: must be >= 1");
  expect([](json& j) { j["datasets"]["txt"].erase("path"); },
         "$.datasets.txt: missing required field \"path\"");
  expect([](json& j) { j["datasets"]["prose"]["path"] = "x"; },
         "$.datasets.prose.path: unknown field");
  expect([](json& j) { j["seed"] = -1; }, "$.seed: must be >= 0");
}

TEST_F(SuiteConfigErrors, SemanticProblemsNameTheJsonPath) {
  expect([](json& j) { j["methods"][1] = "int(bits=3)"; }, "$.methods[1]: spec 'int(bits=3)'");
  expect([](json& j) { j["methods"][1] = "full(dtype=fp32)"; },
         "$.methods[1]: same method as $.methods[0]");
  expect([](json& j) { j["runs"][0]["datasets"] = {"nope"}; },
         "$.runs[0].datasets[0]: unknown dataset \"nope\"");
  expect([](json& j) { j["runs"][0]["datasets"] = {"kv"}; },
         "$.runs[0].datasets[0]: dataset \"kv\" is scbench_kv");
  expect([](json& j) { j["runs"][2]["datasets"] = {"prose"}; },
         "$.runs[2].datasets[0]: dataset \"prose\" is prose");
  expect([](json& j) { j["runs"][0]["params"]["stride"] = 64; },
         "$.runs[0].params.stride: must not exceed ctx");
  expect([](json& j) { j["runs"][1]["params"]["needle"] = "The pass key is 12345."; },
         "$.runs[1].params.needle: must contain {number}");
  expect([](json& j) {
           j["runs"][1]["params"]["needles"] = 2;
           j["runs"][1]["params"]["needle"] = "The number is {number}.";
         },
         "$.runs[1].params.needle: must contain {city}");
  expect([&](json& j) { j["models"][0] = dir_.path("nomodel"); },
         "$.models[0]: not a model directory");
  std::filesystem::remove(dir_.path("m/tokenizer.json"));
  expect([](json&) {}, "$.models[0]: '");
}

// A window or context longer than the model's max_position_embeddings (the tiny model's: 4096)
// is refused with one line and exit 2 before anything is written, unless the run allows it; the
// protocol records that it did.
TEST_F(SuiteConfigErrors, ContextsBeyondTheModelsPositionsAreRefusedUnlessAllowed) {
  const std::string cfg = dir_.path("x.json"), out = dir_.path("out.jsonl");
  auto run = [&](const std::function<void(json&)>& edit) {
    json j = base_;
    edit(j);
    write_file(cfg, j.dump(2));
    return test::run_kvbench("run --progress lines --suite " + test::q(cfg) + " --out " +
                             test::q(out));
  };
  const std::string allow = "; set \"allow_extrapolation\": true to run anyway)";
  const std::string config_json = dir_.path("m") + "/config.json";
  auto r = run([](json& j) { j["runs"][0]["params"]["ctx"] = 8192; });
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_EQ(r.err, "kvbench: error: " + cfg +
                       ": $.runs[0].params.ctx: 8192 exceeds the model's "
                       "max_position_embeddings 4096 (" +
                       config_json + allow + "\n");
  EXPECT_FALSE(std::filesystem::exists(out));
  r = run([](json& j) { j["runs"][1]["params"]["context_lengths"] = {200, 5000}; });
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(r.err, "kvbench: error: " + cfg +
                       ": $.runs[1].params.context_lengths[1]: 5000 exceeds the model's "
                       "max_position_embeddings 4096 (" +
                       config_json + allow + "\n");
  EXPECT_FALSE(std::filesystem::exists(out));
  // Exactly the model's positions is fine; beyond them with "allow_extrapolation" runs.
  EXPECT_EQ(error([](json& j) { j["runs"][0]["params"]["ctx"] = 4096; }), "<valid>");
  r = run([](json& j) {
    j["methods"] = {"full"};
    j["datasets"]["prose"]["words"] = 1500;
    j["runs"] = {
        {{"suite", "perplexity"},
         {"datasets", {"prose"}},
         {"params",
          {{"ctx", 4200}, {"chunk", 700}, {"max_windows", 1}, {"allow_extrapolation", true}}}}};
  });
  ASSERT_EQ(r.code, 0) << r.err;
  const json rec = json::parse(test::slurp(out));
  EXPECT_EQ(rec["params"]["allow_extrapolation"], true);
  EXPECT_EQ(rec["protocol"]["allow_extrapolation"], true);
  EXPECT_EQ(rec["protocol"]["ctx"], 4200);
}

TEST_F(SuiteConfigErrors, BrokenJsonNamesTheFile) {
  write_file(dir_.path("x.json"), "{\"name\": \"t\",");
  try {
    load_suite_config(dir_.path("x.json"));
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(dir_.path("x.json") + ": invalid JSON"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace kvb
