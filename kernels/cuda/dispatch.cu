// Runtime dispatch of kernels/cuda/dispatch.h onto the header-only templates of
// kernels/cuda/include/kvb_cuda/. Only the instantiations reachable from here are compiled:
// KIVI bits {2,4} x head_dim {32,64,128} x residual {fp32,fp16}, int bits {2,4,8} x head_dim,
// plain fp16 x head_dim.
#include "kernels/cuda/dispatch.h"

#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cuda/include/kvb_cuda/hadamard.cuh"
#include "kernels/cuda/include/kvb_cuda/int_attention.cuh"
#include "kernels/cuda/include/kvb_cuda/kivi_attention.cuh"
#include "kernels/cuda/include/kvb_cuda/plain_attention.cuh"
#include "kernels/cuda/include/kvb_cuda/quest.cuh"
#include "kernels/cuda/include/kvb_cuda/topk.cuh"

namespace kvb::cuda {
namespace {

using detail::check_cuda;
using detail::DecodeShape;
using detail::Rows;

[[noreturn]] void bad(const char* fn, const std::string& msg) {
  throw std::invalid_argument(std::string("kvb::cuda::") + fn + ": " + msg);
}

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

template <typename T>
Rows<T> rows_of(const DeviceRows& r) {
  Rows<T> out;
  out.base = static_cast<const T*>(r.data);
  out.sb = r.batch_stride;
  out.sh = r.head_stride;
  return out;
}

void need_ptr(const char* fn, const void* p, const char* what) {
  if (p == nullptr) bad(fn, std::string(what) + " is null");
}

bool head_dim_supported(int64_t d) { return d == 32 || d == 64 || d == 128; }

// Checks the query and the cache's outer shape; returns the launch shape.
DecodeShape decode_shape_of(const char* fn, const DecodeQuery& q, int64_t batch, int64_t hkv,
                            int64_t d, int64_t s) {
  if (batch <= 0 || hkv <= 0) bad(fn, "batch " + std::to_string(batch) + " and KV heads " +
                                          std::to_string(hkv) + " must be positive");
  if (!head_dim_supported(d))
    bad(fn, "head_dim " + std::to_string(d) + " has no instantiation (32, 64 or 128)");
  if (q.q_heads <= 0 || q.q_heads % hkv != 0)
    bad(fn, std::to_string(q.q_heads) + " query heads over " + std::to_string(hkv) + " KV heads");
  if (q.rows < 0 || s < 0) bad(fn, "negative query rows or slots");
  need_ptr(fn, q.q, "q");
  need_ptr(fn, q.out, "out");
  need_ptr(fn, q.lse, "lse");
  const DecodeShape p = detail::decode_shape(batch, hkv, q.q_heads / hkv, q.rows, s);
  if (batch > 65535 || hkv * p.chunks > 65535 || p.nblk > INT_MAX ||
      batch * hkv * p.m > INT_MAX)
    bad(fn, "shape exceeds the launch grid (B " + std::to_string(batch) + ", H_kv " +
                std::to_string(hkv) + ", rows per KV head " + std::to_string(p.m) + ", S " +
                std::to_string(s) + ")");
  return p;
}

// Runs f(workspace floats) with the caller's workspace, or one allocated on the stream.
template <typename F>
void with_workspace(const char* fn, size_t need, void* ws, size_t ws_bytes, cudaStream_t st,
                    F&& f) {
  if (ws != nullptr) {
    if (ws_bytes < need)
      bad(fn, "workspace of " + std::to_string(ws_bytes) + " bytes, needs " + std::to_string(need));
    f(static_cast<float*>(ws));
    return;
  }
  void* p = nullptr;
  check_cuda(cudaMallocAsync(&p, need, st), "cudaMallocAsync (decode workspace)");
  try {
    f(static_cast<float*>(p));
  } catch (...) {
    cudaFreeAsync(p, st);
    throw;
  }
  check_cuda(cudaFreeAsync(p, st), "cudaFreeAsync (decode workspace)");
}

// Makes q.device current for the scope (when it is set and not already current).
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    if (device < 0) return;
    check_cuda(cudaGetDevice(&prev_), "cudaGetDevice");
    if (prev_ == device) return;
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
    restore_ = true;
  }
  ~DeviceScope() {
    if (restore_) cudaSetDevice(prev_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int prev_ = 0;
  bool restore_ = false;
};

size_t workspace_bytes(const DecodeShape& p, int64_t d) {
  return static_cast<size_t>(detail::decode_workspace_floats(p, d)) * sizeof(float);
}

// ---- KIVI ----------------------------------------------------------------------------------

struct KiviChecked {
  DecodeShape p;
  int64_t group = 1, gv = 1;
};

KiviChecked check_kivi(const KiviCacheView& c, const DecodeQuery& q) {
  const char* fn = "kivi_decode_attention";
  if (c.bits != 2 && c.bits != 4) bad(fn, "bits " + std::to_string(c.bits) + " (2 or 4)");
  if (c.n_quant_keys < 0 || c.n_residual_keys < 0 || c.n_quant_values < 0 ||
      c.n_residual_values < 0)
    bad(fn, "negative slot counts");
  const int64_t s = c.n_quant_keys + c.n_residual_keys;
  if (s != c.n_quant_values + c.n_residual_values)
    bad(fn, "keys hold " + std::to_string(s) + " slots, values " +
                std::to_string(c.n_quant_values + c.n_residual_values));
  KiviChecked k;
  k.p = decode_shape_of(fn, q, c.batch, c.kv_heads, c.head_dim, s);
  const int64_t d = c.head_dim;
  if (c.n_quant_keys > 0) {
    if (c.group <= 0 || c.n_quant_keys % c.group != 0)
      bad(fn, std::to_string(c.n_quant_keys) + " quantized keys are not whole groups of " +
                  std::to_string(c.group));
    need_ptr(fn, c.key_codes.data, "key codes");
    need_ptr(fn, c.key_scale.data, "key scales");
    need_ptr(fn, c.key_zero.data, "key zeros");
    k.group = c.group;
  }
  if (c.n_quant_values > 0) {
    if (c.value_group <= 0 || d % c.value_group != 0 || c.value_group % (8 / c.bits) != 0)
      bad(fn, "value group " + std::to_string(c.value_group) + " for head_dim " +
                  std::to_string(d));
    need_ptr(fn, c.value_codes.data, "value codes");
    need_ptr(fn, c.value_scale.data, "value scales");
    need_ptr(fn, c.value_zero.data, "value zeros");
    k.gv = c.value_group;
  } else {
    k.gv = d;  // never read
  }
  if (c.n_residual_keys > 0) need_ptr(fn, c.key_residual.data, "key residual");
  if (c.n_residual_values > 0) need_ptr(fn, c.value_residual.data, "value residual");
  return k;
}

template <int BITS, int D, typename Res>
void run_kivi(const KiviCacheView& c, const KiviChecked& k, const DecodeQuery& q, float* ws,
              cudaStream_t st) {
  detail::KiviLoader<BITS, D, Res> ld;
  ld.kq = rows_of<uint8_t>(c.key_codes);
  ld.ks = rows_of<uint16_t>(c.key_scale);
  ld.kz = rows_of<uint16_t>(c.key_zero);
  ld.kr = rows_of<Res>(c.key_residual);
  ld.vq = rows_of<uint8_t>(c.value_codes);
  ld.vs = rows_of<uint16_t>(c.value_scale);
  ld.vz = rows_of<uint16_t>(c.value_zero);
  ld.vr = rows_of<Res>(c.value_residual);
  ld.nq = c.n_quant_keys;
  ld.nqv = c.n_quant_values;
  ld.group = k.group;
  ld.gv = k.gv;
  ld.ngv = D / k.gv;
  detail::launch_decode<D>(k.p, q.q, static_cast<float>(q.scale), ld, ws, q.out, q.lse, st);
}

template <int BITS, typename Res>
void kivi_by_dim(const KiviCacheView& c, const KiviChecked& k, const DecodeQuery& q, float* ws,
                 cudaStream_t st) {
  switch (c.head_dim) {
    case 32: return run_kivi<BITS, 32, Res>(c, k, q, ws, st);
    case 64: return run_kivi<BITS, 64, Res>(c, k, q, ws, st);
    case 128: return run_kivi<BITS, 128, Res>(c, k, q, ws, st);
    default: bad("kivi_decode_attention", "head_dim " + std::to_string(c.head_dim));
  }
}

template <typename Res>
void kivi_by_bits(const KiviCacheView& c, const KiviChecked& k, const DecodeQuery& q, float* ws,
                  cudaStream_t st) {
  if (c.bits == 2)
    kivi_by_dim<2, Res>(c, k, q, ws, st);
  else
    kivi_by_dim<4, Res>(c, k, q, ws, st);
}

// ---- int -----------------------------------------------------------------------------------

DecodeShape check_int(const IntCacheView& c, const DecodeQuery& q) {
  const char* fn = "int_decode_attention";
  if (c.bits != 2 && c.bits != 4 && c.bits != 8)
    bad(fn, "bits " + std::to_string(c.bits) + " (2, 4 or 8)");
  const DecodeShape p = decode_shape_of(fn, q, c.batch, c.kv_heads, c.head_dim, c.slots);
  if (c.group <= 0 || c.head_dim % c.group != 0 || c.group % (8 / c.bits) != 0)
    bad(fn, "group " + std::to_string(c.group) + " for head_dim " + std::to_string(c.head_dim));
  if (c.slots > 0) {
    need_ptr(fn, c.key_codes.data, "key codes");
    need_ptr(fn, c.key_scale.data, "key scales");
    need_ptr(fn, c.key_zero.data, "key zeros");
    need_ptr(fn, c.value_codes.data, "value codes");
    need_ptr(fn, c.value_scale.data, "value scales");
    need_ptr(fn, c.value_zero.data, "value zeros");
  }
  return p;
}

template <int BITS, int D>
void run_int(const IntCacheView& c, const DecodeShape& p, const DecodeQuery& q, float* ws,
             cudaStream_t st) {
  detail::IntLoader<BITS, D> ld;
  ld.kq = rows_of<uint8_t>(c.key_codes);
  ld.vq = rows_of<uint8_t>(c.value_codes);
  ld.ks = rows_of<uint16_t>(c.key_scale);
  ld.kz = rows_of<uint16_t>(c.key_zero);
  ld.vs = rows_of<uint16_t>(c.value_scale);
  ld.vz = rows_of<uint16_t>(c.value_zero);
  ld.group = c.group;
  ld.ng = D / c.group;
  detail::launch_decode<D>(p, q.q, static_cast<float>(q.scale), ld, ws, q.out, q.lse, st);
}

template <int BITS>
void int_by_dim(const IntCacheView& c, const DecodeShape& p, const DecodeQuery& q, float* ws,
                cudaStream_t st) {
  switch (c.head_dim) {
    case 32: return run_int<BITS, 32>(c, p, q, ws, st);
    case 64: return run_int<BITS, 64>(c, p, q, ws, st);
    case 128: return run_int<BITS, 128>(c, p, q, ws, st);
    default: bad("int_decode_attention", "head_dim " + std::to_string(c.head_dim));
  }
}

// ---- plain fp16 ----------------------------------------------------------------------------

template <int D>
void run_plain(const PlainCacheView& c, const DecodeShape& p, const DecodeQuery& q, float* ws,
               cudaStream_t st) {
  detail::PlainHalfLoader<D> ld;
  ld.k = rows_of<__half>(c.keys);
  ld.v = rows_of<__half>(c.values);
  detail::launch_decode<D>(p, q.q, static_cast<float>(q.scale), ld, ws, q.out, q.lse, st);
}

DecodeShape check_plain(const PlainCacheView& c, const DecodeQuery& q) {
  const char* fn = "plain_decode_attention";
  const DecodeShape p = decode_shape_of(fn, q, c.batch, c.kv_heads, c.head_dim, c.slots);
  if (c.slots > 0) {
    need_ptr(fn, c.keys.data, "keys");
    need_ptr(fn, c.values.data, "values");
  }
  return p;
}

// Whether there is nothing to attend to; then out = 0, lse = -inf (or nothing at all).
bool handled_empty(const DecodeShape& p, int64_t d, const DecodeQuery& q, cudaStream_t st) {
  if (p.m == 0) return true;
  if (p.s > 0) return false;
  detail::launch_decode_empty(p.batch * p.hkv * p.m, d, q.out, q.lse, st);
  return true;
}

}  // namespace

size_t kivi_decode_workspace_bytes(const KiviCacheView& c, const DecodeQuery& q) {
  return workspace_bytes(check_kivi(c, q).p, c.head_dim);
}
size_t int_decode_workspace_bytes(const IntCacheView& c, const DecodeQuery& q) {
  return workspace_bytes(check_int(c, q), c.head_dim);
}
size_t plain_decode_workspace_bytes(const PlainCacheView& c, const DecodeQuery& q) {
  return workspace_bytes(check_plain(c, q), c.head_dim);
}

void kivi_decode_attention(const KiviCacheView& c, const DecodeQuery& q, void* workspace,
                           size_t workspace_bytes_given, void* stream) {
  const KiviChecked k = check_kivi(c, q);
  const cudaStream_t st = as_stream(stream);
  const DeviceScope scope(q.device);
  if (handled_empty(k.p, c.head_dim, q, st)) return;
  with_workspace("kivi_decode_attention", workspace_bytes(k.p, c.head_dim), workspace,
                 workspace_bytes_given, st, [&](float* ws) {
                   if (c.residual == ResidualType::kFloat32)
                     kivi_by_bits<float>(c, k, q, ws, st);
                   else
                     kivi_by_bits<__half>(c, k, q, ws, st);
                 });
}

void int_decode_attention(const IntCacheView& c, const DecodeQuery& q, void* workspace,
                          size_t workspace_bytes_given, void* stream) {
  const DecodeShape p = check_int(c, q);
  const cudaStream_t st = as_stream(stream);
  const DeviceScope scope(q.device);
  if (handled_empty(p, c.head_dim, q, st)) return;
  with_workspace("int_decode_attention", workspace_bytes(p, c.head_dim), workspace,
                 workspace_bytes_given, st, [&](float* ws) {
                   switch (c.bits) {
                     case 2: return int_by_dim<2>(c, p, q, ws, st);
                     case 4: return int_by_dim<4>(c, p, q, ws, st);
                     default: return int_by_dim<8>(c, p, q, ws, st);
                   }
                 });
}

void plain_decode_attention(const PlainCacheView& c, const DecodeQuery& q, void* workspace,
                            size_t workspace_bytes_given, void* stream) {
  const DecodeShape p = check_plain(c, q);
  const cudaStream_t st = as_stream(stream);
  const DeviceScope scope(q.device);
  if (handled_empty(p, c.head_dim, q, st)) return;
  with_workspace("plain_decode_attention", workspace_bytes(p, c.head_dim), workspace,
                 workspace_bytes_given, st, [&](float* ws) {
                   switch (c.head_dim) {
                     case 32: return run_plain<32>(c, p, q, ws, st);
                     case 64: return run_plain<64>(c, p, q, ws, st);
                     default: return run_plain<128>(c, p, q, ws, st);
                   }
                 });
}

void fwht_rows(float* x, int64_t rows, int64_t n, void* stream) {
  const char* fn = "fwht_rows";
  if (n <= 0 || (n & (n - 1)) != 0 || n > detail::kFwhtMaxN)
    bad(fn, "n " + std::to_string(n) + " must be a power of 2 up to " +
                std::to_string(detail::kFwhtMaxN));
  if (rows < 0 || rows > INT_MAX) bad(fn, "rows " + std::to_string(rows));
  if (rows == 0) return;
  need_ptr(fn, x, "x");
  const float norm = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
  detail::launch_fwht<float>(x, rows, static_cast<int>(n), norm, as_stream(stream));
}

void topk_rows(const float* x, int64_t rows, int64_t s, int64_t k, int64_t* idx, void* stream) {
  const char* fn = "topk_rows";
  if (k < 0 || k > s) bad(fn, "k " + std::to_string(k) + " for rows of " + std::to_string(s));
  if (rows < 0 || rows > INT_MAX) bad(fn, "rows " + std::to_string(rows));
  if (rows == 0 || k == 0) return;
  need_ptr(fn, x, "x");
  need_ptr(fn, idx, "idx");
  detail::launch_topk(x, rows, s, k, idx, as_stream(stream));
}

void quest_page_scores(const float* q, const float* lo, const float* hi, int64_t batch,
                       int64_t q_heads, int64_t kv_heads, int64_t pages, int64_t head_dim,
                       float* score, void* stream) {
  const char* fn = "quest_page_scores";
  if (batch < 0 || pages < 0 || head_dim <= 0 || kv_heads <= 0 || q_heads <= 0 ||
      q_heads % kv_heads != 0)
    bad(fn, "shape B " + std::to_string(batch) + ", H_q " + std::to_string(q_heads) + ", H_kv " +
                std::to_string(kv_heads) + ", pages " + std::to_string(pages) + ", D " +
                std::to_string(head_dim));
  const int64_t warps = batch * kv_heads * pages;
  if (warps == 0) return;
  if (warps * 32 / detail::kQuestThreads + 1 > INT_MAX) bad(fn, "too many pages for one launch");
  for (const void* p : {static_cast<const void*>(q), static_cast<const void*>(lo),
                        static_cast<const void*>(hi), static_cast<const void*>(score)})
    need_ptr(fn, p, "a pointer");
  detail::launch_quest_scores(q, lo, hi, batch, kv_heads, q_heads / kv_heads, pages, head_dim,
                              score, as_stream(stream));
}

float time_ms_per_call(const std::function<void()>& launch, int iters, void* stream) {
  if (iters <= 0) bad("time_ms_per_call", "iters " + std::to_string(iters));
  const cudaStream_t st = as_stream(stream);
  cudaEvent_t a = nullptr, b = nullptr;
  check_cuda(cudaEventCreate(&a), "cudaEventCreate");
  check_cuda(cudaEventCreate(&b), "cudaEventCreate");
  float ms = 0;
  try {
    launch();  // warm-up
    check_cuda(cudaEventRecord(a, st), "cudaEventRecord");
    for (int i = 0; i < iters; ++i) launch();
    check_cuda(cudaEventRecord(b, st), "cudaEventRecord");
    check_cuda(cudaEventSynchronize(b), "cudaEventSynchronize");
    check_cuda(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
  } catch (...) {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    throw;
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / static_cast<float>(iters);
}

void stream_synchronize(void* stream) {
  check_cuda(cudaStreamSynchronize(as_stream(stream)), "cudaStreamSynchronize");
  check_cuda(cudaGetLastError(), "pending CUDA error");
}

}  // namespace kvb::cuda
