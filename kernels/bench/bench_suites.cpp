// Suite-level benchmark: perplexity throughput (decode-mode protocol, the method and the `full`
// reference pass on the same chunks, as the suite runs it) on the SmolLM2-135M shape with random
// weights, ctx 2048, at chunk=1 (exact decode) and chunk=64.
//
//   kvbench_bench --benchmark_filter='GemmFp32|Perplexity'
//
// Arguments: method index (0 full, 1 kivi(bits=2), 2 snapkv(budget=512)), chunk, text tokens.
// chunk=1 runs 256 tokens per iteration (a 2048-token window at chunk=1 takes minutes on two
// cores); chunk=64 runs both 256 (same work as chunk=1) and 2048 (the full window). tok/s counts
// scored tokens of the method; the reference pass is inside the timing. The machine's reference
// figure is BM_GemmFp32 (kernels/bench/bench_model.cpp) in the same process.
#include <benchmark/benchmark.h>

#include <memory>

#include "harness/model/model.h"
#include "harness/model/shapes.h"
#include "methods/registry.h"
#include "suites/perplexity.h"

namespace {

const char* const kSpecs[] = {"full", "kivi(bits=2)", "snapkv(budget=512)"};

const kvb::Model& smollm_shape() {
  static std::unique_ptr<kvb::Model> m;
  if (!m) m = std::make_unique<kvb::Model>(kvb::Model::random(kvb::smollm2_135m_shape(), 4321));
  return *m;
}

void BM_Perplexity(benchmark::State& state) {
  const kvb::Model& model = smollm_shape();
  const char* spec = kSpecs[state.range(0)];
  if (!kvb::find_method(std::string(spec).substr(0, std::string(spec).find('(')))) {
    state.SkipWithError("method not registered");
    return;
  }
  const auto method = kvb::make_method(spec);
  const auto reference = kvb::make_method("full");
  kvb::PerplexityText text;
  text.prefix = {1};  // a BOS, as a Llama tokenizer adds
  torch::Tensor ids = torch::randint(2, model.config().vocab_size, {state.range(2)}, torch::kLong);
  text.ids.assign(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
  kvb::PerplexityParams p{2048, 0, state.range(1), 1};
  int64_t tokens = 0;
  for (auto _ : state) {
    kvb::PerplexityResult r = kvb::run_perplexity(model, *method, *reference, text, p);
    tokens += r.tokens;
    benchmark::DoNotOptimize(r.ppl);
  }
  state.SetLabel(std::string(spec) + " chunk=" + std::to_string(state.range(1)));
  state.counters["tok/s"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Perplexity)
    ->ArgsProduct({{0, 1, 2}, {1}, {256}})
    ->ArgsProduct({{0, 1, 2}, {64}, {256, 2047}})
    ->Unit(benchmark::kSecond)
    ->UseRealTime()
    ->Iterations(1);

}  // namespace
