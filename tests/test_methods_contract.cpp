// The contract every registered method (and a few chains) must keep: canonical spec round trip,
// consistent views and positions, memory() equal to the promise made from the spec, and the
// full-cache logits at lossless settings. The cases come from the registry (each entry's
// ContractCases), so a new method is covered by registering it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "harness/model/model.h"
#include "methods/registry.h"
#include "tests/methods_test_util.h"

namespace kvb {
namespace {

// Chains checked besides every registered method's own examples (ContractCases::examples).
const std::vector<std::string> kChains = {
    "snapkv(budget=256)+kivi(bits=2)",
    "h2o(budget=128)+int(bits=4)",
    "streaming(window=60)+full(dtype=fp16)",
    "streaming(window=96)+kivi",
    "snapkv(budget=160)+h2o(budget=128)+kivi(bits=4)",
};
// Chains that must reproduce the full cache's logits, besides the methods' own lossless specs.
const std::vector<std::string> kLosslessChains = {
    "snapkv(budget=64)+kivi(residual=64)",
    "h2o(budget=40)+full",
    "streaming(window=40)+h2o(budget=50)+kivi(residual=64)",
};

// Every registered method's examples, then the chains.
std::vector<std::string> contract_specs() {
  std::vector<std::string> specs;
  for (const MethodEntry& e : method_registry())
    specs.insert(specs.end(), e.contract.examples.begin(), e.contract.examples.end());
  specs.insert(specs.end(), kChains.begin(), kChains.end());
  return specs;
}

// Mean |view - appended| allowed for a spec: the largest of its stages' tolerances (a selector
// alone stores into full(dtype=fp32), which is exact).
double view_tolerance(const std::string& spec) {
  double tol = 0;
  for (const StageSpec& st : canonicalize(spec))
    tol = std::max(tol, find_method(st.name)->contract.view_tolerance(st));
  return tol;
}

TEST(MethodContract, EveryRegisteredMethodIsCovered) {
  for (const MethodEntry& e : method_registry()) {
    SCOPED_TRACE(e.name);
    EXPECT_FALSE(e.help.empty());
    EXPECT_TRUE(e.contract.view_tolerance) << "no view tolerance";
    ASSERT_FALSE(e.contract.examples.empty()) << "no example spec";
    for (const auto* list : {&e.contract.examples, &e.contract.lossless, &e.contract.compressing})
      for (const std::string& s : *list) EXPECT_EQ(canonicalize(s).front().name, e.name) << s;
  }
}

TEST(MethodContract, SpecRoundTrip) {
  for (const std::string& s : contract_specs()) {
    auto m = make_method(s);
    const std::string canon = m->spec();
    EXPECT_EQ(join_spec(canonicalize(s)), canon) << s;
    EXPECT_EQ(make_method(canon)->spec(), canon) << s;
    EXPECT_EQ(join_spec(parse_spec(canon)), canon) << s;
    EXPECT_EQ(join_spec(canonicalize(canon)), canon) << s;
  }
}

TEST(MethodContract, ViewShapesAndPositionsStayConsistent) {
  const ModelShape shape = test::method_shape(2, 4, 2, 32);
  for (const std::string& spec : contract_specs()) {
    SCOPED_TRACE(spec);
    const double tol = view_tolerance(spec);
    auto m = make_method(spec);
    auto st = m->make_state(shape);
    test::SyntheticStream in(shape, 11);
    auto check = [&] {
      for (int l = 0; l < shape.n_layers; ++l) {
        KVView v = st->view(l);
        const int64_t s = v.slots();
        ASSERT_TRUE(v.k.defined() && v.v.defined() && v.pos.defined());
        EXPECT_EQ(v.k.sizes(), torch::IntArrayRef({1, 2, s, 32}));
        EXPECT_EQ(v.v.sizes(), v.k.sizes());
        EXPECT_EQ(v.pos.sizes(), torch::IntArrayRef({1, 2, s}));
        EXPECT_EQ(v.pos.scalar_type(), torch::kLong);
        MemoryUse mu = st->memory(l);
        EXPECT_EQ(mu.tokens_seen, in.n);
        torch::Tensor pos = v.pos.contiguous();
        // Heads holding fewer slots than the longest (head-wise budgets) are padded at the end:
        // position -1, logit_bias -inf. memory() counts the held slots only.
        // A compensation slot (RazorAttention: the mean of the tokens a head dropped) has no one
        // source position: it follows the head's stored slots at position -2 with a finite
        // logit_bias (log of the count it stands for), and memory() counts it as a slot.
        int64_t held = 0;
        for (int64_t h = 0; h < 2; ++h) {
          std::set<int64_t> seen;
          int64_t n = 0, comp = 0;
          for (int64_t i = 0; i < s; ++i) {
            const int64_t p = pos[0][h][i].item<int64_t>();
            if (p == -2) {
              ASSERT_TRUE(v.logit_bias.defined() && std::isfinite(v.logit_bias[0][h][i].item<float>()))
                  << "compensation slot " << i << " without a finite logit bias";
              ASSERT_EQ(i, n) << "a compensation slot not right after the stored slots";
              ++comp;
              continue;
            }
            if (p == -1) {
              ASSERT_TRUE(v.logit_bias.defined()) << "padding without a logit bias";
              EXPECT_TRUE(std::isinf(v.logit_bias[0][h][i].item<float>()) &&
                          v.logit_bias[0][h][i].item<float>() < 0)
                  << "padding slot " << i << " is read";
              continue;
            }
            ASSERT_EQ(n + comp, i) << "a held slot after padding";
            ASSERT_EQ(comp, 0) << "a stored slot after the compensation slot";
            ++n;
            ASSERT_TRUE(p >= 0 && p < in.n) << "position " << p;
            ASSERT_TRUE(seen.insert(p).second) << "position " << p << " held twice";
          }
          held += n + comp;
          if (n == 0) continue;
          // The slot holds what was appended at its position.
          torch::Tensor idx = pos[0][h].narrow(0, 0, n);
          torch::Tensor want_k = in.k[l][0][h].index_select(0, idx), want_v = in.v[l][0][h].index_select(0, idx);
          const double ek =
              (v.k[0][h].narrow(0, 0, n).to(torch::kFloat32) - want_k).abs().mean().item<double>();
          const double ev =
              (v.v[0][h].narrow(0, 0, n).to(torch::kFloat32) - want_v).abs().mean().item<double>();
          EXPECT_LE(ek, tol) << "layer " << l << " head " << h;
          EXPECT_LE(ev, tol) << "layer " << l << " head " << h;
        }
        EXPECT_EQ(mu.slots, held);
      }
    };
    for (int64_t chunk : {37, 37, 100, 64, 62}) {
      in.feed(*st, chunk);
      check();
    }
    st->end_prefill();
    check();
    for (int i = 0; i < 20; ++i) in.feed(*st, 1);
    check();
    auto copy = st->clone();  // a snapshot evolves independently
    in.feed(*st, 1);
    EXPECT_EQ(copy->memory().tokens_seen + 1, st->memory().tokens_seen);
  }
}

// Whether a spec's promise is an upper bound rather than exact, as the method declares it
// (KVMethod::promise_is_exact); the tests below check exact promises exactly and bounds as bounds.
bool promise_is_a_bound(const std::string& spec) { return !make_method(spec)->promise_is_exact(); }

// What a state holds against what its method promised: payload exact and metadata within 1%, or,
// for chains whose promise is an upper bound (promise_is_a_bound), at most the promise.
void expect_holds_promise(const std::string& spec, const MemoryUse& got, const MemoryUse& want) {
  if (promise_is_a_bound(spec)) {
    EXPECT_LE(got.payload_bytes, want.payload_bytes);
    EXPECT_LE(got.payload_bytes + got.metadata_bytes, want.payload_bytes + want.metadata_bytes);
    return;
  }
  EXPECT_EQ(got.payload_bytes, want.payload_bytes);
  EXPECT_NEAR(static_cast<double>(got.metadata_bytes), static_cast<double>(want.metadata_bytes),
              0.01 * static_cast<double>(want.metadata_bytes) + 1);
}

TEST(MethodContract, PromiseExactnessIsDeclaredByTheStages) {
  // Every method alone, and chains into storage whose bytes depend on the kept count only.
  for (const MethodEntry& e : method_registry())
    for (const std::string& spec : e.contract.examples)
      EXPECT_TRUE(make_method(spec)->promise_is_exact()) << spec;
  for (const char* spec : {"h2o(budget=128)+int(bits=4)", "snapkv(budget=128)+h2o(budget=100)",
                           "knorm(budget=64)+full(dtype=fp16)", "streaming(window=96)+kivi"})
    EXPECT_TRUE(make_method(spec)->promise_is_exact()) << spec;
  // KIVI after a data-dependent selector, or after more than one selector.
  for (const char* spec : {"h2o(budget=128)+kivi", "snapkv(budget=256)+kivi(bits=2)",
                           "streaming(window=100)+h2o(budget=64)+kivi"})
    EXPECT_FALSE(make_method(spec)->promise_is_exact()) << spec;
}

TEST(MethodContract, MemoryMatchesThePromiseAt1KAnd4K) {
  const ModelShape shape = test::method_shape(2, 4, 2, 64);
  for (const std::string& spec : contract_specs()) {
    auto m = make_method(spec);
    for (int64_t tokens : {1000, 4096}) {
      SCOPED_TRACE(spec + " at " + std::to_string(tokens) + " tokens");
      auto st = m->make_state(shape);
      test::SyntheticStream in(shape, 5);
      in.feed_chunked(*st, tokens, tokens == 1000 ? 300 : 512);
      st->end_prefill();
      std::optional<MemoryUse> want = m->promised_memory(shape, tokens);
      ASSERT_TRUE(want.has_value());
      MemoryUse got = st->memory();
      EXPECT_EQ(got.slots, want->slots);
      EXPECT_EQ(got.tokens_seen, tokens);
      expect_holds_promise(spec, got, *want);
    }
  }
}

// The promise after a prompt and tokens decoded after it (prompt_tokens): every spec, the prompt
// in chunks, end_prefill(), then decode tokens one at a time.
TEST(MethodContract, MemoryMatchesThePromiseAfterAPromptAndDecodedTokens) {
  const ModelShape shape = test::method_shape(2, 4, 2, 64);
  for (const std::string& spec : contract_specs()) {
    auto m = make_method(spec);
    for (auto [prompt, decoded] : {std::pair<int64_t, int64_t>{700, 40}, {1000, 150}}) {
      SCOPED_TRACE(spec + " after " + std::to_string(prompt) + " + " + std::to_string(decoded));
      auto st = m->make_state(shape);
      test::SyntheticStream in(shape, 6);
      in.feed_chunked(*st, prompt, 256);
      st->end_prefill();
      for (int64_t i = 0; i < decoded; ++i) in.feed(*st, 1);
      std::optional<MemoryUse> want = m->promised_memory(shape, prompt + decoded,
                                                         torch::kFloat32, prompt);
      ASSERT_TRUE(want.has_value());
      MemoryUse got = st->memory();
      EXPECT_EQ(got.slots, want->slots);
      EXPECT_EQ(got.tokens_seen, prompt + decoded);
      expect_holds_promise(spec, got, *want);
    }
  }
}

// Every selecting stage composes with every storage stage (`pyramidkv(...)+kivi(bits=2)`): each
// registered selector's first example before each registered storage's first example holds what
// it promises (exactly, or within the bound it declares) after a prompt and decoded tokens, and
// its views hold what was appended at the positions they name.
TEST(MethodContract, EverySelectorComposesWithEveryStorage) {
  const ModelShape shape = test::method_shape(2, 4, 2, 32);
  std::vector<std::string> selectors, storages;
  for (const MethodEntry& e : method_registry())
    (e.kind() == StageKind::kSelector ? selectors : storages).push_back(e.contract.examples.front());
  ASSERT_GE(selectors.size(), 10u);
  ASSERT_GE(storages.size(), 3u);
  for (const std::string& sel : selectors)
    for (const std::string& sto : storages) {
      const std::string spec = sel + "+" + sto;
      SCOPED_TRACE(spec);
      auto m = make_method(spec);
      auto st = m->make_state(shape);
      test::SyntheticStream in(shape, 17);
      in.feed_chunked(*st, 300, 64);
      st->end_prefill();
      for (int i = 0; i < 12; ++i) in.feed(*st, 1);
      std::optional<MemoryUse> want = m->promised_memory(shape, 312, torch::kFloat32, 300);
      ASSERT_TRUE(want.has_value());
      const MemoryUse got = st->memory();
      EXPECT_EQ(got.slots, want->slots);
      EXPECT_EQ(got.tokens_seen, 312);
      expect_holds_promise(spec, got, *want);
      const double tol = view_tolerance(spec);
      for (int l = 0; l < shape.n_layers; ++l) {
        KVView v = st->view(l);
        torch::Tensor pos = v.pos.contiguous();
        for (int64_t h = 0; h < shape.n_head_kv; ++h) {
          std::vector<int64_t> held;
          for (int64_t i = 0; i < v.slots(); ++i)
            if (pos[0][h][i].item<int64_t>() >= 0) held.push_back(i);
          ASSERT_FALSE(held.empty());
          torch::Tensor slots = torch::tensor(held, torch::kLong);
          torch::Tensor p = pos[0][h].index_select(0, slots);
          ASSERT_LT(p.max().item<int64_t>(), 312);
          const double ek = (v.k[0][h].index_select(0, slots).to(torch::kFloat32) -
                             in.k[l][0][h].index_select(0, p))
                                .abs()
                                .mean()
                                .item<double>();
          EXPECT_LE(ek, tol) << "layer " << l << " head " << h;
        }
      }
    }
}

TEST(MethodContract, FullCacheOnlyReportsWhatItHolds) {
  // 2-bit storage must really be 2 bits per element plus its fp16 scales.
  const ModelShape shape = test::method_shape(1, 2, 1, 64);
  auto st = make_method("int(bits=2,group=64)")->make_state(shape);
  test::SyntheticStream in(shape, 1);
  in.feed(*st, 256);
  MemoryUse m = st->memory();
  EXPECT_EQ(m.payload_bytes, 2 * 256 * 64 / 4);           // K and V, 4 codes per byte
  EXPECT_EQ(m.metadata_bytes, 2 * 256 * 2 * 2);           // K and V: scale + zero, fp16, 1 group
}

TEST(MethodContract, LosslessSettingsReproduceFullCacheLogits) {
  const ModelConfig c = test::tiny_model_config();
  Model model = Model::random(c, 21);
  torch::Tensor ids = torch::randint(0, c.vocab_size, {1, kContractTokens}, torch::kLong);
  std::vector<std::string> lossless = kLosslessChains, compressing;
  for (const MethodEntry& e : method_registry()) {
    lossless.insert(lossless.end(), e.contract.lossless.begin(), e.contract.lossless.end());
    compressing.insert(compressing.end(), e.contract.compressing.begin(),
                       e.contract.compressing.end());
  }
  for (int64_t chunk : {30, 8, 1}) {
    auto full = make_method("full")->make_state(model.shape());
    torch::Tensor ref = test::run_logits(model, *full, ids, kContractPrompt, chunk);
    for (const std::string& spec : lossless) {
      auto st = make_method(spec)->make_state(model.shape());
      torch::Tensor got = test::run_logits(model, *st, ids, kContractPrompt, chunk);
      EXPECT_LT((got - ref).abs().max().item<double>(), 1e-5) << spec << " chunk " << chunk;
    }
    // The comparison is not vacuous: compressing settings change the logits.
    for (const std::string& spec : compressing) {
      auto st = make_method(spec)->make_state(model.shape());
      torch::Tensor got = test::run_logits(model, *st, ids, kContractPrompt, chunk);
      EXPECT_GT((got - ref).abs().max().item<double>(), 1e-4) << spec << " chunk " << chunk;
    }
  }
}

}  // namespace
}  // namespace kvb
