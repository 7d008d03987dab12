// Method spec strings ("snapkv(budget=256)+kivi(bits=2)"): the input is the spec, optionally
// after one control byte 0x01..0x05 choosing the compute dtype and the shape (below). Entry
// points: parse_spec, canonicalize and make_method (what `kvbench run` does for $.methods and
// `kvbench methods --describe` for its argument), then what describe prints (spec,
// effective_spec, promised_memory on the CLI's default shape) and a short synthetic stream
// through a state on a tiny shape: the state must hold what the method promised.
//
// Findings checked besides crashes: the canonical spec must parse back to itself
// (KVMethod::spec()'s contract); memory() after the stream must match promised_memory() (exact
// when promise_is_exact(), else an upper bound; metadata within 1%, as the contract test).
#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "methods/registry.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using kvb::fuzz::report;

kvb::ModelShape make_shape(int64_t layers, int64_t hq, int64_t hkv, int64_t d, int64_t max_pos) {
  kvb::ModelShape s;
  s.n_layers = layers;
  s.n_head_q = hq;
  s.n_head_kv = hkv;
  s.head_dim = d;
  s.max_position = max_pos;
  return s;
}

// The engine's order per layer: view, append, observe (random causal softmax weights).
void feed(kvb::KVCacheState& st, const kvb::ModelShape& shape, int64_t& n, int64_t t,
          torch::ScalarType dtype, at::Generator& gen) {
  const auto opts = torch::TensorOptions().dtype(dtype);
  torch::Tensor pos = torch::arange(n, n + t, torch::kLong);
  for (int l = 0; l < shape.n_layers; ++l) {
    const int64_t s = st.view(l).slots();
    torch::Tensor k = torch::randn({1, shape.n_head_kv, t, shape.head_dim}, gen).to(opts);
    torch::Tensor v = torch::randn({1, shape.n_head_kv, t, shape.head_dim}, gen).to(opts);
    torch::Tensor q = torch::randn({1, shape.n_head_q, t, shape.head_dim}, gen).to(opts);
    st.append(l, kvb::KVAppend{k, k, v, pos, q});
    if (st.wants_attention(l)) {
      torch::Tensor logits = torch::randn({1, shape.n_head_q, t, s + t}, gen);
      torch::Tensor mask = torch::ones({t, t}, torch::kBool).triu(1);
      logits.narrow(3, s, t).masked_fill_(mask, -std::numeric_limits<float>::infinity());
      st.observe(l, torch::softmax(logits, -1).to(opts));
    }
    (void)st.view(l);
  }
  n += t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvb::fuzz;
  std::string spec(reinterpret_cast<const char*>(data), size);
  int mode = 0;
  if (!spec.empty() && spec[0] >= 1 && spec[0] <= 5) {
    mode = spec[0];
    spec.erase(0, 1);
  }
  const torch::ScalarType compute = mode == 1 || mode == 4 ? torch::kBFloat16
                                    : mode == 2            ? torch::kFloat16
                                                           : torch::kFloat32;
  // Tiny shapes for the stream: a 16-wide head, or a 12-wide one with 3 query heads on 1 KV head.
  const kvb::ModelShape tiny =
      mode >= 3 ? make_shape(1, 3, 1, 12, 64) : make_shape(2, 4, 2, 16, 64);

  expect_input_errors([&] { (void)kvb::join_spec(kvb::parse_spec(spec)); });
  std::unique_ptr<kvb::KVMethod> m;
  if (!expect_input_errors([&] {
        (void)kvb::canonicalize(spec, compute);
        m = kvb::make_method(spec, compute);
        (void)kvb::acts_only_at_end_prefill(spec);
      }))
    return 0;

  // Accepted: from here on nothing may throw.
  const std::string canonical = m->spec();
  std::string again;
  try {
    again = kvb::make_method(canonical, compute)->spec();
  } catch (const std::exception& e) {
    report("canonical spec does not parse", spec + " -> " + canonical + ": " + e.what());
  }
  if (again != canonical)
    report("canonical spec not a fixed point", spec + " -> " + canonical + " -> " + again);

  // `kvbench methods --describe` on its default shape (SmolLM2-135M, 4096 tokens). A spec may
  // be refused for a shape (InputError: a group that does not divide the head); it may not fail
  // otherwise.
  const kvb::ModelShape describe = make_shape(30, 9, 3, 64, 4096);
  (void)m->promise_is_exact();
  expect_input_errors([&] {
    (void)m->effective_spec(describe);
    (void)m->promised_memory(describe, 4096, compute);
  });

  // A prompt of 10 tokens in chunks of 4, end_prefill(), then 3 decoded one at a time.
  int64_t n = 0;
  kvb::MemoryUse got;
  if (!expect_input_errors([&] {
        (void)m->effective_spec(tiny);
        auto st = m->make_state(tiny);
        auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
        for (int64_t t : {4, 4, 2}) feed(*st, tiny, n, t, compute, gen);
        st->end_prefill();
        for (int i = 0; i < 3; ++i) feed(*st, tiny, n, 1, compute, gen);
        got = st->memory();
        (void)st->clone()->memory();
      }))
    return 0;
  const std::optional<kvb::MemoryUse> want = m->promised_memory(tiny, n, compute, 10);
  if (want) {
    const std::string what =
        canonical + ": got payload " + std::to_string(got.payload_bytes) + " metadata " +
        std::to_string(got.metadata_bytes) + " slots " + std::to_string(got.slots) +
        ", promised payload " + std::to_string(want->payload_bytes) + " metadata " +
        std::to_string(want->metadata_bytes) + " slots " + std::to_string(want->slots);
    if (got.tokens_seen != n) report("memory().tokens_seen is not the tokens appended", what);
    if (got.slots != want->slots) report("slots differ from the promise", what);
    if (m->promise_is_exact()) {
      const double meta_tol = 0.01 * static_cast<double>(want->metadata_bytes) + 1;
      if (got.payload_bytes != want->payload_bytes ||
          std::abs(static_cast<double>(got.metadata_bytes - want->metadata_bytes)) > meta_tol)
        report("memory differs from an exact promise", what);
    } else if (got.payload_bytes > want->payload_bytes ||
               got.payload_bytes + got.metadata_bytes >
                   want->payload_bytes + want->metadata_bytes) {
      report("memory exceeds the promised upper bound", what);
    }
  }
  return 0;
}
