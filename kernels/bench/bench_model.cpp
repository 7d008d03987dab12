// Model-level benchmarks: prefill and decode tokens/s on the SmolLM2-135M shape (random weights),
// reported next to the machine's fp32 GEMM rate measured in the same run.
//
//   kvbench_bench --benchmark_filter='Gemm|Prefill|Decode'
//
// Counters: tok/s, GFLOP/s (useful FLOPs only, see forward_flops), and for prefill the fraction
// of the GEMM rate measured by BM_GemmFp32 in this process.
#include <benchmark/benchmark.h>

#include <chrono>
#include <memory>

#include "harness/model/model.h"
#include "kernels/bench/bench_util.h"
#include "kernels/cpu/gemv.h"
#include "harness/model/shapes.h"
#include "methods/quant/full.h"

namespace {

using kvb::Model;

double g_gemm_gflops = 0;  // set by BM_GemmFp32, read by the model benchmarks

const Model& smollm() {
  static std::unique_ptr<Model> m;
  if (!m) m = std::make_unique<Model>(Model::random(kvb::smollm2_135m_shape(), 1234));
  return *m;
}

// The reference: fp32 GEMM of the shape that dominates prefill (2048 tokens x 576 -> 1536).
void BM_GemmFp32(benchmark::State& state) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  torch::Tensor a = torch::randn({m, k}), b = torch::randn({k, n});
  torch::Tensor c = torch::empty({m, n});
  for (auto _ : state) {
    torch::matmul_out(c, a, b);
    benchmark::DoNotOptimize(c.data_ptr<float>());
  }
  const double flops = 2.0 * static_cast<double>(m * k * n);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  double secs = 0;
  {
    // Best-of-5 rate as the reference figure for the model benchmarks below.
    for (int i = 0; i < 5; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      torch::matmul_out(c, a, b);
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      secs = i == 0 ? s : std::min(secs, s);
    }
  }
  g_gemm_gflops = std::max(g_gemm_gflops, flops / secs * 1e-9);
  state.counters["best_GFLOP/s"] = flops / secs * 1e-9;
}
BENCHMARK(BM_GemmFp32)->Args({2048, 576, 1536})->Args({1024, 1024, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Prefill(benchmark::State& state) {
  c10::InferenceMode guard;
  const Model& model = smollm();
  const int64_t T = state.range(0), chunk = state.range(1) ? state.range(1) : T;
  torch::Tensor ids = torch::randint(0, model.config().vocab_size, {1, T}, torch::kLong);
  kvb::FullMethod full;
  double best = 1e30;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    auto cache = full.make_state(model.shape());
    for (int64_t s = 0; s < T; s += chunk) {
      torch::Tensor logits = model.forward(ids.narrow(1, s, chunk), torch::arange(s, s + chunk), *cache);
      benchmark::DoNotOptimize(logits.data_ptr<float>());
    }
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  // Useful FLOPs of the prompt (causal attention, one LM-head row as a generate call needs).
  const double flops = kvb::forward_flops(model.config(), T, 0, 1);
  state.counters["tok/s"] = static_cast<double>(T) / best;
  state.counters["GFLOP/s"] = flops / best * 1e-9;
  state.counters["gemm_GFLOP/s"] = g_gemm_gflops;
  state.counters["frac_of_gemm"] = g_gemm_gflops > 0 ? flops / best * 1e-9 / g_gemm_gflops : 0;
}
BENCHMARK(BM_Prefill)->Args({2048, 0})->Args({2048, 512})->Unit(benchmark::kSecond)->Iterations(2)->UseRealTime();

// Bytes one decode step must read at least: every weight a token passes through (the layers,
// the final norm and the LM head; one embedding row) and the K and V of `ctx` past slots.
double decode_bytes(const kvb::ModelConfig& c, const kvb::ModelWeights& w, int64_t ctx) {
  double b = 0;
  auto add = [&](const torch::Tensor& t) {
    if (t.defined()) b += static_cast<double>(t.numel() * t.element_size());
  };
  for (const kvb::LayerWeights& L : w.layers) {
    for (const torch::Tensor* t : {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.bq, &L.bk, &L.bv,
                                   &L.q_norm, &L.k_norm, &L.ffn_norm, &L.w_gate, &L.w_up,
                                   &L.w_down})
      add(*t);
  }
  add(w.final_norm);
  add(w.lm_head);
  b += static_cast<double>(c.hidden_size * w.embed.element_size());
  b += 2.0 * static_cast<double>(c.n_layers * c.n_kv_heads * ctx * c.head_dim) * 4;  // fp32 K, V
  return b;
}

// The decode step's matrix-vector products alone: every projection of the 30 layers and the LM
// head once (a token's weight reads, 538 MB), with kernels/cpu/gemv.h (arg 0) or torch::mv
// (arg 1, OpenBLAS), against the read bandwidth measured in alternating rounds.
// Every matrix a decode step multiplies (the layers' projections, the LM head) with an input row
// each: one pass reads a token's weights once.
struct WeightPass {
  std::vector<const torch::Tensor*> mats;
  std::vector<torch::Tensor> xs;
  double bytes = 0;
  explicit WeightPass(const Model& model) {
    for (const kvb::LayerWeights& L : model.weights().layers)
      for (const torch::Tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
        mats.push_back(t);
    mats.push_back(&model.weights().lm_head);
    for (const torch::Tensor* w : mats) {
      xs.push_back(torch::randn({w->size(1)}));
      bytes += static_cast<double>(w->numel() * w->element_size());
    }
  }
  // Seconds for one pass, with kernels/cpu/gemv.h or torch::mv.
  double seconds(bool torch_mv) const {
    const auto t0 = kvb::bench::Clock::now();
    for (size_t i = 0; i < mats.size(); ++i) {
      torch::Tensor y = torch_mv ? torch::mv(*mats[i], xs[i]) : kvb::kernels::gemv(*mats[i], xs[i]);
      benchmark::DoNotOptimize(y.data_ptr<float>());
    }
    return kvb::bench::seconds_since(t0);
  }
};

void BM_DecodeGemv(benchmark::State& state) {
  c10::InferenceMode guard;
  kvb::bench::use_bench_threads();
  const Model& model = smollm();
  const bool torch_mv = state.range(0) == 1;
  const WeightPass wp(model);
  const double bytes = wp.bytes;
  auto& bw = kvb::bench::MemBandwidth::get();
  wp.seconds(torch_mv);
  std::vector<double> tp, tr;
  for (auto _ : state) {
    tp.push_back(wp.seconds(torch_mv));
    state.SetIterationTime(tp.back());
    tr.push_back(bw.read_seconds());
  }
  const double gbs = bytes / kvb::bench::median(tp) * 1e-9;
  const double read_gbs = kvb::bench::MemBandwidth::kBytes / kvb::bench::median(tr) * 1e-9;
  state.counters["MB"] = bytes * 1e-6;
  state.counters["GB/s"] = gbs;
  state.counters["read_GB/s"] = read_gbs;
  state.counters["frac_roofline"] = gbs / read_gbs;
  state.counters["omp_threads"] = at::get_num_threads();
}
BENCHMARK(BM_DecodeGemv)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->Iterations(9)->UseManualTime();

// One decode step at `ctx` tokens of full fp32 cache, against the bandwidth roofline: the bytes
// a step must read (decode_bytes) over the read bandwidth measured in the same rounds, the faster
// of bench_util.h's 256 MiB read and a gemv pass over the model's own weights, on the same
// threads. Rounds alternate 16 decode steps (each from the same cloned cache) with both reads,
// so load from other processes hits all alike.
//   ms_per_token     median over the rounds of (16 steps' time) / 16
//   MB_per_token     decode_bytes at ctx + 8 (the middle of the 16 steps); bytes_moved the same
//                    in bytes, GB/s that over ms_per_token
//   read_GB/s        the bandwidth reference: max(probe_GB/s, weights_GB/s), each the median of
//                    the rounds
//   roofline_ms      MB_per_token / read_GB/s: the fastest a step could be
//   frac_roofline    roofline_ms / ms_per_token (the target: >= 0.5)
void BM_Decode(benchmark::State& state) {
  c10::InferenceMode guard;
  kvb::bench::use_bench_threads();
  const Model& model = smollm();
  const int64_t ctx = state.range(0);
  const int64_t steps = 16;
  kvb::FullMethod full;
  auto base = full.make_state(model.shape());
  torch::Tensor ids = torch::randint(0, model.config().vocab_size, {1, ctx}, torch::kLong);
  for (int64_t s = 0; s < ctx; s += 512) {
    int64_t t = std::min<int64_t>(512, ctx - s);
    model.forward(ids.narrow(1, s, t), torch::arange(s, s + t), *base);
  }
  auto run_steps = [&] {
    auto cache = base->clone();
    const auto t0 = kvb::bench::Clock::now();
    for (int64_t i = 0; i < steps; ++i) {
      torch::Tensor tok = torch::full({1, 1}, (i * 7919) % model.config().vocab_size, torch::kLong);
      torch::Tensor logits = model.forward(tok, torch::full({1}, ctx + i, torch::kLong), *cache);
      benchmark::DoNotOptimize(logits.data_ptr<float>());
    }
    return kvb::bench::seconds_since(t0) / static_cast<double>(steps);
  };
  auto& bw = kvb::bench::MemBandwidth::get();
  const WeightPass wp(model);
  run_steps();  // warm-up
  std::vector<double> t_step, t_read, t_weights;
  for (auto _ : state) {
    const double s = run_steps();
    t_step.push_back(s);
    state.SetIterationTime(s * static_cast<double>(steps));
    t_read.push_back(bw.read_seconds());
    t_weights.push_back(wp.seconds(false));
  }
  const double bytes = decode_bytes(model.config(), model.weights(), ctx + steps / 2);
  const double step_s = kvb::bench::median(t_step);
  // The reference: the faster of the probe's read of its 256 MiB and gemv's read of this
  // model's own weights, both in these rounds (on this VM either has been the faster one).
  const double probe_gbs = kvb::bench::MemBandwidth::kBytes / kvb::bench::median(t_read) * 1e-9;
  const double weights_gbs = wp.bytes / kvb::bench::median(t_weights) * 1e-9;
  const double read_gbs = std::max(probe_gbs, weights_gbs);
  const double roof_s = bytes / (read_gbs * 1e9);
  state.counters["tok/s"] = 1.0 / step_s;
  state.counters["ms_per_token"] = step_s * 1e3;
  state.counters["MB_per_token"] = bytes * 1e-6;
  state.counters["GB/s"] = bytes / step_s * 1e-9;  // what a step reads, per second
  state.counters["bytes_moved"] = bytes;
  state.counters["read_GB/s"] = read_gbs;
  state.counters["probe_GB/s"] = probe_gbs;
  state.counters["weights_GB/s"] = weights_gbs;
  state.counters["roofline_ms"] = roof_s * 1e3;
  state.counters["frac_roofline"] = roof_s / step_s;
  state.counters["omp_threads"] = at::get_num_threads();
}
BENCHMARK(BM_Decode)->Arg(2048)->Unit(benchmark::kMillisecond)->Iterations(7)->UseManualTime();

}  // namespace


