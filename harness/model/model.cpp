#include "harness/model/model.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <string_view>

#include <ATen/CPUGeneratorImpl.h>

#include "common/check.h"
#include "common/json_io.h"
#include "harness/model/safetensors.h"
#include "harness/model/weights.h"
#include "kernels/cpu/gemv.h"

namespace kvb {

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  torch::Tensor xf = x.to(torch::kFloat32);
  torch::Tensor r = torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true).add_(eps));
  return (xf * r).to(x.scalar_type()) * w;
}

torch::Tensor rope_inv_freq(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  torch::Tensor idx = torch::arange(0, c.head_dim, 2, torch::kFloat32);  // [D/2]
  torch::Tensor inv = 1.0 / torch::pow(torch::tensor(c.rope_theta, torch::kFloat32),
                                       idx / static_cast<float>(c.head_dim));
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type == "linear") {
    inv = inv / rs.factor;
  } else if (rs.type == "llama3") {
    // Llama 3.1: long wavelengths divided by `factor`, short kept, smooth blend in between.
    const double low_wl = rs.original_max_position / rs.low_freq_factor;
    const double high_wl = rs.original_max_position / rs.high_freq_factor;
    auto a = inv.accessor<float, 1>();
    for (int64_t i = 0; i < half; ++i) {
      const double f = a[i], wl = 2 * M_PI / f;
      if (wl < high_wl) continue;
      if (wl > low_wl) {
        a[i] = static_cast<float>(f / rs.factor);
      } else {
        const double smooth = (rs.original_max_position / wl - rs.low_freq_factor) /
                              (rs.high_freq_factor - rs.low_freq_factor);
        a[i] = static_cast<float>((1 - smooth) * f / rs.factor + smooth * f);
      }
    }
  }
  return inv;
}

torch::Tensor project(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  const int64_t in = x.size(-1), rows = x.numel() / in;
  if (rows == 1 && x.device().is_cpu()) {
    // One row (decode): matrix-vector product. OpenBLAS's GEMM path for a single row against a
    // transposed weight runs at a third of the memory bandwidth that gemv reaches; our own
    // (kernels/cpu/gemv.h) also keeps OpenBLAS's threads asleep during decode. fp32 only; other
    // dtypes take torch::mv.
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = w.size(0);
    const torch::Tensor xr = x.reshape({in});
    if (kernels::gemv_accepts(w, xr, b)) return kernels::gemv(w, xr, b).view(shape);
    torch::Tensor y = torch::mv(w, xr);
    if (b.defined()) y.add_(b);
    return y.view(shape);
  }
  return torch::linear(x, w, b);
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos,
                         const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  torch::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  torch::Tensor rot = torch::cat({x2.neg(), x1}, -1);
  return x * cos + rot * sin;
}

namespace {

// KVB_FUSED_ATTENTION=0 turns the methods' fused attention (KVCacheState::attend) off: every
// method is then read through its dense view (benchmarks and the on/off tests compare the two).
bool fused_attention_enabled() {
  const char* e = std::getenv("KVB_FUSED_ATTENTION");
  return !(e && std::string_view(e) == "0");
}

}  // namespace

Model::Model(ModelConfig config, ModelWeights weights, torch::ScalarType dtype, torch::Device device)
    : config_(std::move(config)), weights_(std::move(weights)), dtype_(dtype), device_(device) {
  inv_freq_ = rope_inv_freq(config_);
}

ModelShape Model::shape() const {
  ModelShape s;
  s.n_layers = config_.n_layers;
  s.n_head_q = config_.n_heads;
  s.n_head_kv = config_.n_kv_heads;
  s.head_dim = config_.head_dim;
  s.max_position = config_.max_position;
  return s;
}

void Model::ensure_rope(int64_t max_pos) const {
  const int64_t have = cos_cache_.defined() ? cos_cache_.size(0) : 0;
  if (have >= max_pos) return;
  // Grown on demand (doubling), not to max_position_embeddings at once: a config may declare
  // 2^24 positions, and a table that long would take gigabytes. Row t is cos/sin(t * inv_freq)
  // whatever the table's length, so the values do not depend on when it grew.
  const int64_t n = std::max<int64_t>({max_pos, 2 * have, 256});
  torch::Tensor t = torch::arange(n, torch::kFloat32);               // [P]
  torch::Tensor freqs = torch::outer(t, inv_freq_);                   // [P, D/2] fp32
  torch::Tensor emb = torch::cat({freqs, freqs}, -1);                 // [P, D]
  cos_cache_ = emb.cos().to(device_, dtype_);
  sin_cache_ = emb.sin().to(device_, dtype_);
}

torch::Tensor Model::attention(int layer, const torch::Tensor& x, const torch::Tensor& pos,
                               KVCacheState& cache) const {
  const LayerWeights& w = weights_.layers[static_cast<size_t>(layer)];
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t Hq = config_.n_heads, Hkv = config_.n_kv_heads, D = config_.head_dim;
  const int64_t G = Hq / Hkv;

  torch::Tensor q = project(x, w.wq, w.bq).view({B, T, Hq, D});   // [B, T, H_q, D]
  torch::Tensor k = project(x, w.wk, w.bk).view({B, T, Hkv, D});  // [B, T, H_kv, D]
  torch::Tensor v = project(x, w.wv, w.bv).view({B, T, Hkv, D});
  if (config_.qk_norm) {
    q = rms_norm(q, w.q_norm, config_.rms_eps);
    k = rms_norm(k, w.k_norm, config_.rms_eps);
  }
  q = q.transpose(1, 2);                                // [B, H_q, T, D]
  torch::Tensor k_pre = k.transpose(1, 2).contiguous();  // [B, H_kv, T, D]
  v = v.transpose(1, 2).contiguous();                   // [B, H_kv, T, D]
  // Positions within the cache (StreamingLLM's positions=cache): the chunk sits right after the
  // cache's S slots, whose pre-RoPE keys are rotated at 0 .. S-1 below.
  const std::optional<int64_t> cache_base = cache.rope_positions_from_cache(layer);
  KVB_CHECK(!cache_base || !cache.view_keys_pre_rope(layer),
            "attention: a cache cannot rotate at slot indices and at source positions at once");
  torch::Tensor rope_pos = pos;  // [T] int64
  if (cache_base) {
    ensure_rope(*cache_base + T);
    rope_pos = torch::arange(*cache_base, *cache_base + T, pos.options());
  }
  torch::Tensor cos = cos_cache_.index_select(0, rope_pos);  // [T, D]
  torch::Tensor sin = sin_cache_.index_select(0, rope_pos);
  q = apply_rope(q, cos, sin).contiguous();
  torch::Tensor k_rot = apply_rope(k_pre, cos, sin).contiguous();

  // Queries grouped by their KV head: [B, H_kv, G, T, D]; keys are never repeated for GQA.
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  torch::Tensor q5 = (q * scale).view({B, Hkv, G, T, D});

  const bool observe = cache.wants_attention(layer);
  // The method's fused attention over its past slots (KIVI's packed cache), merged below with
  // the chunk's own keys by the log-sum-exp; not when it observes (it needs the weights), keys
  // are rotated here, or KVB_FUSED_ATTENTION=0. Which kernel runs is the state's choice by
  // q's device; a state without one for that device refuses.
  std::optional<AttendResult> fused;
  if (!observe && !cache_base && !cache.view_keys_pre_rope(layer) && fused_attention_enabled())
    fused = cache.attend(layer, q, scale);
  KVB_CHECK(!fused || (fused->out.sizes() == q.sizes() && fused->lse.dim() == 3),
            "attention: attend() gave ", fused ? fused->out.sizes() : q.sizes(), " for q ",
            q.sizes());
  // Head-wise caches (a different slot count per KV head) are read head by head, without the
  // padding a dense view needs; not when the method observes (its weights span the dense view)
  // or keys are rotated here.
  std::vector<HeadView> heads;
  if (!fused && !observe && !cache_base && !cache.view_keys_pre_rope(layer) && B == 1)
    heads = cache.read_view_heads(layer, q);
  KVB_CHECK(heads.empty() || static_cast<int64_t>(heads.size()) == Hkv, "attention: ",
            heads.size(), " head views for ", Hkv, " KV heads");
  KVView past = heads.empty() && !fused ? cache.read_view(layer, q) : KVView();
  const int64_t S = past.slots();
  torch::Tensor pk, pv, bias;
  if (S > 0) {
    pk = past.k.to(dtype_);  // [B, H_kv, S, D]
    if (cache_base) {
      KVB_CHECK(*cache_base == S, "attention: the cache said ", *cache_base, " slots, its view has ",
                S);
      pk = apply_rope(pk, cos_cache_.narrow(0, 0, S), sin_cache_.narrow(0, 0, S));
    } else if (cache.view_keys_pre_rope(layer)) {
      // Keys held before RoPE (KVQuant): each slot rotated at its source position. Padding
      // (position < 0, masked by logit_bias) takes position 0. Positions are below the chunk's,
      // which forward() made the tables cover.
      torch::Tensor p = past.pos.to(device_, torch::kLong).clamp_min(0).reshape({-1});
      pk = apply_rope(pk, cos_cache_.index_select(0, p).view({B, Hkv, S, D}),
                      sin_cache_.index_select(0, p).view({B, Hkv, S, D}));
    }
    pv = past.v.to(dtype_);
    if (past.logit_bias.defined()) bias = past.logit_bias.to(dtype_).view({B, Hkv, 1, 1, S});
  }
  torch::Tensor probs_all;  // [B, H_kv, G, T, S + T] fp32, only for methods that observe
  if (observe) probs_all = torch::zeros({B, Hkv, G, T, S + T}, x.options().dtype(torch::kFloat32));
  torch::Tensor out5 = torch::empty({B, Hkv, G, T, D}, x.options());

  // Exact attention computed in blocks of query rows: block [t0, t0 + tb) attends to the past
  // slots and to chunk tokens [0, t0 + tb), causal inside the block. Blocking bounds the score
  // matrix and skips the masked upper triangle of a long prefill.
  constexpr int64_t kQueryBlock = 256;
  for (int64_t t0 = 0; t0 < T; t0 += kQueryBlock) {
    const int64_t tb = std::min(kQueryBlock, T - t0), tk = t0 + tb;
    torch::Tensor qb = q5.narrow(3, t0, tb).reshape({B, Hkv, G * tb, D});
    torch::Tensor s_new = torch::matmul(qb, k_rot.narrow(2, 0, tk).transpose(-1, -2))
                              .view({B, Hkv, G, tb, tk});
    if (tb > 1) {
      torch::Tensor mask = torch::full({tb, tb}, -std::numeric_limits<float>::infinity(),
                                       s_new.options()).triu_(1);  // [tb, tb]
      s_new.narrow(-1, t0, tb).add_(mask);
    }
    if (fused) {
      // Past slots (out, lse from attend) and the chunk's keys (causal) merged as flash-decoding
      // does: out = (e^lse_past o_past + e^lse_new o_new) / (e^lse_past + e^lse_new).
      torch::Tensor lse_new = torch::logsumexp(s_new, -1, /*keepdim=*/true);  // [B,H_kv,G,tb,1]
      torch::Tensor o_new = torch::matmul((s_new - lse_new).exp_().view({B, Hkv, G * tb, tk}),
                                          v.narrow(2, 0, tk))
                                .view({B, Hkv, G, tb, D});
      torch::Tensor lse_past =
          fused->lse.view({B, Hkv, G, T, 1}).narrow(3, t0, tb).to(lse_new.scalar_type());
      torch::Tensor o_past = fused->out.view({B, Hkv, G, T, D}).narrow(3, t0, tb).to(dtype_);
      torch::Tensor top = torch::maximum(lse_past, lse_new);
      torch::Tensor w_past = (lse_past - top).exp_(), w_new = (lse_new - top).exp_();
      out5.narrow(3, t0, tb)
          .copy_((o_past * w_past + o_new * w_new).div_(w_past + w_new));
      continue;
    }
    if (!heads.empty()) {  // per KV head over its own slots (exact as the dense path)
      // A head's segments (its stored slots, a compensation slot) are scored apart and share
      // one softmax with the chunk's keys; only the scores are concatenated.
      for (int64_t h = 0; h < Hkv; ++h) {
        const HeadView& hv = heads[static_cast<size_t>(h)];
        const int64_t sh = hv.slots();
        torch::Tensor qh = qb.narrow(1, h, 1);  // [1, 1, G*tb, D]
        std::vector<torch::Tensor> sc, pvh;
        for (const KVView& seg : hv.segments) {
          const int64_t n = seg.slots();
          if (n == 0) continue;
          torch::Tensor sp =
              torch::matmul(qh, seg.k.to(dtype_).transpose(-1, -2)).view({1, 1, G, tb, n});
          if (seg.logit_bias.defined()) sp.add_(seg.logit_bias.to(dtype_).view({1, 1, 1, 1, n}));
          sc.push_back(sp);
          pvh.push_back(seg.v.to(dtype_));
        }
        sc.push_back(s_new.narrow(1, h, 1));  // [1, 1, G, tb, tk]
        torch::Tensor ph = torch::softmax(sc.size() == 1 ? sc[0] : torch::cat(sc, -1), -1,
                                          torch::kFloat32)
                               .to(dtype_)
                               .view({1, 1, G * tb, sh + tk});
        torch::Tensor oh = torch::matmul(ph.narrow(-1, sh, tk), v.narrow(1, h, 1).narrow(2, 0, tk));
        int64_t off = 0;
        for (const torch::Tensor& pv_seg : pvh) {
          const int64_t n = pv_seg.size(2);
          oh.add_(torch::matmul(ph.narrow(-1, off, n), pv_seg));
          off += n;
        }
        out5.narrow(1, h, 1).narrow(3, t0, tb).copy_(oh.view({1, 1, G, tb, D}));
      }
      continue;
    }
    torch::Tensor scores = s_new;
    if (S > 0) {
      torch::Tensor s_past = torch::matmul(qb, pk.transpose(-1, -2)).view({B, Hkv, G, tb, S});
      if (bias.defined()) s_past.add_(bias);
      scores = torch::cat({s_past, s_new}, -1);  // [B, H_kv, G, tb, S + tk]
    }
    torch::Tensor probs = torch::softmax(scores, -1, torch::kFloat32);
    if (observe) probs_all.narrow(3, t0, tb).narrow(-1, 0, S + tk).copy_(probs);
    torch::Tensor p = probs.to(dtype_).view({B, Hkv, G * tb, S + tk});
    torch::Tensor ob = torch::matmul(p.narrow(-1, S, tk), v.narrow(2, 0, tk));  // [B, H_kv, G*tb, D]
    if (S > 0) ob.add_(torch::matmul(p.narrow(-1, 0, S), pv));
    out5.narrow(3, t0, tb).copy_(ob.view({B, Hkv, G, tb, D}));
  }
  torch::Tensor out = out5.view({B, Hq, T, D}).transpose(1, 2).reshape({B, T, Hq * D});

  KVAppend a{k_rot, k_pre, v, pos, q};
  cache.append(layer, a);
  if (observe) cache.observe(layer, probs_all.view({B, Hq, T, S + T}));
  return project(out, w.wo, {});
}

torch::Tensor Model::mlp(int layer, const torch::Tensor& x) const {
  const LayerWeights& w = weights_.layers[static_cast<size_t>(layer)];
  torch::Tensor g = project(x, w.w_gate, {});
  torch::Tensor u = project(x, w.w_up, {});
  return project(torch::silu(g).mul_(u), w.w_down, {});
}

torch::Tensor Model::forward(const torch::Tensor& ids, const torch::Tensor& pos,
                             KVCacheState& cache, const ForwardOptions& opt) const {
  KVB_CHECK(ids.dim() == 2 && pos.dim() == 1 && ids.size(1) == pos.size(0),
            "forward: ids [B, T] and pos [T] disagree");
  const int64_t T = ids.size(1);
  KVB_CHECK(T > 0, "forward: empty chunk");
  torch::Tensor pos_d = pos.to(device_, torch::kLong);
  int64_t max_pos = pos_d.max().item<int64_t>();
  ensure_rope(max_pos + 1);
  torch::Tensor x = torch::embedding(weights_.embed, ids.to(device_));  // [B, T, d]
  for (int l = 0; l < static_cast<int>(config_.n_layers); ++l) {
    const LayerWeights& w = weights_.layers[static_cast<size_t>(l)];
    x = x + attention(l, rms_norm(x, w.attn_norm, config_.rms_eps), pos_d, cache);
    x = x + mlp(l, rms_norm(x, w.ffn_norm, config_.rms_eps));
  }
  if (!opt.all_logits) x = x.narrow(1, T - 1, 1);
  x = rms_norm(x, weights_.final_norm, config_.rms_eps);
  return project(x, weights_.lm_head, {}).to(torch::kFloat32);  // [B, T or 1, V]
}

// ---- loading, saving, random init ----------------------------------------------------------

namespace {

std::string layer_name(int l, const char* suffix) {
  return "model.layers." + std::to_string(l) + "." + suffix;
}

}  // namespace

Model Model::load(const std::string& dir, torch::ScalarType dtype, torch::Device device) {
  ModelConfig c = load_model_config(dir);
  SafetensorsSet st(dir);
  const int64_t d = c.hidden_size, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  const int64_t ff = c.intermediate_size;
  auto get = [&](const std::string& name, std::vector<int64_t> shape) {
    return load_weight(st, name, dtype, shape).to(device);
  };
  ModelWeights w;
  w.embed = get("model.embed_tokens.weight", {c.vocab_size, d});
  for (int l = 0; l < c.n_layers; ++l) {
    LayerWeights L;
    L.attn_norm = get(layer_name(l, "input_layernorm.weight"), {d});
    L.wq = get(layer_name(l, "self_attn.q_proj.weight"), {q, d});
    L.wk = get(layer_name(l, "self_attn.k_proj.weight"), {kv, d});
    L.wv = get(layer_name(l, "self_attn.v_proj.weight"), {kv, d});
    L.wo = get(layer_name(l, "self_attn.o_proj.weight"), {d, q});
    if (c.attention_bias) {
      L.bq = get(layer_name(l, "self_attn.q_proj.bias"), {q});
      L.bk = get(layer_name(l, "self_attn.k_proj.bias"), {kv});
      L.bv = get(layer_name(l, "self_attn.v_proj.bias"), {kv});
    }
    if (c.qk_norm) {
      L.q_norm = get(layer_name(l, "self_attn.q_norm.weight"), {c.head_dim});
      L.k_norm = get(layer_name(l, "self_attn.k_norm.weight"), {c.head_dim});
    }
    L.ffn_norm = get(layer_name(l, "post_attention_layernorm.weight"), {d});
    L.w_gate = get(layer_name(l, "mlp.gate_proj.weight"), {ff, d});
    L.w_up = get(layer_name(l, "mlp.up_proj.weight"), {ff, d});
    L.w_down = get(layer_name(l, "mlp.down_proj.weight"), {d, ff});
    w.layers.push_back(std::move(L));
  }
  w.final_norm = get("model.norm.weight", {d});
  if (st.has("lm_head.weight") && !c.tie_word_embeddings) {
    w.lm_head = get("lm_head.weight", {c.vocab_size, d});
  } else {
    KVB_INPUT_CHECK(c.tie_word_embeddings, dir,
                    ": lm_head.weight is missing and tie_word_embeddings is false");
    w.lm_head = w.embed;
  }
  return Model(std::move(c), std::move(w), dtype, device);
}

Model Model::random(const ModelConfig& c, uint64_t seed, torch::ScalarType dtype,
                    torch::Device device) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto opts = torch::TensorOptions().dtype(torch::kFloat32);
  auto normal = [&](std::vector<int64_t> shape) {
    return torch::randn(shape, gen, opts).mul_(0.02).to(device, dtype);
  };
  auto ones = [&](int64_t n) { return torch::ones({n}, opts).to(device, dtype); };
  const int64_t d = c.hidden_size, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  const int64_t ff = c.intermediate_size;
  ModelWeights w;
  w.embed = normal({c.vocab_size, d});
  for (int l = 0; l < c.n_layers; ++l) {
    LayerWeights L;
    L.attn_norm = ones(d);
    L.wq = normal({q, d});
    L.wk = normal({kv, d});
    L.wv = normal({kv, d});
    L.wo = normal({d, q});
    if (c.attention_bias) {
      L.bq = normal({q});
      L.bk = normal({kv});
      L.bv = normal({kv});
    }
    if (c.qk_norm) {
      L.q_norm = ones(c.head_dim);
      L.k_norm = ones(c.head_dim);
    }
    L.ffn_norm = ones(d);
    L.w_gate = normal({ff, d});
    L.w_up = normal({ff, d});
    L.w_down = normal({d, ff});
    w.layers.push_back(std::move(L));
  }
  w.final_norm = ones(d);
  w.lm_head = c.tie_word_embeddings ? w.embed : normal({c.vocab_size, d});
  return Model(c, std::move(w), dtype, device);
}

void Model::save(const std::string& dir) const {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  std::vector<std::pair<std::string, torch::Tensor>> t;
  auto add = [&](const std::string& name, const torch::Tensor& x) {
    if (x.defined()) t.emplace_back(name, x.detach().cpu().contiguous());
  };
  add("model.embed_tokens.weight", weights_.embed);
  for (int l = 0; l < config_.n_layers; ++l) {
    const LayerWeights& L = weights_.layers[static_cast<size_t>(l)];
    add(layer_name(l, "input_layernorm.weight"), L.attn_norm);
    add(layer_name(l, "self_attn.q_proj.weight"), L.wq);
    add(layer_name(l, "self_attn.k_proj.weight"), L.wk);
    add(layer_name(l, "self_attn.v_proj.weight"), L.wv);
    add(layer_name(l, "self_attn.o_proj.weight"), L.wo);
    add(layer_name(l, "self_attn.q_proj.bias"), L.bq);
    add(layer_name(l, "self_attn.k_proj.bias"), L.bk);
    add(layer_name(l, "self_attn.v_proj.bias"), L.bv);
    add(layer_name(l, "self_attn.q_norm.weight"), L.q_norm);
    add(layer_name(l, "self_attn.k_norm.weight"), L.k_norm);
    add(layer_name(l, "post_attention_layernorm.weight"), L.ffn_norm);
    add(layer_name(l, "mlp.gate_proj.weight"), L.w_gate);
    add(layer_name(l, "mlp.up_proj.weight"), L.w_up);
    add(layer_name(l, "mlp.down_proj.weight"), L.w_down);
  }
  add("model.norm.weight", weights_.final_norm);
  if (!config_.tie_word_embeddings) add("lm_head.weight", weights_.lm_head);
  save_weights((fs::path(dir) / "model.safetensors").string(), t, {{"format", "pt"}});
  write_file((fs::path(dir) / "config.json").string(), config_.to_json().dump(2) + "\n");
}

}  // namespace kvb
