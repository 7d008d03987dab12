// The JSON reading layer every input goes through (common/json_reader.h) and the error-line
// formatter every command's error goes through (common/error_text.h).
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "common/check.h"
#include "common/error_text.h"
#include "common/json_reader.h"

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const kvb::InputError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(JsonReader, DeepNestingIsRefusedBeforeBuilding) {
  std::string deep(100000, '[');
  deep += std::string(100000, ']');
  EXPECT_EQ(error_of([&] { kvb::parse_json(deep, "deep.json"); }),
            "deep.json: nesting deeper than 64 levels");
  std::string ok = std::string(64, '[') + std::string(64, ']');
  EXPECT_NO_THROW(kvb::parse_json(ok, "ok.json"));
  std::string over = std::string(65, '[') + std::string(65, ']');
  EXPECT_THROW(kvb::parse_json(over, "x"), kvb::InputError);
}

TEST(JsonReader, DuplicateKeysAreRefusedWithTheirPath) {
  EXPECT_EQ(error_of([] { kvb::parse_json(R"({"a": 1, "a": 2})", "c.json"); }),
            "c.json: (top level): duplicate key \"a\"");
  EXPECT_EQ(error_of([] { kvb::parse_json(R"({"m": [{}, {"x": 1, "x": 1}]})", "c.json"); }),
            "c.json: m[1]: duplicate key \"x\"");
  // The same key in two objects is fine.
  EXPECT_NO_THROW(kvb::parse_json(R"({"a": {"x": 1}, "b": {"x": 2}})", "c.json"));
}

TEST(JsonReader, NumbersBeyondDoubleAreRefused) {
  EXPECT_EQ(error_of([] { kvb::parse_json(R"({"a": 1e999})", "n.json"); }),
            "n.json: number overflow parsing '1e999'");
  EXPECT_EQ(error_of([] { kvb::parse_json(R"({"a": -1e999})", "n.json"); }),
            "n.json: number overflow parsing '-1e999'");
}

TEST(JsonReader, NulBytesAreRefusedEvenAfterAValue) {
  const std::string text("{\"a\": 1}\0garbage", 17);
  EXPECT_EQ(error_of([&] { kvb::parse_json(text, "z.json"); }),
            "z.json: invalid JSON: a NUL byte at offset 8");
}

TEST(JsonReader, SyntaxErrorsNameTheSource) {
  const std::string e = error_of([] { kvb::parse_json("{\"a\": \n", "s.json"); });
  EXPECT_EQ(e.rfind("s.json: invalid JSON: ", 0), 0u) << e;
}

TEST(JsonReader, DocumentMatchesNlohmannForValidInput) {
  const std::string text =
      R"({"b": [1, -2, 3.5, "x", true, null, {"c": []}], "a": {"u": 18446744073709551615}})";
  EXPECT_EQ(kvb::parse_json(text, "t"), nlohmann::json::parse(text));
}

TEST(JsonNode, TypedGettersReportPathExpectedAndGot) {
  const auto j = kvb::parse_json(
      R"({"n": "12", "m": {"layers": [1, 2.5, 3e3]}, "f": 1.5, "big": 9223372036854775808})", "cfg.json");
  kvb::JsonNode root(j, "cfg.json");
  EXPECT_EQ(error_of([&] { root.at("n").integer(); }),
            "cfg.json: n: expected an integer in [-9223372036854775808, 9223372036854775807], got a string \"12\"");
  EXPECT_EQ(error_of([&] { root.at("m").at("layers")[1].integer(0, 10); }),
            "cfg.json: m.layers[1]: expected an integer in [0, 10], got a number 2.5");
  EXPECT_EQ(root.at("m").at("layers")[2].integer(0, 5000), 3000);
  EXPECT_EQ(error_of([&] { root.at("m").at("layers")[2].integer(0, 10); }),
            "cfg.json: m.layers[2]: expected an integer in [0, 10], got a number 3000.0");
  EXPECT_EQ(error_of([&] { root.at("m").at("heads"); }), "cfg.json: m.heads: missing");
  EXPECT_EQ(error_of([&] { root.at("m").at("layers")[7]; }),
            "cfg.json: m.layers: has 3 elements, element 7 is missing");
  EXPECT_EQ(error_of([&] { root.at("big").integer(); }),
            "cfg.json: big: expected an integer in [-9223372036854775808, 9223372036854775807], got an integer 9223372036854775808");
  EXPECT_EQ(error_of([&] { root.at("f").str(); }), "cfg.json: f: expected a string, got a number 1.5");
  EXPECT_EQ(error_of([&] { root.at("n").at("x"); }),
            "cfg.json: n: expected an object, got a string \"12\"");
  EXPECT_EQ(root.integer("absent", 7, 0, 10), 7);
  EXPECT_DOUBLE_EQ(root.number("f", 0.0, 0.0, 2.0), 1.5);
  EXPECT_EQ(error_of([&] { root.number("f", 0.0, 0.0, 1.0); }),
            "cfg.json: f: expected a number in [0, 1], got a number 1.5");
}

TEST(JsonNode, ChoicesAndUnknownKeys) {
  const auto j = kvb::parse_json(R"({"act": "gelu", "x": 1})", "c.json");
  kvb::JsonNode root(j, "c.json");
  EXPECT_EQ(error_of([&] { root.at("act").choice({"silu"}); }),
            "c.json: act: expected one of silu, got a string \"gelu\"");
  EXPECT_EQ(error_of([&] { root.only_keys({"act"}); }),
            "c.json: (top level): unknown field \"x\" (known: act)");
}

TEST(ErrorText, OneLineEscapesControlsAndCuts) {
  EXPECT_EQ(kvb::one_line("a\nb\tc\r\x01\x7f"), "a\\nb\\tc\\r\\x01\\x7F");
  EXPECT_EQ(kvb::one_line("caf\xc3\xa9"), "caf\xc3\xa9");                 // UTF-8 kept
  EXPECT_EQ(kvb::one_line("x\xe2\x80\xa8y"), "x\\xE2\\x80\\xA8y");       // U+2028 escaped
  EXPECT_EQ(kvb::one_line("bad\xff"), "bad\\xFF");                        // invalid byte
  EXPECT_EQ(kvb::one_line(std::string(300, 'a'), 200), std::string(200, 'a') + "...");
  EXPECT_EQ(kvb::quote_input(std::string(500, 'b')), "\"" + std::string(200, 'b') + "...\"");
}

TEST(JsonNode, LongStringValuesAreCutInMessages) {
  const auto j = kvb::parse_json("{\"s\": \"" + std::string(5000, 'z') + "\\n\"}", "l.json");
  const std::string e = error_of([&] { kvb::JsonNode(j, "l.json").at("s").integer(); });
  EXPECT_LT(e.size(), 320u) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
}

}  // namespace

namespace {

// A node without a source: its caller names the file (a suite's params, read where the path is
// "$.runs[0].params" and the config file is added by the config loader).
TEST(JsonNode, AnEmptySourceLeavesItOutOfMessages) {
  const auto j = kvb::parse_json(R"({"ctx": "big"})", "p");
  kvb::JsonNode n(j, "", "$.runs[0].params");
  EXPECT_EQ(error_of([&] { n.at("ctx").integer(2, 10); }),
            "$.runs[0].params.ctx: expected an integer in [2, 10], got a string \"big\"");
  EXPECT_EQ(error_of([&] { n.at("chunk"); }), "$.runs[0].params.chunk: missing");
}

}  // namespace

#include "common/number_text.h"

namespace kvb {
namespace {

// SQLite prints a subnormal REAL as "4.9406564584124654e-324"; std::stod throws out_of_range
// on it (a fuzzed results database crashed the leaderboard so). parse_double_text reads it.
TEST(CommonNumberText, SubnormalsReadOverflowAndJunkAreInputErrors) {
  EXPECT_GT(parse_double_text("4.9406564584124654e-324", "db"), 0.0);
  EXPECT_EQ(parse_double_text("1e-400", "db"), 0.0);
  EXPECT_EQ(parse_double_text("-2.5", "db"), -2.5);
  for (const char* bad : {"1e999", "12x", "", "abc"}) {
    try {
      parse_double_text(bad, "results database");
      ADD_FAILURE() << bad << " was read";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("results database: expected a number"),
                std::string::npos)
          << e.what();
    }
  }
}

}  // namespace
}  // namespace kvb
