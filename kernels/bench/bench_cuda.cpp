// GPU kernel benchmarks on raw device pointers, reported as a fraction of the device's own
// device-to-device copy bandwidth measured in the same run. Built when the build has CUDA
// kernels; the decode attention benchmarks are registered at run time only when a GPU is present
// (none is listed otherwise), BM_CudaDequantRows reports "no CUDA device".
//
// BM_CudaDecode/{kivi,fp16}/hq:/hkv:/d:/ctx:[/bits:]: one decode step (B = 1, T = 1) over a
// layer's cache, for the run's shapes (kvbench_bench --kvb_shapes, bench_main.cpp) and always a
// Llama-3-8B layer (32 query heads, 8 KV heads, head dim 128) at 16K, 32K and 64K tokens, 2 bits:
// the fused KIVI kernel (group 32, value group 32, up to 64+group key and 128 value residual slots
// in fp32) against plain attention over the uncompressed fp16 cache, both through
// kernels/cuda/dispatch.h, timed with CUDA events (manual time, 20 calls per iteration). Counters: bytes (cache bytes read per call), GB/s, copy_GB/s (device-to-device
// copy of 256 MiB in the same process) and frac_of_copy_bw = GB/s / copy_GB/s.
#include <benchmark/benchmark.h>

#ifdef KVB_HAVE_CUDA_KERNELS
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/bench/bench_util.h"
#include "kernels/cuda/dequant.h"
#include "kernels/cuda/dispatch.h"

namespace {

void BM_CudaDequantRows(benchmark::State& state) {
  using namespace kvb::cuda;
  if (device_count() == 0) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const int bits = static_cast<int>(state.range(0));
  const int64_t rows = 32 * 8 * 4096, d = 128, group = 32;  // 32 layers x 8 KV heads x 4K tokens
  const size_t code_bytes = rows * d * bits / 8, meta = rows * (d / group) * 2, out_bytes = rows * d * 4;
  void* c = device_alloc(code_bytes);
  void* s = device_alloc(meta);
  void* z = device_alloc(meta);
  void* o = device_alloc(out_bytes);
  void* o2 = device_alloc(out_bytes);
  std::vector<uint8_t> zeros(std::max(code_bytes, meta), 0);
  copy_to_device(c, zeros.data(), code_bytes);
  copy_to_device(s, zeros.data(), meta);
  copy_to_device(z, zeros.data(), meta);
  float ms = 0;
  for (auto _ : state) {
    ms = time_dequantize_rows(static_cast<uint8_t*>(c), static_cast<uint16_t*>(s), static_cast<uint16_t*>(z), rows,
                              d, bits, group, static_cast<float*>(o), 20) / 20;
    state.SetIterationTime(ms / 1e3);
  }
  const float copy_ms = time_device_copy(o2, o, out_bytes, 20) / 20;
  const double moved = static_cast<double>(code_bytes + 2 * meta + out_bytes);
  state.counters["GB/s"] = moved / (ms / 1e3) / 1e9;
  state.counters["copy_GB/s"] = 2.0 * out_bytes / (copy_ms / 1e3) / 1e9;
  state.counters["frac_of_copy_bw"] = (moved / ms) / (2.0 * out_bytes / copy_ms);
  for (void* p : {c, s, z, o, o2}) device_free(p);
}
BENCHMARK(BM_CudaDequantRows)->Arg(2)->Arg(4)->Arg(8)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Device memory with random bytes (codes), or a repeated 16-bit or 32-bit pattern.
struct Buf {
  void* p = nullptr;
  size_t n = 0;
  explicit Buf(size_t bytes) : p(kvb::cuda::device_alloc(std::max<size_t>(bytes, 1))), n(bytes) {}
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() { kvb::cuda::device_free(p); }
  template <typename T>
  void fill(T v) {
    std::vector<T> h(n / sizeof(T), v);
    kvb::cuda::copy_to_device(p, h.data(), h.size() * sizeof(T));
  }
  void random_bytes(uint32_t seed) {
    std::vector<uint8_t> h(n);
    std::mt19937 g(seed);
    for (auto& b : h) b = static_cast<uint8_t>(g());
    kvb::cuda::copy_to_device(p, h.data(), n);
  }
};

// Device-to-device copy bandwidth (read + write bytes per second), measured once per process.
double copy_bandwidth() {
  static const double bw = [] {
    const size_t bytes = size_t{256} << 20;
    Buf a(bytes), b(bytes);
    const float ms = kvb::cuda::time_device_copy(b.p, a.p, bytes, 20) / 20;
    return 2.0 * static_cast<double>(bytes) / (ms / 1e3);
  }();
  return bw;
}

using kvb::bench::KernelShape;

void report(benchmark::State& state, double bytes, float ms) {
  const double gbs = bytes / (ms / 1e3) / 1e9, copy = copy_bandwidth() / 1e9;
  state.counters["bytes"] = bytes;
  state.counters["GB/s"] = gbs;
  state.counters["copy_GB/s"] = copy;
  state.counters["frac_of_copy_bw"] = gbs / copy;
}

// q [1, H_q, 1, D] and the out / lse buffers of one decode step.
struct Query {
  explicit Query(const KernelShape& s)
      : q(static_cast<size_t>(s.heads * s.head_dim) * 4),
        out(static_cast<size_t>(s.heads * s.head_dim) * 4),
        lse(static_cast<size_t>(s.heads) * 4) {
    q.fill<float>(0.01f);
    d.q = static_cast<const float*>(q.p);
    d.q_heads = s.heads;
    d.rows = 1;
    d.scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
    d.out = static_cast<float*>(out.p);
    d.lse = static_cast<float*>(lse.p);
  }
  Buf q, out, lse;
  kvb::cuda::DecodeQuery d;
};

template <typename View, typename Call>
void time_decode(benchmark::State& state, const View& v, const kvb::cuda::DecodeQuery& q,
                 size_t ws_bytes, double bytes, Call call) {
  Buf ws(ws_bytes);
  float ms = 0;
  for (auto _ : state) {
    ms = kvb::cuda::time_ms_per_call([&] { call(v, q, ws.p, ws_bytes, nullptr); }, 20);
    state.SetIterationTime(ms / 1e3);
  }
  report(state, bytes, ms);
}

// Fused KIVI: B = 1, group 32, value group 32, 64 key and 128 value residual slots (fp32) of the
// context (fewer for short contexts), random codes, fixed scales.
void BM_CudaDecodeKivi(benchmark::State& state, const KernelShape& sh) {
  using namespace kvb::cuda;
  const int bits = sh.bits;
  const int64_t s = sh.context, d = sh.head_dim, hkv = sh.kv_heads, group = 32, gv = 32;
  // Nq a whole number of groups: the key residual is 64 + S % group slots (all of a short S).
  const int64_t nrk = s % group + 64 <= s ? s % group + 64 : s;
  const int64_t nq = s - nrk, nrv = std::min<int64_t>(128, s), nqv = s - nrv;
  const int64_t packed = d * bits / 8;
  Buf kq(hkv * nq * packed), ks(hkv * (nq / group) * d * 2), kz(hkv * (nq / group) * d * 2),
      kr(hkv * nrk * d * 4), vq(hkv * nqv * packed), vs(hkv * nqv * (d / gv) * 2),
      vz(hkv * nqv * (d / gv) * 2), vr(hkv * nrv * d * 4);
  kq.random_bytes(1);
  vq.random_bytes(2);
  for (Buf* b : {&ks, &vs}) b->fill<uint16_t>(0x2E66);  // 0.1
  for (Buf* b : {&kz, &vz}) b->fill<uint16_t>(0xB800);  // -0.5
  kr.fill<float>(0.25f);
  vr.fill<float>(-0.25f);
  auto rows = [&](const Buf& b, int64_t n, int64_t x) { return DeviceRows{b.p, hkv * n * x, n * x}; };
  KiviCacheView v;
  v.bits = bits;
  v.group = group;
  v.value_group = gv;
  v.batch = 1;
  v.kv_heads = hkv;
  v.head_dim = d;
  v.n_quant_keys = nq;
  v.n_residual_keys = nrk;
  v.n_quant_values = nqv;
  v.n_residual_values = nrv;
  v.key_codes = rows(kq, nq, packed);
  v.key_scale = rows(ks, nq / group, d);
  v.key_zero = rows(kz, nq / group, d);
  v.key_residual = rows(kr, nrk, d);
  v.value_codes = rows(vq, nqv, packed);
  v.value_scale = rows(vs, nqv, d / gv);
  v.value_zero = rows(vz, nqv, d / gv);
  v.value_residual = rows(vr, nrv, d);
  Query q(sh);
  double bytes = 0;
  for (const Buf* b : {&kq, &ks, &kz, &kr, &vq, &vs, &vz, &vr}) bytes += static_cast<double>(b->n);
  time_decode(state, v, q.d, kivi_decode_workspace_bytes(v, q.d), bytes,
              [](const KiviCacheView& c, const DecodeQuery& dq, void* w, size_t n, void* st) {
                kivi_decode_attention(c, dq, w, n, st);
              });
}

// Plain attention over the uncompressed fp16 cache of the same shape (the baseline).
void BM_CudaDecodePlainHalf(benchmark::State& state, const KernelShape& sh) {
  using namespace kvb::cuda;
  const int64_t s = sh.context, d = sh.head_dim, hkv = sh.kv_heads;
  const size_t bytes = static_cast<size_t>(hkv * s * d) * 2;
  Buf k(bytes), v(bytes);
  k.fill<uint16_t>(0x2E66);
  v.fill<uint16_t>(0xB800);
  PlainCacheView c;
  c.batch = 1;
  c.kv_heads = hkv;
  c.head_dim = d;
  c.slots = s;
  c.keys = {k.p, hkv * s * d, s * d};
  c.values = {v.p, hkv * s * d, s * d};
  Query q(sh);
  time_decode(state, c, q.d, plain_decode_workspace_bytes(c, q.d), 2.0 * static_cast<double>(bytes),
              [](const PlainCacheView& cv, const DecodeQuery& dq, void* w, size_t n, void* st) {
                plain_decode_attention(cv, dq, w, n, st);
              });
}

// The run's shapes (bench_main.cpp) plus the comparison: a Llama-3-8B layer (32 query
// heads, 8 KV heads, head dim 128) at 16K, 32K and 64K, 2 bits. Head dims without a CUDA
// instantiation are left out; nothing is registered without a GPU.
void register_shapes(const std::vector<KernelShape>& run_shapes) {
  if (kvb::cuda::device_count() == 0) return;
  std::vector<KernelShape> shapes = run_shapes;
  for (const int64_t ctx : {16384, 32768, 65536}) {
    KernelShape s;
    s.heads = 32;
    s.kv_heads = 8;
    s.head_dim = 128;
    s.context = ctx;
    s.bits = 2;
    shapes.push_back(s);
  }
  std::vector<std::string> plain_done;
  for (const KernelShape& s : shapes) {
    if (s.head_dim != 32 && s.head_dim != 64 && s.head_dim != 128) continue;
    if (s.context < 1 || s.kv_heads < 1 || s.heads % s.kv_heads != 0) continue;
    benchmark::RegisterBenchmark(("BM_CudaDecode/kivi/" + s.name()).c_str(),
                                 [s](benchmark::State& st) { BM_CudaDecodeKivi(st, s); })
        ->UseManualTime()
        ->Iterations(10)
        ->Unit(benchmark::kMicrosecond);
    const std::string plain = s.name(false);
    if (std::find(plain_done.begin(), plain_done.end(), plain) != plain_done.end()) continue;
    plain_done.push_back(plain);
    benchmark::RegisterBenchmark(("BM_CudaDecode/fp16/" + plain).c_str(),
                                 [s](benchmark::State& st) { BM_CudaDecodePlainHalf(st, s); })
        ->UseManualTime()
        ->Iterations(10)
        ->Unit(benchmark::kMicrosecond);
  }
}

const bool kShapesRegistered = kvb::bench::add_shape_registrar(&register_shapes);

}  // namespace
#endif
