// GPU kernel benchmarks on raw device pointers, reported as a fraction of the device's own
// device-to-device copy bandwidth measured in the same run. Built when the build has CUDA
// kernels; the decode attention benchmarks are registered at run time only when a GPU is present
// (none is listed otherwise), BM_CudaDequantRows reports "no CUDA device".
//
// BM_CudaDecode/<cache>/ctx:<S>: one decode step (T = 1) of a Llama-3-8B-shaped layer (B = 1,
// H_kv = 8, G = 4, D = 128) over S slots: the fused 2-bit KIVI kernel (group 32, value group 32,
// 64 key and 128 value residual slots in fp32) against plain attention over the uncompressed fp16
// cache, both through kernels/cuda/dispatch.h, timed with CUDA events (manual time, 20 calls per
// iteration). Counters: bytes (cache bytes read per call), GB/s, copy_GB/s (device-to-device
// copy of 256 MiB in the same process) and frac_of_copy_bw = GB/s / copy_GB/s.
#include <benchmark/benchmark.h>

#ifdef KVB_HAVE_CUDA_KERNELS
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

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

constexpr int64_t kB = 1, kHkv = 8, kG = 4, kD = 128;

void report(benchmark::State& state, double bytes, float ms) {
  const double gbs = bytes / (ms / 1e3) / 1e9, copy = copy_bandwidth() / 1e9;
  state.counters["bytes"] = bytes;
  state.counters["GB/s"] = gbs;
  state.counters["copy_GB/s"] = copy;
  state.counters["frac_of_copy_bw"] = gbs / copy;
}

struct Query {
  Buf q{static_cast<size_t>(kB * kHkv * kG * kD) * 4};
  Buf out{static_cast<size_t>(kB * kHkv * kG * kD) * 4};
  Buf lse{static_cast<size_t>(kB * kHkv * kG) * 4};
  kvb::cuda::DecodeQuery view() {
    q.fill<float>(0.01f);
    kvb::cuda::DecodeQuery d;
    d.q = static_cast<const float*>(q.p);
    d.q_heads = kHkv * kG;
    d.rows = 1;
    d.scale = 1.0 / std::sqrt(static_cast<double>(kD));
    d.out = static_cast<float*>(out.p);
    d.lse = static_cast<float*>(lse.p);
    return d;
  }
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

void BM_CudaDecodeKivi2(benchmark::State& state, int64_t s) {
  using namespace kvb::cuda;
  const int bits = 2;
  const int64_t nrk = 64, nrv = 128, nq = s - nrk, nqv = s - nrv, group = 32, gv = 32;
  const int64_t bh = kB * kHkv, packed = kD * bits / 8;
  Buf kq(bh * nq * packed), ks(bh * (nq / group) * kD * 2), kz(bh * (nq / group) * kD * 2),
      kr(bh * nrk * kD * 4), vq(bh * nqv * packed), vs(bh * nqv * (kD / gv) * 2),
      vz(bh * nqv * (kD / gv) * 2), vr(bh * nrv * kD * 4);
  kq.random_bytes(1);
  vq.random_bytes(2);
  for (Buf* b : {&ks, &vs}) b->fill<uint16_t>(0x2E66);  // 0.1
  for (Buf* b : {&kz, &vz}) b->fill<uint16_t>(0xB800);  // -0.5
  kr.fill<float>(0.25f);
  vr.fill<float>(-0.25f);
  auto rows = [&](const Buf& b, int64_t n, int64_t x) { return DeviceRows{b.p, kHkv * n * x, n * x}; };
  KiviCacheView v;
  v.bits = bits;
  v.group = group;
  v.value_group = gv;
  v.batch = kB;
  v.kv_heads = kHkv;
  v.head_dim = kD;
  v.n_quant_keys = nq;
  v.n_residual_keys = nrk;
  v.n_quant_values = nqv;
  v.n_residual_values = nrv;
  v.key_codes = rows(kq, nq, packed);
  v.key_scale = rows(ks, nq / group, kD);
  v.key_zero = rows(kz, nq / group, kD);
  v.key_residual = rows(kr, nrk, kD);
  v.value_codes = rows(vq, nqv, packed);
  v.value_scale = rows(vs, nqv, kD / gv);
  v.value_zero = rows(vz, nqv, kD / gv);
  v.value_residual = rows(vr, nrv, kD);
  Query q;
  const DecodeQuery dq = q.view();
  double bytes = 0;
  for (const Buf* b : {&kq, &ks, &kz, &kr, &vq, &vs, &vz, &vr}) bytes += static_cast<double>(b->n);
  time_decode(state, v, dq, kivi_decode_workspace_bytes(v, dq), bytes,
              [](const KiviCacheView& c, const DecodeQuery& d, void* w, size_t n, void* st) {
                kivi_decode_attention(c, d, w, n, st);
              });
}

void BM_CudaDecodePlainHalf(benchmark::State& state, int64_t s) {
  using namespace kvb::cuda;
  const size_t bytes = static_cast<size_t>(kB * kHkv * s * kD) * 2;
  Buf k(bytes), v(bytes);
  k.fill<uint16_t>(0x2E66);
  v.fill<uint16_t>(0xB800);
  PlainCacheView c;
  c.batch = kB;
  c.kv_heads = kHkv;
  c.head_dim = kD;
  c.slots = s;
  c.keys = {k.p, kHkv * s * kD, s * kD};
  c.values = {v.p, kHkv * s * kD, s * kD};
  Query q;
  const DecodeQuery dq = q.view();
  time_decode(state, c, dq, plain_decode_workspace_bytes(c, dq), 2.0 * static_cast<double>(bytes),
              [](const PlainCacheView& cv, const DecodeQuery& d, void* w, size_t n, void* st) {
                plain_decode_attention(cv, d, w, n, st);
              });
}

const bool kDecodeRegistered = [] {
  if (kvb::cuda::device_count() == 0) return false;  // no GPU: nothing to list
  for (const int64_t s : {16384, 32768, 65536}) {
    const std::string ctx = "/ctx:" + std::to_string(s);
    benchmark::RegisterBenchmark(("BM_CudaDecode/kivi2" + ctx).c_str(),
                                 [s](benchmark::State& st) { BM_CudaDecodeKivi2(st, s); })
        ->UseManualTime()
        ->Iterations(10)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("BM_CudaDecode/fp16" + ctx).c_str(),
                                 [s](benchmark::State& st) { BM_CudaDecodePlainHalf(st, s); })
        ->UseManualTime()
        ->Iterations(10)
        ->Unit(benchmark::kMicrosecond);
  }
  return true;
}();

}  // namespace
#endif
