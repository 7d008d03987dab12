// Storage stages under a chain's evictions (issue 19): dropping slots never quantizes a kept slot
// again (its stored codes, scales and zero points stay as they were: its dequantized rows are
// bitwise the same), KIVI keeps its rule for what is full precision — the keys of the current
// block of `residual` tokens, the values of the `residual` latest tokens — whatever was dropped,
// and memory() counts what is held. Also: the storage dtype follows the run's compute dtype,
// one-shot stages are known to the registry, SnapKV's promise counts the tokens decoded after its
// prompt, and the parameters a shape decides are recorded.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "methods/evict/score_selector.h"
#include "methods/registry.h"
#include "tests/methods_test_util.h"

namespace kvb {
namespace {

using test::method_shape;

std::unique_ptr<SlotStore> make_store(const std::string& spec, const ModelShape& shape) {
  auto m = make_method(spec);
  const auto* storage = dynamic_cast<const StorageMethod*>(m.get());
  EXPECT_NE(storage, nullptr) << spec;
  return storage->make_store(shape);
}

// Appends t tokens (positions n..n+t-1) of seeded random keys/values to every layer.
struct Feeder {
  ModelShape shape;
  torch::Generator gen;
  torch::ScalarType dtype = torch::kFloat32;
  int64_t n = 0;
  Feeder(const ModelShape& s, uint64_t seed, torch::ScalarType dt = torch::kFloat32)
      : shape(s), gen(at::make_generator<at::CPUGeneratorImpl>(seed)), dtype(dt) {}
  void feed(KVCacheState& st, int64_t t) {
    const int64_t h = shape.n_head_kv, d = shape.head_dim;
    torch::Tensor pos = torch::arange(n, n + t, torch::kLong);
    for (int l = 0; l < shape.n_layers; ++l) {
      torch::Tensor k = (torch::randn({1, h, t, d}, gen) * 2 + 0.5).to(dtype);
      torch::Tensor v = torch::randn({1, h, t, d}, gen).to(dtype);
      torch::Tensor q = torch::randn({1, shape.n_head_q, t, d}, gen).to(dtype);
      st.append(l, KVAppend{k, k, v, pos, q});
    }
    n += t;
  }
};

// Per head, ascending slot indices: every slot of the head but those in drop[h] (each head drops
// the same number).
torch::Tensor keep_all_but(int64_t slots, const std::vector<std::set<int64_t>>& drop) {
  std::vector<torch::Tensor> rows;
  for (const auto& d : drop) {
    std::vector<int64_t> keep;
    for (int64_t j = 0; j < slots; ++j)
      if (!d.count(j)) keep.push_back(j);
    rows.push_back(torch::tensor(keep, torch::kLong));
  }
  return torch::stack(rows).unsqueeze(0);  // [1, H, S']
}

// A copy of a view (a store's view may alias its buffers, which keep() rewrites in place).
KVView snapshot(const KVView& v) {
  KVView c;
  c.k = v.k.clone();
  c.v = v.v.clone();
  c.pos = v.pos.clone();
  return c;
}

// Across keep(idx): the view's kept slots are bitwise what they were (keys, values, positions).
void expect_kept_rows_unchanged(const KVView& before, const KVView& after,
                                const torch::Tensor& idx) {
  auto rows = [&](const torch::Tensor& x) {
    return x.gather(2,
                    idx.unsqueeze(-1).expand({idx.size(0), idx.size(1), idx.size(2), x.size(3)}));
  };
  ASSERT_EQ(after.slots(), idx.size(2));
  EXPECT_TRUE(torch::equal(after.k, rows(before.k))) << "kept keys changed";
  EXPECT_TRUE(torch::equal(after.v, rows(before.v))) << "kept values changed";
  EXPECT_TRUE(torch::equal(after.pos, before.pos.gather(2, idx))) << "kept positions changed";
}

// What a KIVI layer (batch 1, fp32 compute) holds by the rule in token time, per head from the
// positions it holds (= token indices here): full-precision keys are the held tokens of
// [floor(L/R)*R, L), full-precision values those of [L-R, L); a key group is a block of `g`
// tokens below floor(L/R)*R with a held key.
MemoryUse kivi_by_the_rule(const KVView& v, int64_t l, int bits, int64_t g, int64_t gv, int64_t r) {
  const int64_t d = v.k.size(3), dp = d * bits / 8, lq = l / r * r, w = std::min(r, l);
  MemoryUse m;
  for (int64_t h = 0; h < v.k.size(1); ++h) {
    int64_t fk = 0, fv = 0;
    std::set<int64_t> groups;
    for (int64_t i = 0; i < v.slots(); ++i) {
      const int64_t p = v.pos[0][h][i].item<int64_t>();
      if (p >= lq)
        ++fk;
      else
        groups.insert(p / g);
      if (p >= l - w) ++fv;
    }
    const int64_t s = v.slots(), qk = s - fk, qv = s - fv;
    m.payload_bytes += (qk + qv) * dp + (fk + fv) * d * 4;
    m.metadata_bytes += static_cast<int64_t>(groups.size()) * (4 * d + 4) + qv * (d / gv) * 4 +
                        (l - lq) + w + s * 8;
  }
  return m;
}

TEST(MethodStorageKeep, KiviKeptCodesStayBitwiseAcrossEvictions) {
  const ModelShape shape = method_shape(1, 2, 2, 32);
  const int64_t r = 32, g = 8;
  auto st = make_store("kivi(bits=2,group=8,residual=32)", shape);
  Feeder in(shape, 3);
  in.feed(*st, 70);  // 64 quantized keys (8 groups per block), 6 in the residual; 38 values
  for (int i = 0; i < 30; ++i) in.feed(*st, 1);  // 100 tokens: 96 keys quantized, 4 residual
  // Head 0 drops quantized keys of two whole groups (positions 8..15) and a residual value; head 1
  // drops scattered slots, among them a residual key (99) and values in the window.
  std::vector<std::set<int64_t>> drop = {{8, 9, 10, 11, 12, 13, 14, 15, 40, 90},
                                         {0, 17, 18, 33, 50, 51, 70, 71, 85, 99}};
  KVView before = snapshot(st->view(0));
  torch::Tensor idx = keep_all_but(100, drop);
  st->keep(0, idx);
  expect_kept_rows_unchanged(before, st->view(0), idx);
  MemoryUse want = kivi_by_the_rule(st->view(0), 100, 2, g, g, r);
  EXPECT_EQ(st->memory(0).payload_bytes, want.payload_bytes);
  EXPECT_EQ(st->memory(0).metadata_bytes, want.metadata_bytes);
  // Appends across a block boundary (the block with head 1's dropped key is quantized without
  // it), values leaving the window, then more drops: kept slots never change across a keep().
  for (int step = 0; step < 6; ++step) {
    in.feed(*st, step % 2 ? 1 : 11);
    const int64_t s = st->slots(0);
    std::vector<std::set<int64_t>> d = {{1, s - 3, s / 2}, {2, s - 1, s / 3}};
    before = snapshot(st->view(0));
    idx = keep_all_but(s, d);
    st->keep(0, idx);
    SCOPED_TRACE("step " + std::to_string(step));
    expect_kept_rows_unchanged(before, st->view(0), idx);
    want = kivi_by_the_rule(st->view(0), in.n, 2, g, g, r);
    EXPECT_EQ(st->memory(0).payload_bytes, want.payload_bytes);
    EXPECT_EQ(st->memory(0).metadata_bytes, want.metadata_bytes);
  }
  // A snapshot keeps its own codes.
  auto copy = st->clone_store();
  before = snapshot(copy->view(0));
  st->keep(0, keep_all_but(st->slots(0), {{0, 1}, {3, 4}}));
  EXPECT_TRUE(torch::equal(copy->view(0).k, before.k));
}

TEST(MethodStorageKeep, KiviNewestTokensStayFullPrecisionWhenTheKeptCountIsAMultipleOfTheResidual) {
  const ModelShape shape = method_shape(2, 4, 2, 32);
  // 64 slots held = 2 x residual: re-packing the kept slots (the old keep()) quantized all 64
  // keys, the newest among them.
  for (const char* spec : {"streaming(sink=4,window=60)+kivi(bits=2,group=16,residual=32)",
                           "h2o(budget=64,recent=32)+kivi(bits=2,group=16,residual=32)",
                           "random(budget=64)+kivi(bits=2,group=16,residual=32)"}) {
    SCOPED_TRACE(spec);
    auto st = make_method(spec)->make_state(shape);
    test::SyntheticStream in(shape, 9);
    in.feed(*st, 80);
    for (int i = 0; i < 70; ++i) in.feed(*st, 1);  // 150 tokens: 22 in the current key block
    for (int l = 0; l < shape.n_layers; ++l) {
      KVView v = st->view(l);
      ASSERT_EQ(v.slots(), 64);
      for (int64_t h = 0; h < 2; ++h) {
        for (int64_t i = 0; i < v.slots(); ++i) {
          const int64_t p = v.pos[0][h][i].item<int64_t>();
          // By KIVI's rule: keys of [128, 150) and values of [118, 150) in full precision.
          if (p >= 128)
            EXPECT_TRUE(torch::equal(v.k[0][h][i], in.k[l][0][h][p])) << "key at " << p;
          else
            EXPECT_FALSE(torch::equal(v.k[0][h][i], in.k[l][0][h][p])) << "key at " << p;
          if (p >= 118)
            EXPECT_TRUE(torch::equal(v.v[0][h][i], in.v[l][0][h][p])) << "value at " << p;
          else
            EXPECT_FALSE(torch::equal(v.v[0][h][i], in.v[l][0][h][p])) << "value at " << p;
        }
      }
    }
    // StreamingLLM and H2O (recent >= residual) keep every one of the latest 32 tokens.
    if (std::string(spec).rfind("random", 0) != 0) {
      const int64_t newest = st->view(0).pos.ge(118).sum().item<int64_t>();
      EXPECT_EQ(newest, 2 * 32);
    }
  }
}

TEST(MethodStorageKeep, IntAndFullKeepAndDropSwapMoveWholeRows) {
  const ModelShape shape = method_shape(1, 2, 2, 32);
  for (const char* spec : {"int(bits=4,group=32)", "int(bits=2)", "full", "full(dtype=bf16)"}) {
    SCOPED_TRACE(spec);
    auto st = make_store(spec, shape);
    Feeder in(shape, 4);
    in.feed(*st, 40);
    KVView before = snapshot(st->view(0));
    torch::Tensor idx = keep_all_but(40, {{0, 5, 39}, {1, 2, 3}});
    st->keep(0, idx);
    expect_kept_rows_unchanged(before, st->view(0), idx);
    ASSERT_TRUE(st->can_drop_swap());
    before = snapshot(st->view(0));
    st->drop_swap(0, torch::tensor({{4, 36}}, torch::kLong));
    // Slot 4 (head 0) and 36 (head 1) take the last slot's rows; the others stay.
    std::vector<int64_t> h0, h1;
    for (int64_t j = 0; j < 36; ++j) {
      h0.push_back(j == 4 ? 36 : j);
      h1.push_back(j);  // slot 36 was the last: dropped
    }
    torch::Tensor moved = torch::stack({torch::tensor(h0), torch::tensor(h1)}).unsqueeze(0);
    expect_kept_rows_unchanged(before, st->view(0), moved);
  }
}

TEST(MethodStorageKeep, KiviAloneKeepsItsPlainLayoutAndPromise) {
  // No drop: KIVI as published, bytes exactly as before (floor(L/R)*R keys and L-R values).
  const ModelShape shape = method_shape(2, 4, 2, 64);
  auto m = make_method("kivi(bits=2)");
  auto st = m->make_state(shape);
  Feeder in(shape, 5);
  in.feed(*st, 300);
  for (int i = 0; i < 9; ++i) in.feed(*st, 1);
  const MemoryUse got = st->memory(), want = *m->promised_memory(shape, 309);
  EXPECT_EQ(got.payload_bytes, want.payload_bytes);
  EXPECT_EQ(got.metadata_bytes, want.metadata_bytes);
  // 2 layers x 2 heads: keys 256 quantized (16 B) + 53 fp32 (256 B); values 181 quantized
  // (16 B + 2 groups of scale and zero) + 128 fp32.
  EXPECT_EQ(got.payload_bytes, 4 * ((256 + 181) * 16 + (53 + 128) * 256));
}

// A chain whose kept tokens follow from the count (StreamingLLM) promises KIVI's bytes exactly,
// also where a quantized value costs more than a full one (head_dim 4, group 2, bf16): a one-hour
// fuzz_spec run found streaming(sink=0,window=3)+kivi(bits=4,group=2,residual=4) holding 388
// metadata bytes against 772 promised, the bound for data-dependent selectors applied to it.
TEST(MethodStorageKeep, StreamingThenKiviPromisesExactlyWithTinyGroupsInBf16) {
  const ModelShape shape = method_shape(1, 2, 2, 4);
  for (const char* spec : {"streaming(sink=0,window=3)+kivi(bits=4,group=2,residual=4)",
                           "streaming(sink=2,window=5)+kivi(bits=4,group=2,residual=2)"}) {
    SCOPED_TRACE(spec);
    auto m = make_method(spec, torch::kBFloat16);
    ASSERT_TRUE(m->promise_is_exact());
    auto st = m->make_state(shape);
    int64_t n = 0;
    auto feed = [&](int64_t t) {
      torch::Tensor k = torch::randn({1, 2, t, 4}).to(torch::kBFloat16);
      torch::Tensor v = torch::randn({1, 2, t, 4}).to(torch::kBFloat16);
      torch::Tensor q = torch::randn({1, 2, t, 4}).to(torch::kBFloat16);
      st->append(0, KVAppend{k, k, v, torch::arange(n, n + t, torch::kLong), q});
      n += t;
    };
    for (int64_t t : {4, 4, 2}) feed(t);
    st->end_prefill();
    for (int i = 0; i < 3; ++i) feed(1);
    const MemoryUse got = st->memory(), want = *m->promised_memory(shape, n, torch::kBFloat16, 10);
    EXPECT_EQ(got.payload_bytes, want.payload_bytes);
    EXPECT_EQ(got.metadata_bytes, want.metadata_bytes);
    EXPECT_EQ(got.slots, want.slots);
  }
}

// ---- storage dtype ---------------------------------------------------------------------------

TEST(MethodStorageDtype, FullAndSelectorsAloneStoreInTheComputeDtype) {
  const auto bf16 = torch::kBFloat16;
  EXPECT_EQ(make_method("full", bf16)->spec(), "full(dtype=bf16)");
  EXPECT_EQ(make_method("full(dtype=auto)", torch::kHalf)->spec(), "full(dtype=fp16)");
  EXPECT_EQ(make_method("streaming(window=8)", bf16)->spec(),
            "streaming(sink=4,window=8)+full(dtype=bf16)");
  EXPECT_EQ(make_method("h2o(budget=8)+full(dtype=fp32)", bf16)->spec(),
            "h2o(budget=8,recent=4)+full(dtype=fp32)");
  // fp32 runs: every canonical spec as before (cell keys in users' databases).
  EXPECT_EQ(make_method("full")->spec(), "full(dtype=fp32)");
  EXPECT_EQ(make_method("streaming(window=8)")->spec(), "streaming(sink=4,window=8)");
  EXPECT_EQ(make_method("h2o(budget=8)+full(dtype=fp32)")->spec(), "h2o(budget=8,recent=4)");
  EXPECT_EQ(make_method("h2o(budget=8)+full(dtype=bf16)")->spec(),
            "h2o(budget=8,recent=4)+full(dtype=bf16)");
  for (const char* s : {"full", "streaming(window=8)", "snapkv(budget=64)+full", "kivi"}) {
    const std::string canon = make_method(s, bf16)->spec();
    EXPECT_EQ(make_method(canon, bf16)->spec(), canon) << s;
    EXPECT_EQ(make_method(canon)->spec(), canon) << s;  // a bf16 spec means the same in fp32
  }

  const ModelShape shape = method_shape(2, 4, 2, 32);
  for (const char* spec : {"full", "streaming(sink=4,window=60)"}) {
    SCOPED_TRACE(spec);
    auto m = make_method(spec, bf16);
    auto st = m->make_state(shape);
    Feeder in(shape, 6, bf16);
    in.feed(*st, 100);
    KVView v = st->view(0);
    EXPECT_EQ(v.k.scalar_type(), bf16);
    const int64_t slots = std::string(spec) == "full" ? 100 : 64;
    // 2 layers x 2 KV heads x K and V, 2 bytes per element.
    EXPECT_EQ(st->memory().payload_bytes, 2 * 2 * 2 * slots * 32 * 2);
    EXPECT_EQ(m->promised_memory(shape, 100, bf16)->payload_bytes, st->memory().payload_bytes);
  }
}

// ---- one-shot stages ---------------------------------------------------------------------------

TEST(MethodRegistryHooks, ActsOnlyAtEndPrefillFollowsTheStagesRules) {
  for (const char* s : {"snapkv(budget=64)", "snapkv(budget=64)+kivi(bits=2)",
                        "snapkv(budget=160)+h2o(budget=128)+kivi(bits=4)"})
    EXPECT_TRUE(acts_only_at_end_prefill(s)) << s;
  for (const char* s : {"full", "kivi", "int(bits=8)", "h2o(budget=8)", "streaming(window=8)",
                        "knorm(budget=8)+kivi", "random(budget=8)"})
    EXPECT_FALSE(acts_only_at_end_prefill(s)) << s;
  // Derived from each selector's own rule: every registered selector whose score rule decides at
  // end_prefill is one-shot, and no other — besides the one-shot selectors that are not score
  // selectors (AdaKV's head-wise allocation at end_prefill).
  const std::set<std::string> one_shot_unscored = {"adakv"};
  for (const MethodEntry& e : method_registry()) {
    if (e.kind() != StageKind::kSelector) continue;
    const StageSpec st = canonicalize(e.contract.examples.front()).front();
    auto sel = std::get<SelectorFactory>(e.make)(st);
    const auto* score = dynamic_cast<const ScoreSelector*>(sel.get());
    const bool one_shot = score ? score->rule().when == ScoreRule::kEndPrefill
                                : one_shot_unscored.count(e.name) > 0;
    EXPECT_EQ(acts_only_at_end_prefill(e.contract.examples.front()), one_shot) << e.name;
  }
}

// ---- SnapKV's promise --------------------------------------------------------------------------

TEST(MethodSnapKvPromise, HoldsExactlyItsPromiseAfterThePromptAndDecodedTokens) {
  const ModelShape shape = method_shape(3, 8, 2, 32);
  const int64_t prompt = 1024, window = 32, budget = prompt / 8;
  auto m = make_method("snapkv(budget=" + std::to_string(budget) + ")");
  auto st = m->make_state(shape);
  test::SyntheticStream in(shape, 8);
  in.feed_chunked(*st, 512, 256);
  // While the prefill is in flight each layer holds its window's queries (fp32, H_q x window x D)
  // and their positions.
  const int64_t queries = shape.n_layers * (8 * window * 32 * 4 + window * 8);
  EXPECT_EQ(st->memory().metadata_bytes, queries);
  in.feed_chunked(*st, prompt - 512, 256);
  EXPECT_EQ(st->memory().metadata_bytes, queries);
  st->end_prefill();
  for (int i = 0; i < 64; ++i) in.feed(*st, 1);
  const MemoryUse got = st->memory();
  const MemoryUse want = *m->promised_memory(shape, prompt + 64, torch::kFloat32, prompt);
  EXPECT_EQ(got.slots, shape.n_layers * 2 * (budget + 64));
  EXPECT_EQ(got.payload_bytes, want.payload_bytes);
  EXPECT_EQ(got.metadata_bytes, want.metadata_bytes);  // positions only: the queries are freed
  EXPECT_EQ(got.metadata_bytes, shape.n_layers * 2 * (budget + 64) * 8);
  // Without the prompt length the promise is the old one: the decoded tokens not counted.
  EXPECT_LT(m->promised_memory(shape, prompt + 64)->payload_bytes, got.payload_bytes);
  // A prompt within the budget is kept whole: nothing dropped, positions implicit.
  auto small = m->make_state(shape);
  test::SyntheticStream in2(shape, 8);
  in2.feed(*small, 100);
  small->end_prefill();
  for (int i = 0; i < 50; ++i) in2.feed(*small, 1);
  const MemoryUse s = small->memory(), p = *m->promised_memory(shape, 150, torch::kFloat32, 100);
  EXPECT_EQ(s.payload_bytes, p.payload_bytes);
  EXPECT_EQ(s.metadata_bytes, p.metadata_bytes);
  EXPECT_EQ(s.metadata_bytes, 0);
}

TEST(MethodSnapKvPromise, SnapKvThenKiviHoldsExactlyItsPromiseOnceResidualTokensWereDecoded) {
  // Right after the prompt, which prompt tokens SnapKV keeps in KIVI's full-precision range
  // depends on the votes (the promise bounds it); R decoded tokens later it is exact.
  const ModelShape shape = method_shape(2, 4, 2, 64);
  auto m = make_method("snapkv(budget=256)+kivi(bits=2)");
  auto st = m->make_state(shape);
  test::SyntheticStream in(shape, 10);
  in.feed_chunked(*st, 1000, 256);
  st->end_prefill();
  const MemoryUse after_prompt = st->memory(), bound = *m->promised_memory(shape, 1000);
  EXPECT_LE(after_prompt.payload_bytes, bound.payload_bytes);
  EXPECT_LE(after_prompt.payload_bytes + after_prompt.metadata_bytes,
            bound.payload_bytes + bound.metadata_bytes);
  for (int i = 0; i < 180; ++i) in.feed(*st, 1);  // 1180: the block [1152, 1180) all decoded
  const MemoryUse got = st->memory();
  const MemoryUse want = *m->promised_memory(shape, 1180, torch::kFloat32, 1000);
  EXPECT_EQ(got.payload_bytes, want.payload_bytes);
  EXPECT_LE(got.metadata_bytes, want.metadata_bytes);  // the key groups: an upper bound
  EXPECT_GE(static_cast<double>(got.metadata_bytes),
            0.8 * static_cast<double>(want.metadata_bytes));
}

// ---- parameters a shape decides
// ------------------------------------------------------------------

TEST(MethodEffectiveSpec, RecordsTheParametersReallyUsedOnAShape) {
  const ModelShape narrow = method_shape(1, 4, 2, 32), wide = method_shape(1, 4, 2, 128);
  EXPECT_EQ(make_method("int(group=64)")->effective_spec(narrow), "int(bits=4,group=32)");
  EXPECT_EQ(make_method("int(group=64)")->effective_spec(wide), "int(bits=4,group=64)");
  EXPECT_EQ(make_method("int(group=64)")->spec(), "int(bits=4,group=64)");
  EXPECT_EQ(make_method("h2o(budget=8)+int(bits=2)")->effective_spec(narrow),
            "h2o(budget=8,recent=4)+int(bits=2,group=32)");
  EXPECT_EQ(make_method("kivi(group=64,residual=128)")->effective_spec(narrow),
            "kivi(bits=2,group=64,residual=128,value_group=32)");
  EXPECT_EQ(make_method("kivi")->effective_spec(narrow), "kivi(bits=2,group=32,residual=128)");
  EXPECT_EQ(make_method("full")->effective_spec(narrow), "full(dtype=fp32)");
  EXPECT_EQ(make_method("streaming(window=8)")->effective_spec(narrow),
            "streaming(sink=4,window=8)");
}

}  // namespace
}  // namespace kvb
