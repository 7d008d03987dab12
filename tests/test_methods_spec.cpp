// Spec grammar and registry: canonical forms, defaults, errors that list what exists, and the
// `kvbench methods` command.
#include <gtest/gtest.h>

#include "common/check.h"
#include "methods/registry.h"
#include "tests/test_util.h"

namespace kvb {
namespace {

std::string canon(const std::string& s) { return join_spec(canonicalize(s)); }

std::string error_of(const std::string& s) {
  try {
    make_method(s);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(MethodSpec, CanonicalFormSortsKeysAndFillsDefaults) {
  EXPECT_EQ(canon("kivi"), "kivi(bits=2,group=32,residual=128)");
  EXPECT_EQ(canon(" kivi( residual=64 , bits=4 ) "), "kivi(bits=4,group=32,residual=64)");
  EXPECT_EQ(canon("int"), "int(bits=4,group=64)");
  EXPECT_EQ(canon("streaming(window=1020)"), "streaming(sink=4,window=1020)");
  EXPECT_EQ(canon("h2o(budget=256)"), "h2o(budget=256,recent=128)");  // recent: budget/2
  EXPECT_EQ(canon("h2o(budget=256,recent=auto)"), "h2o(budget=256,recent=128)");
  EXPECT_EQ(canon("snapkv(budget=1024)"), "snapkv(budget=1024,pool=7,pooling=max,window=32)");
  EXPECT_EQ(canon("snapkv(budget=256)+kivi(bits=2)"),
            "snapkv(budget=256,pool=7,pooling=max,window=32)+kivi(bits=2,group=32,residual=128)");
  // A selector's default storage is full(dtype=fp32): both spellings share one identity.
  EXPECT_EQ(canon("h2o(budget=8)+full"), "h2o(budget=8,recent=4)");
  EXPECT_EQ(canon("h2o(budget=8)+full(dtype=fp16)"), "h2o(budget=8,recent=4)+full(dtype=fp16)");
  EXPECT_EQ(make_method("h2o(budget=8)+full")->spec(), "h2o(budget=8,recent=4)");
}

TEST(MethodSpec, ErrorsNameTheProblemAndWhatExists) {
  struct Case {
    const char* spec;
    const char* must_contain;
  };
  for (const Case& c : {Case{"kivi(bits=3x)", "kivi(bits=3x): not an integer"},
                        Case{"kivi(bits=3)", "expected one of 2, 4"},
                        Case{"nosuch()", "unknown method 'nosuch' (known: full, int, kivi, "},
                        Case{"kivi(bitz=2)", "has no parameter 'bitz' (known: bits, group, residual)"},
                        Case{"snapkv(budget=-1)", "must be at least 1"},
                        Case{"snapkv(window=8)", "snapkv needs parameter 'budget'"},
                        Case{"snapkv(budget=16,window=16)", "window must be smaller than budget"},
                        Case{"snapkv(budget=64,pool=4)", "pool must be odd"},
                        Case{"h2o(budget=8,recent=9)", "recent must not exceed budget"},
                        Case{"knorm(budget=8,recent=6,sink=3)",
                             "recent + sink must not exceed budget"},
                        Case{"random(budget=0)", "must be at least 1"},
                        Case{"kivi(group=32,residual=48)", "residual must be a multiple of group"},
                        Case{"full(dtype=fp16", "unbalanced parentheses"},
                        Case{"kivi(bits=2))", "unbalanced parentheses"},
                        Case{"full(dtype=fp8)", "expected one of fp32, fp16, bf16"},
                        Case{"kivi+h2o(budget=8)", "'kivi' stores the cache and must be the last stage"},
                        Case{"int(bits=2)+kivi", "must be the last stage"}}) {
    const std::string err = error_of(c.spec);
    EXPECT_EQ(err.rfind(std::string("spec '") + c.spec + "': ", 0), 0u) << err;
    EXPECT_NE(err.find(c.must_contain), std::string::npos) << c.spec << " -> " << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
  }
}

TEST(MethodSpec, RegistryEntriesHaveHelpAndSchemas) {
  for (const MethodEntry& e : method_registry()) {
    EXPECT_FALSE(e.help.empty()) << e.name;
    if (e.kind() == StageKind::kStorage) EXPECT_TRUE(std::get<StorageFactory>(e.make)) << e.name;
    else EXPECT_TRUE(std::get<SelectorFactory>(e.make)) << e.name;
    for (const ParamSchema& p : e.params) EXPECT_FALSE(p.help.empty()) << e.name << "." << p.name;
  }
}

// The canonical spec is the stored, default-filled stage spec: the spellings of every release
// so far, a selector alone without its implicit full(dtype=fp32), chains joined by '+'.
TEST(MethodSpec, MethodsPrintTheStageSpecTheyWereBuiltFrom) {
  for (const char* spec : {"full(dtype=fp32)", "full(dtype=bf16)", "int(bits=4,group=64)",
                           "kivi(bits=2,group=32,residual=128)", "streaming(sink=4,window=1020)",
                           "h2o(budget=256,recent=128)",
                           "snapkv(budget=256,pool=7,pooling=max,window=32)",
                           "knorm(budget=256,recent=0,sink=0)", "random(budget=256,seed=0)",
                           "snapkv(budget=256,pool=7,pooling=max,window=32)+kivi(bits=2,group=32,"
                           "residual=128)",
                           "streaming(sink=4,window=60)+h2o(budget=50,recent=25)+"
                           "full(dtype=fp16)"}) {
    EXPECT_EQ(make_method(spec)->spec(), spec);
  }
  EXPECT_EQ(make_method("full")->spec(), "full(dtype=fp32)");
  EXPECT_EQ(make_method("streaming(window=8)+full")->spec(), "streaming(sink=4,window=8)");
  EXPECT_EQ(make_method("knorm(budget=8)")->spec(), "knorm(budget=8,recent=0,sink=0)");
  EXPECT_EQ(make_method("random(seed=3,budget=8)+full")->spec(), "random(budget=8,seed=3)");
}

TEST(MethodSpec, IntGroupMustDivideTheHeadDim) {
  ModelShape s;
  s.n_layers = 1;
  s.n_head_q = 2;
  s.n_head_kv = 1;
  s.head_dim = 48;
  EXPECT_THROW(make_method("int(group=32)")->make_state(s), InputError);
  EXPECT_NO_THROW(make_method("int(group=16)")->make_state(s));
  EXPECT_NO_THROW(make_method("int(group=64)")->make_state(s));  // capped at head_dim
}

TEST(MethodsCommand, ListsEveryMethodWithItsSchema) {
  auto r = test::run_kvbench("methods");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const MethodEntry& e : method_registry()) {
    EXPECT_NE(r.out.find("\n" + e.name + "  ["), std::string::npos) << e.name;
    for (const ParamSchema& p : e.params) EXPECT_NE(r.out.find("    " + p.name + ": "), std::string::npos);
  }
  // Every int parameter shows its range (checked before any arithmetic on it).
  EXPECT_NE(r.out.find("budget: int >= 1 and <= 16777216, required"), std::string::npos) << r.out;
}

TEST(MethodsCommand, DescribeGivesCanonicalSpecAndBitsPerToken) {
  auto r = test::run_kvbench("methods --describe 'full(dtype=fp16)' --tokens 1000");
  ASSERT_EQ(r.code, 0) << r.err;
  // 30 layers x 3 KV heads x 64 x (K+V) x 16 bits = 184320 bits per token.
  EXPECT_NE(r.out.find("bits per token:  184320.0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("promise:         exact"), std::string::npos) << r.out;
  r = test::run_kvbench("methods --describe 'kivi(bits=2)' --json --tokens 4096");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["spec"], "kivi(bits=2,group=32,residual=128)");
  // Per KV head and layer: keys 4096 quantized (16 B codes each) with 128 groups x 64 channels x
  // fp16 scale+zero; values 3968 quantized (16 B + 2 groups x 4 B) and 128 fp32 (256 B).
  const double bytes = 4096 * 16 + 128 * 64 * 4 + 3968 * (16 + 8) + 128 * 256;
  EXPECT_NEAR(j["bits_per_element"].get<double>(), 8 * bytes / (4096 * 2 * 64), 1e-9);
  EXPECT_EQ(j["payload_bytes"].get<int64_t>() + j["metadata_bytes"].get<int64_t>(),
            static_cast<int64_t>(bytes) * 30 * 3);
  r = test::run_kvbench("methods --describe 'h2o(budget=64)' --layers 2 --kv-heads 1 --heads 2 --head-dim 8 --tokens 32 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["payload_bytes"], 2 * 2 * 32 * 8 * 4);   // nothing evicted below budget
  EXPECT_EQ(j["metadata_bytes"], 2 * 32 * 4);           // h2o scores
}

TEST(MethodsCommand, BadSpecIsOneLineAndExitTwo) {
  for (const char* spec : {"kivi(bits=3x)", "nosuch()", "snapkv(budget=-1)", "kivi(bits=2"}) {
    auto r = test::run_kvbench(std::string("methods --describe ") + test::q(spec));
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find(std::string("spec '") + spec + "'"), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace kvb

namespace kvb {
namespace {

// A float parameter has one canonical text: the shortest that reads back as the same double.
TEST(MethodSpecFloats, OneSettingHasOneCanonicalSpec) {
  const std::string want = make_method("a2sf(budget=8,forget=0.3)")->spec();
  for (const char* s : {"a2sf(budget=8,forget=0.30)", "a2sf(budget=8,forget=3e-1)",
                        "a2sf(budget=8,forget=.3)", "a2sf(budget=8,forget=0.300000000)"})
    EXPECT_EQ(make_method(s)->spec(), want) << s;
  EXPECT_NE(make_method("a2sf(budget=8,forget=0.31)")->spec(), want);
  EXPECT_NE(want.find("forget=0.3"), std::string::npos) << want;
}

}  // namespace
}  // namespace kvb
