#include "trainer/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#if defined(__unix__)
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "common/check.h"
#include "common/json_io.h"
#include "common/json_reader.h"
#include "datasets/prose.h"
#include "datasets/rng.h"
#include "methods/registry.h"

namespace kvb {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int32_t kVocab = 258, kBos = 256, kEos = 257;

// ---- config ----------------------------------------------------------------------------------

// Overwrites the weights a "mixture" object names (`w` holds the defaults) and checks the result.
void read_mixture(const JsonNode& m, MixtureWeights& w) {
  m.only_keys({"needle", "passkey", "kv", "vars", "prefix", "copy", "min_tasks", "max_tasks",
               "kv_question", "kv_asks"});
  for (const auto& [key, field] : {std::pair<const char*, double*>{"needle", &w.needle},
                                   {"passkey", &w.passkey},
                                   {"kv", &w.kv},
                                   {"vars", &w.vars},
                                   {"prefix", &w.prefix},
                                   {"copy", &w.copy}})
    *field = m.number(key, *field, 0.0, kMaxTrainWeight);
  w.min_tasks = m.integer("min_tasks", w.min_tasks, 1, kMaxTrainTasks);
  w.max_tasks = m.integer("max_tasks", w.max_tasks, 1, kMaxTrainTasks);
  if (m.has("kv_question"))
    w.kv_ask_by_key = m.at("kv_question").choice({"phrase", "key"}) == "key";
  w.kv_asks = m.integer("kv_asks", w.kv_asks, 1, kMaxTrainTasks);
  if (!(w.needle + w.passkey + w.kv + w.vars + w.prefix + w.copy > 0))
    m.fail("the task weights must not all be zero");
  if (w.max_tasks < w.min_tasks)
    m.fail("max_tasks (" + std::to_string(w.max_tasks) + ") must be at least min_tasks (" +
           std::to_string(w.min_tasks) + ")");
}

}  // namespace

int64_t TrainConfig::total_steps() const {
  int64_t n = 0;
  for (const auto& p : phases) n += p.steps;
  return n;
}

int64_t TrainConfig::context() const {
  int64_t n = 0;
  for (const auto& p : phases) n = std::max(n, p.seq_len);
  return n;
}

const TrainPhase& TrainConfig::phase_at(int64_t step) const {
  for (const auto& p : phases) {
    if (step < p.steps) return p;
    step -= p.steps;
  }
  return phases.back();
}

TrainConfig parse_train_config(const json& j, const std::string& where) {
  // Every field through the JSON layer with its range (the limits table in trainer/trainer.h),
  // all checked before anything is allocated: "<file>: <json path>: expected ..., got ...".
  const JsonNode r(j, where);
  r.only_keys({"$comment", "name", "seed", "threads", "dtype", "model", "optimizer", "phases",
               "mixture", "answer_weight", "prose_only", "checkpoint_every", "log_every", "eval"});
  TrainConfig c;
  const JsonNode name = r.at("name");
  c.name = name.str();
  if (c.name.empty() || c.name.size() > kMaxTrainNameChars)
    name.expected("a name of 1 to " + std::to_string(kMaxTrainNameChars) + " characters");
  c.seed = static_cast<uint64_t>(r.integer("seed", 1, 0, std::numeric_limits<int64_t>::max()));
  c.threads = r.integer("threads", 2, 1, kMaxTrainThreads);
  if (r.has("dtype")) c.dtype = r.at("dtype").choice({"fp32", "bf16"});

  const JsonNode m = r.at("model");
  m.only_keys({"hidden_size", "intermediate_size", "n_layers", "n_heads", "n_kv_heads", "head_dim",
               "rope_theta", "rms_eps"});
  ModelConfig& mc = c.model;
  mc.architecture = "LlamaForCausalLM";
  mc.model_type = "llama";
  mc.vocab_size = kVocab;
  mc.hidden_size = m.at("hidden_size").integer(1, kMaxTrainHidden);
  mc.intermediate_size = m.at("intermediate_size").integer(1, kMaxTrainIntermediate);
  mc.n_layers = m.at("n_layers").integer(1, kMaxTrainLayers);
  mc.n_heads = m.at("n_heads").integer(1, kMaxTrainHeads);
  mc.n_kv_heads = m.integer("n_kv_heads", mc.n_heads, 1, mc.n_heads);
  mc.head_dim = m.integer("head_dim", mc.hidden_size / mc.n_heads, 0, kMaxTrainHeadDim);
  mc.rope_theta = m.number("rope_theta", 10000.0, 1.0, 1e9);
  mc.rms_eps = m.number("rms_eps", 1e-5, 1e-12, 1.0);
  mc.tie_word_embeddings = true;
  mc.bos_ids = {kBos};
  mc.eos_ids = {kEos};
  mc.torch_dtype = c.dtype == "bf16" ? "bfloat16" : "float32";
  if (mc.head_dim < 2 || mc.head_dim % 2 != 0)
    m.fail("head_dim " + std::to_string(mc.head_dim) +
           " must be even and at least 2 (default: hidden_size / n_heads)");
  if (mc.n_heads % mc.n_kv_heads != 0) m.fail("n_heads must be a multiple of n_kv_heads");
  if (mc.n_params() > kMaxTrainParams)
    m.fail(std::to_string(mc.n_params()) + " parameters, more than the " +
           std::to_string(kMaxTrainParams) + " a reference model may have");

  if (auto o = r.find("optimizer")) {
    o->only_keys({"lr", "min_lr", "warmup", "decay_steps", "weight_decay", "beta1", "beta2", "clip",
                  "cooldown_steps"});
    c.lr = o->number("lr", c.lr, 0.0, 10.0);
    c.min_lr = o->number("min_lr", c.min_lr, 0.0, 10.0);
    c.warmup = o->integer("warmup", c.warmup, 0, kMaxTrainSteps);
    c.decay_steps = o->integer("decay_steps", c.decay_steps, 0, kMaxTrainSteps);
    c.weight_decay = o->number("weight_decay", c.weight_decay, 0.0, 10.0);
    c.beta1 = o->number("beta1", c.beta1, 0.0, 0.999999);
    c.beta2 = o->number("beta2", c.beta2, 0.0, 0.999999);
    c.clip = o->number("clip", c.clip, 0.0, 1e6);
    c.cooldown_steps = o->integer("cooldown_steps", c.cooldown_steps, 0, kMaxTrainSteps);
    if (!(c.lr > 0)) o->at("lr").expected("a learning rate in (0, 10]");
    if (c.decay_steps != 0 && c.decay_steps <= c.warmup)
      o->at("decay_steps")
          .fail("must be 0 (all steps) or more than warmup (" + std::to_string(c.warmup) + ")");
  }
  if (auto mix = r.find("mixture")) read_mixture(*mix, c.mixture);
  const JsonNode phases = r.at("phases");
  if (!phases.is_array() || phases.size() == 0 || phases.size() > kMaxTrainPhases)
    phases.expected("a non-empty array of at most " + std::to_string(kMaxTrainPhases) +
                    " phases {steps, seq_len, batch}");
  int64_t total = 0;
  for (const JsonNode& p : phases.items()) {
    p.only_keys({"steps", "seq_len", "batch", "mixture", "window_rows", "row_block"});
    TrainPhase ph{
        p.at("steps").integer(1, kMaxTrainSteps), p.at("seq_len").integer(64, kMaxTrainSeqLen),
        p.at("batch").integer(1, kMaxTrainBatch), c.mixture,
        p.number("window_rows", 0.0, 0.0, 1.0),   p.integer("row_block", 0, 0, kMaxTrainSeqLen)};
    if (ph.batch * ph.seq_len > kMaxTrainBatchTokens)
      p.fail("batch x seq_len = " + std::to_string(ph.batch * ph.seq_len) +
             " tokens a step, more than the " + std::to_string(kMaxTrainBatchTokens) +
             " a step may have");
    total += ph.steps;
    if (total > kMaxTrainSteps)
      p.fail("the phases' steps add up to more than " + std::to_string(kMaxTrainSteps));
    if (auto mix = p.find("mixture")) read_mixture(*mix, ph.mixture);
    c.phases.push_back(ph);
  }
  c.model.max_position = c.context();
  if (c.cooldown_steps > 0 && c.cooldown_steps > c.total_steps() - c.warmup)
    r.at("optimizer")
        .at("cooldown_steps")
        .fail("must leave the warm-up before it: at most total steps (" +
              std::to_string(c.total_steps()) + ") less warmup (" + std::to_string(c.warmup) + ")");
  c.prose_only = r.number("prose_only", c.prose_only, 0.0, 1.0);
  c.answer_weight = r.number("answer_weight", c.answer_weight, 0.0, kMaxTrainWeight);
  if (!(c.answer_weight > 0)) r.at("answer_weight").expected("a weight in (0, 1e6]");
  c.checkpoint_every = r.integer("checkpoint_every", c.checkpoint_every, 1, kMaxTrainSteps);
  c.log_every = r.integer("log_every", c.log_every, 1, kMaxTrainSteps);
  if (auto e = r.find("eval")) {
    e->only_keys({"per_decile", "kv_samples", "prose_windows"});
    c.eval.per_decile = e->integer("per_decile", c.eval.per_decile, 1, kMaxTrainEvalSamples);
    c.eval.kv_samples = e->integer("kv_samples", c.eval.kv_samples, 1, kMaxTrainEvalSamples);
    c.eval.prose_windows =
        e->integer("prose_windows", c.eval.prose_windows, 1, kMaxTrainEvalSamples);
  }
  return c;
}

TrainConfig load_train_config(const std::string& path) {
  return parse_train_config(read_json_input(path), path);
}

// ---- model ---------------------------------------------------------------------------------

namespace {

torch::Tensor rope_table(const ModelConfig& c, int64_t T, bool sine) {
  torch::Tensor freqs = torch::outer(torch::arange(T, torch::kFloat32), rope_inv_freq(c));
  torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  return sine ? emb.sin() : emb.cos();
}

}  // namespace

torch::Tensor train_forward(const ModelConfig& c, const ModelWeights& w, const torch::Tensor& ids,
                            const torch::Tensor& windows, int64_t row_block) {
  const int64_t B = ids.size(0), T = ids.size(1);
  const int64_t rb = row_block > 0 ? std::min(row_block, T) : T;
  const int64_t Hq = c.n_heads, Hkv = c.n_kv_heads, D = c.head_dim, G = Hq / Hkv;
  const auto dt = w.embed.scalar_type();
  torch::Tensor cos = rope_table(c, T, false).to(dt), sin = rope_table(c, T, true).to(dt);
  const float inf = std::numeric_limits<float>::infinity();
  torch::Tensor mask = torch::full({T, T}, -inf).triu(1).to(dt);
  if (windows.defined() && windows.gt(0).any().item<bool>()) {
    // One [T, T] mask per row, the same for each head: [B * Hq, T, T].
    torch::Tensor i = torch::arange(T).unsqueeze(1), j = torch::arange(T).unsqueeze(0);
    torch::Tensor win = torch::where(windows > 0, windows, torch::full_like(windows, T)).view({B, 1, 1});
    torch::Tensor evicted = ((i - j).unsqueeze(0) > win) & (j >= kTrainSinks).unsqueeze(0);
    mask = mask.unsqueeze(0).expand({B, T, T}).masked_fill(evicted, -inf);
    mask = mask.unsqueeze(1).expand({B, Hq, T, T}).reshape({B * Hq, T, T});
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  torch::Tensor x = torch::embedding(w.embed, ids);
  for (const LayerWeights& L : w.layers) {
    torch::Tensor h = rms_norm(x, L.attn_norm, c.rms_eps);
    torch::Tensor q = torch::linear(h, L.wq).view({B, T, Hq, D}).transpose(1, 2);
    torch::Tensor k = torch::linear(h, L.wk).view({B, T, Hkv, D}).transpose(1, 2);
    torch::Tensor v = torch::linear(h, L.wv).view({B, T, Hkv, D}).transpose(1, 2);
    q = apply_rope(q, cos, sin);
    k = apply_rope(k, cos, sin);
    if (G > 1) {
      k = k.repeat_interleave(G, 1);
      v = v.repeat_interleave(G, 1);
    }
    // Scores as one fused mask + scale * q k^T (baddbmm): no separate [B, H, T, T] passes for
    // the scale and the mask, forward or backward. Rows go in blocks of `rb` queries, each
    // against the keys up to its last row only.
    const torch::Tensor qf = q.reshape({B * Hq, T, D}), kf = k.reshape({B * Hq, T, D});
    const torch::Tensor vf = v.reshape({B * Hq, T, D});
    std::vector<torch::Tensor> blocks;
    for (int64_t r0 = 0; r0 < T; r0 += rb) {
      const int64_t n = std::min(rb, T - r0), keys = r0 + n;
      const torch::Tensor m = mask.dim() == 2 ? mask.narrow(0, r0, n).narrow(1, 0, keys)
                                              : mask.narrow(1, r0, n).narrow(2, 0, keys);
      torch::Tensor s = torch::baddbmm(m, qf.narrow(1, r0, n), kf.narrow(1, 0, keys).transpose(1, 2),
                                       1.0, scale);
      blocks.push_back(torch::bmm(torch::softmax(s, -1), vf.narrow(1, 0, keys)));
    }
    torch::Tensor o = (blocks.size() == 1 ? blocks[0] : torch::cat(blocks, 1))
                          .view({B, Hq, T, D}).transpose(1, 2).reshape({B, T, Hq * D});
    x = x + torch::linear(o, L.wo);
    h = rms_norm(x, L.ffn_norm, c.rms_eps);
    x = x + torch::linear(torch::silu(torch::linear(h, L.w_gate)) * torch::linear(h, L.w_up), L.w_down);
  }
  x = rms_norm(x, w.final_norm, c.rms_eps);
  return torch::linear(x, w.lm_head);
}

namespace {

ModelWeights init_weights(const ModelConfig& c, uint64_t seed, torch::ScalarType dt) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto normal = [&](std::vector<int64_t> shape, double std) {
    return (torch::randn(shape, gen, torch::kFloat32) * std).to(dt).requires_grad_(true);
  };
  auto ones = [&](int64_t n) { return torch::ones({n}, torch::kFloat32).to(dt).requires_grad_(true); };
  const int64_t d = c.hidden_size, ff = c.intermediate_size, D = c.head_dim;
  const double out_std = 0.02 / std::sqrt(2.0 * static_cast<double>(c.n_layers));
  ModelWeights w;
  w.embed = normal({c.vocab_size, d}, 0.02);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    LayerWeights L;
    L.attn_norm = ones(d);
    L.wq = normal({c.n_heads * D, d}, 0.02);
    L.wk = normal({c.n_kv_heads * D, d}, 0.02);
    L.wv = normal({c.n_kv_heads * D, d}, 0.02);
    L.wo = normal({d, c.n_heads * D}, out_std);
    L.ffn_norm = ones(d);
    L.w_gate = normal({ff, d}, 0.02);
    L.w_up = normal({ff, d}, 0.02);
    L.w_down = normal({d, ff}, out_std);
    w.layers.push_back(L);
  }
  w.final_norm = ones(d);
  w.lm_head = w.embed;  // tied
  return w;
}

// Parameters in a fixed order; `decay` receives matrices (weight decay), `plain` the norms.
void collect(const ModelWeights& w, std::vector<torch::Tensor>& decay, std::vector<torch::Tensor>& plain) {
  decay.push_back(w.embed);
  for (const LayerWeights& L : w.layers) {
    plain.push_back(L.attn_norm);
    for (const auto& t : {L.wq, L.wk, L.wv, L.wo, L.w_gate, L.w_up, L.w_down}) decay.push_back(t);
    plain.push_back(L.ffn_norm);
  }
  plain.push_back(w.final_norm);
}

uint64_t seed_for(uint64_t base, const std::string& stream, int64_t a, int64_t b) {
  return derive_seed(base, stream + "/" + std::to_string(a) + "/" + std::to_string(b));
}

// One batch: ids [B, T+1] (BOS + T bytes) and loss weights [B, T] (answer bytes weighted).
struct Batch {
  torch::Tensor ids, weights, answer_mask;
  torch::Tensor windows;  // [B] StreamingLLM windows (0: full attention); undefined if none
};

Batch make_batch(const TrainConfig& cfg, int64_t step, const TrainPhase& ph) {
  const int64_t B = ph.batch, T = ph.seq_len;
  Batch b;
  b.ids = torch::empty({B, T + 1}, torch::kLong);
  b.weights = torch::ones({B, T}, torch::kFloat32);
  b.answer_mask = torch::zeros({B, T}, torch::kFloat32);
  auto ids = b.ids.accessor<int64_t, 2>();
  auto wts = b.weights.accessor<float, 2>();
  auto am = b.answer_mask.accessor<float, 2>();
  if (ph.window_rows > 0) b.windows = torch::zeros({B}, torch::kLong);
  for (int64_t i = 0; i < B; ++i) {
    const uint64_t s = seed_for(cfg.seed, "train", step, i);
    if (ph.window_rows > 0) {  // its own stream: the documents are those of a phase without it
      Rng wr(seed_for(cfg.seed, "window", step, i));
      if (wr.uniform() < ph.window_rows) b.windows.accessor<int64_t, 1>()[i] = wr.range(T / 8, T / 2);
    }
    Rng pick(s ^ 0x5DEECE66DULL);
    MixDocument doc;
    if (pick.uniform() < cfg.prose_only)
      doc.text = make_prose_document(T, s);
    else
      doc = make_mix_document(T, s, ph.mixture);
    ids[i][0] = kBos;
    for (int64_t t = 0; t < T; ++t) ids[i][t + 1] = static_cast<uint8_t>(doc.text[static_cast<size_t>(t)]);
    // Target t is byte t of the document.
    for (const AnswerSpan& a : doc.answers)
      for (int64_t t = a.begin; t < a.end; ++t) {
        wts[i][t] = static_cast<float>(cfg.answer_weight);
        am[i][t] = 1;
      }
  }
  return b;
}

double scheduled_lr(const TrainConfig& c, int64_t step) {
  const int64_t total = c.decay_steps > 0 ? c.decay_steps : c.total_steps();
  if (step < c.warmup) return c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup);
  const double progress = static_cast<double>(step - c.warmup) /
                          static_cast<double>(std::max<int64_t>(1, total - c.warmup));
  return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
}

// The warm-up and cosine schedule, then over the last `cooldown_steps` steps a linear decay from
// the schedule's rate at the cooldown's first step towards 0 (its last step: 1/cooldown_steps of
// it). Steps before the cooldown keep the schedule's rates exactly, so a recipe that adds a
// cooldown after its earlier steps keeps them bitwise.
double lr_at(const TrainConfig& c, int64_t step) {
  const int64_t start = c.total_steps() - c.cooldown_steps;
  if (c.cooldown_steps <= 0 || step < start) return scheduled_lr(c, step);
  return scheduled_lr(c, start) * static_cast<double>(c.total_steps() - step) /
         static_cast<double>(c.cooldown_steps);
}

std::string fmt_float(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// A loss.jsonl figure (checked by read_loss_log to be a number or null: a NaN is written as null).
double number_or_nan(const json& v) {
  return v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN();
}

// The records of loss.jsonl, each checked: "<path>:<line>: <field>: expected ..., got ...".
std::vector<json> read_loss_log(const std::string& path) {
  std::vector<json> lines;
  std::ifstream in(path);
  std::string l;
  int64_t n = 0;
  while (std::getline(in, l)) {
    ++n;
    if (l.empty()) continue;
    const std::string source = path + ":" + std::to_string(n);
    json j = parse_json(l, source);
    const JsonNode e(j, source);
    e.at("step").integer(0, kMaxTrainSteps);
    e.at("seq_len").integer(0, kMaxTrainSeqLen);
    for (const char* k : {"loss", "answer_loss", "lr"})  // null: a NaN
      if (auto v = e.find(k)) v->number();
    lines.push_back(std::move(j));
  }
  return lines;
}

// Keeps the first `keep_steps` lines of loss.jsonl (those of steps < keep_steps).
void truncate_loss_log(const std::string& path, int64_t keep_steps) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {  // a line that is not a step's record ends the part kept
      const json j = parse_json(line, path);
      if (JsonNode(j, path).at("step").integer() >= keep_steps) break;
    } catch (const InputError&) {
      break;
    }
    kept += line + "\n";
  }
  write_file(path, kept);
}

}  // namespace

std::string byte_tokenizer_json() {
  json vocab = json::object();
  for (int i = 0; i < 256; ++i) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", i);
    vocab[name] = i;
  }
  vocab["<s>"] = kBos;
  vocab["</s>"] = kEos;
  json added = json::array();
  for (auto [id, s] : {std::pair{kBos, "<s>"}, std::pair{kEos, "</s>"}})
    added.push_back({{"id", id}, {"content", s}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  json t = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {kBos}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders", json::array({{{"type", "ByteFallback"}}, {{"type", "Fuse"}}})}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", true},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", json::array()}}}};
  return t.dump(1) + "\n";
}

// ---- evaluation ----------------------------------------------------------------------------

namespace {

// Teacher-forced greedy check: the model's argmax reproduces every answer byte.
struct DocScore {
  std::vector<bool> correct;  // per answer span
  double nll = 0;             // sum over all predicted bytes
  int64_t n = 0;
};

DocScore score_document(const Model& m, const MixDocument& doc) {
  const int64_t T = static_cast<int64_t>(doc.text.size());
  torch::Tensor ids = torch::empty({1, T + 1}, torch::kLong);
  auto a = ids.accessor<int64_t, 2>();
  a[0][0] = kBos;
  for (int64_t t = 0; t < T; ++t) a[0][t + 1] = static_cast<uint8_t>(doc.text[static_cast<size_t>(t)]);
  auto state = make_method("full")->make_state(m.shape());
  ForwardOptions fo;
  fo.all_logits = true;
  torch::Tensor logits = m.forward(ids.narrow(1, 0, T), torch::arange(T), *state, fo)[0];  // [T, V]
  torch::Tensor target = ids[0].narrow(0, 1, T);
  torch::Tensor lp = torch::log_softmax(logits, -1).gather(1, target.unsqueeze(1)).squeeze(1);
  torch::Tensor pred = logits.argmax(-1);
  DocScore s;
  s.nll = -lp.sum().item<double>();
  s.n = T;
  auto p = pred.accessor<int64_t, 1>();
  for (const AnswerSpan& sp : doc.answers) {
    bool ok = true;
    for (int64_t t = sp.begin; t < sp.end; ++t)
      ok &= p[t] == static_cast<uint8_t>(doc.text[static_cast<size_t>(t)]);
    s.correct.push_back(ok);
  }
  return s;
}

}  // namespace

json evaluate_reference_model(const std::string& model_dir, const TrainConfig& cfg) {
  c10::InferenceMode guard;
  Model m = Model::load(model_dir);
  const int64_t ctx = cfg.context() - 1;  // bytes after BOS
  const uint64_t base = derive_seed(cfg.seed, "held-out");
  // Tasks are asked as the last phase asks them (its mixture: the global one with the phase's own
  // keys); only `kv_ask_by_key` and min/max_tasks of it shape an eval document.
  const MixtureWeights& mix = cfg.phases.back().mixture;
  json out = {{"context_bytes", ctx}, {"protocol",
      "held-out seeds (a seed stream the trainer never draws); full cache; a task counts as solved "
      "when the greedy argmax reproduces every byte of its answer after the question (teacher-forced "
      "on the answer bytes); depth = where the information sits in the document"}};
  for (MixTask task : {MixTask::kPasskey, MixTask::kNeedle}) {
    json deciles = json::array();
    int64_t hit = 0, n = 0;
    for (int64_t d = 0; d < 10; ++d) {
      int64_t h = 0;
      for (int64_t i = 0; i < cfg.eval.per_decile; ++i) {
        const double depth = (static_cast<double>(d) + 0.5) / 10.0;
        MixDocument doc = make_mix_document(ctx, seed_for(base, mix_task_name(task), d, i),
                                            mix, {task}, depth);
        h += score_document(m, doc).correct.at(0);
      }
      deciles.push_back(static_cast<double>(h) / static_cast<double>(cfg.eval.per_decile));
      hit += h;
      n += cfg.eval.per_decile;
    }
    out[mix_task_name(task)] = {{"accuracy", static_cast<double>(hit) / static_cast<double>(n)},
                                {"by_depth_decile", deciles}, {"samples", n}};
  }
  for (MixTask task : {MixTask::kKv, MixTask::kVars, MixTask::kPrefix, MixTask::kCopy}) {
    int64_t hit = 0;
    for (int64_t i = 0; i < cfg.eval.kv_samples; ++i) {
      MixDocument doc = make_mix_document(ctx, seed_for(base, mix_task_name(task), 0, i),
                                          mix, {task});
      hit += score_document(m, doc).correct.at(0);
    }
    out[mix_task_name(task)] = {
        {"accuracy", static_cast<double>(hit) / static_cast<double>(cfg.eval.kv_samples)},
        {"samples", cfg.eval.kv_samples}};
  }
  // Held-out prose: the model's perplexity per byte against a unigram byte model fitted on
  // training-stream prose (add-one smoothing).
  std::vector<double> counts(256, 1.0);
  for (int64_t i = 0; i < 64; ++i)
    for (unsigned char ch : make_prose_document(4096, seed_for(cfg.seed, "train-prose", i, 0)))
      counts[ch] += 1;
  double total = 0;
  for (double x : counts) total += x;
  double nll = 0, uni = 0;
  int64_t n = 0;
  for (int64_t i = 0; i < cfg.eval.prose_windows; ++i) {
    MixDocument doc;
    doc.text = make_prose_document(ctx, seed_for(base, "prose", i, 0));
    DocScore s = score_document(m, doc);
    nll += s.nll;
    n += s.n;
    for (unsigned char ch : doc.text) uni -= std::log(counts[ch] / total);
  }
  out["prose"] = {{"bytes", n},
                  {"ppl_per_byte", std::exp(nll / static_cast<double>(n))},
                  {"bits_per_byte", nll / static_cast<double>(n) / std::log(2.0)},
                  {"unigram_ppl_per_byte", std::exp(uni / static_cast<double>(n))},
                  {"unigram_bits_per_byte", uni / static_cast<double>(n) / std::log(2.0)}};
  return out;
}

std::string readme_keeping_history(const std::string& generated, const std::string& existing) {
  const std::string heading = "## Recipe history\n";
  size_t at = existing.rfind("\n" + heading);
  if (at != std::string::npos) ++at;
  else if (existing.rfind(heading, 0) == 0) at = 0;
  if (at == std::string::npos) return generated;
  std::string out = generated;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out + "\n\n" + existing.substr(at);
}

// ---- training loop -------------------------------------------------------------------------

namespace {

std::string readme_text(const TrainConfig& cfg, const json& eval, const std::vector<json>& log,
                        double seconds, int64_t n_params) {
  int64_t tokens = 0;
  for (const TrainPhase& ph : cfg.phases) tokens += ph.steps * ph.batch * ph.seq_len;
  char minutes[32], tok_s[32];
  std::snprintf(minutes, sizeof minutes, "%.1f", seconds / 60.0);
  std::snprintf(tok_s, sizeof tok_s, "%.0f", static_cast<double>(tokens) / std::max(seconds, 1e-9));
  std::ostringstream o;
  o << "# " << cfg.name << "\n\n"
    << "A Llama-architecture byte-level model trained by `kvbench train --config models/" << cfg.name
    << "/train.json --out models/" << cfg.name << "` on kvbench's generated mixture (prose with "
    << "needle, pass-key, key-value, variable-tracing, prefix-lookup and copy tasks; see "
    << "datasets/mixture.h). " << n_params << " parameters, " << cfg.model.n_layers << " layers, "
    << cfg.model.n_heads << " query heads / " << cfg.model.n_kv_heads << " KV heads of dim "
    << cfg.model.head_dim << ", context " << cfg.context() << " bytes.\n\n"
    << "Training: " << cfg.total_steps() << " steps, " << tokens << " tokens, " << minutes
    << " min on " << cfg.threads << " threads (" << tok_s << " tokens/s).\n\n## Loss curve (mean NLL per byte, nats; answer bytes separately)\n\n"
    << "| step | seq_len | loss | answer loss | lr |\n|---:|---:|---:|---:|---:|\n";
  const size_t stride = std::max<size_t>(1, log.size() / 20);
  for (size_t i = 0; i < log.size(); ++i)
    if (i % stride == 0 || i + 1 == log.size())
      o << "| " << log[i]["step"] << " | " << log[i]["seq_len"] << " | "
        << number_or_nan(log[i]["loss"]) << " | " << number_or_nan(log[i]["answer_loss"]) << " | "
        << number_or_nan(log[i]["lr"]) << " |\n";
  o << "\n## Evaluation (eval.json; full cache, held-out seeds)\n\n| task | accuracy |\n|---|---:|\n";
  for (const char* t : {"passkey", "needle", "kv", "vars", "prefix", "copy"})
    if (eval.contains(t)) o << "| " << t << " | " << eval[t]["accuracy"].get<double>() << " |\n";
  if (eval.contains("prose"))
    o << "\nHeld-out prose: " << eval["prose"]["ppl_per_byte"].get<double>()
      << " perplexity per byte (" << eval["prose"]["bits_per_byte"].get<double>()
      << " bits/byte); a unigram byte model: " << eval["prose"]["unigram_ppl_per_byte"].get<double>()
      << " (" << eval["prose"]["unigram_bits_per_byte"].get<double>() << " bits/byte).\n";
  o << "\nPass-key and needle accuracy by depth decile (0 = start of the document):\n\n";
  for (const char* t : {"passkey", "needle"})
    if (eval.contains(t)) o << "- " << t << ": " << eval[t]["by_depth_decile"].dump() << "\n";
  return o.str();
}

// Every training step allocates and frees the same large activations (a [B, H, T, T] score
// tensor is 268 MB at T = 2048). glibc serves such blocks with mmap and returns them with munmap,
// so each step page-faults its whole working set back in: at 2048 bytes a step spent 2/3 of its
// time in the kernel. Keeping freed memory in the heap makes it ~2.5x faster (measured: 6 steps of
// kvb-ref-s at 2048 bytes, 53 s -> 21 s on 2 cores) and changes no number.
// The command line's overrides, with the limits of train.json's own fields.
void check_train_options(const TrainOptions& opt) {
  KVB_INPUT_CHECK(opt.threads <= kMaxTrainThreads, "train --threads: ", opt.threads,
                  " is more than the ", kMaxTrainThreads, " threads a run may use");
}

void keep_freed_memory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
  mallopt(M_TOP_PAD, 256 << 20);
#endif
}

}  // namespace

int train_model(const std::string& config_path, const std::string& out_dir, const TrainOptions& opt) {
  const std::string config_text = read_file(config_path);
  TrainConfig cfg = load_train_config(config_path);
  check_train_options(opt);
  if (opt.threads > 0) cfg.threads = opt.threads;
  at::set_num_threads(static_cast<int>(cfg.threads));
  keep_freed_memory();
  const torch::ScalarType dt = cfg.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat32;
  fs::create_directories(out_dir);
  const fs::path out(out_dir), ck = out / "checkpoint";
  const std::string loss_path = (out / "loss.jsonl").string();

  ModelWeights w = init_weights(cfg.model, derive_seed(cfg.seed, "init"), dt);
  std::vector<torch::Tensor> decay, plain;
  collect(w, decay, plain);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(cfg.lr)
                                     .betas({cfg.beta1, cfg.beta2})
                                     .weight_decay(cfg.weight_decay)));
  groups.emplace_back(plain, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(cfg.lr)
                                     .betas({cfg.beta1, cfg.beta2})
                                     .weight_decay(0.0)));
  torch::optim::AdamW adam(std::move(groups), torch::optim::AdamWOptions(cfg.lr));
  std::vector<torch::Tensor> params = decay;
  params.insert(params.end(), plain.begin(), plain.end());

  int64_t step = 0;
  double elapsed = 0;
  if (fs::exists(ck / "state.json")) {
    const std::string state_path = (ck / "state.json").string();
    const json st = read_json_input(state_path);
    const JsonNode sn(st, state_path);
    KVB_INPUT_CHECK(sn.str("config", "") == config_text, state_path,
                    ": the checkpoint was made from a different train.json; remove ", ck.string(),
                    " to start over");
    const int64_t saved_step = sn.at("step").integer(0, cfg.total_steps());
    const double saved_elapsed = sn.number("elapsed_s", 0.0, 0.0, 1e12);
    std::vector<torch::Tensor> saved;
    torch::load(saved, (ck / "weights.pt").string());
    KVB_INPUT_CHECK(saved.size() == params.size(), (ck / "weights.pt").string(),
                    ": holds ", saved.size(), " tensors, expected ", params.size());
    {
      torch::NoGradGuard ng;
      for (size_t i = 0; i < params.size(); ++i) params[i].copy_(saved[i]);
    }
    torch::load(adam, (ck / "optimizer.pt").string());
    step = saved_step;
    elapsed = saved_elapsed;
    truncate_loss_log(loss_path, step);
    if (!opt.quiet) std::printf("resuming %s at step %lld\n", cfg.name.c_str(), static_cast<long long>(step));
  } else {
    write_file(loss_path, "");
  }
  int64_t n_params = 0;
  for (const auto& p : params) n_params += p.numel();

  auto save_checkpoint = [&] {
    const fs::path tmp = out / "checkpoint.tmp";
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    std::vector<torch::Tensor> snap;
    for (const auto& p : params) snap.push_back(p.detach());
    torch::save(snap, (tmp / "weights.pt").string());
    torch::save(adam, (tmp / "optimizer.pt").string());
    write_file((tmp / "state.json").string(),
               json{{"step", step}, {"elapsed_s", elapsed}, {"config", config_text}}.dump() + "\n");
    fs::remove_all(ck);
    fs::rename(tmp, ck);
  };

  const int64_t total = cfg.total_steps();
  const int64_t stop = opt.max_steps >= 0 ? std::min(opt.max_steps, total) : total;
  std::ofstream log(loss_path, std::ios::app);
  auto t_last = std::chrono::steady_clock::now();
  int64_t tokens_since = 0;
  while (step < stop) {
    const TrainPhase& ph = cfg.phase_at(step);
    Batch b = make_batch(cfg, step, ph);
    const double lr = lr_at(cfg, step);
    for (auto& g : adam.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    adam.zero_grad();
    torch::Tensor logits = train_forward(cfg.model, w, b.ids.narrow(1, 0, ph.seq_len), b.windows, ph.row_block).to(torch::kFloat32);
    torch::Tensor nll = -torch::log_softmax(logits, -1)
                             .gather(2, b.ids.narrow(1, 1, ph.seq_len).unsqueeze(2))
                             .squeeze(2);  // [B, T]
    torch::Tensor loss = (nll * b.weights).sum() / b.weights.sum();
    loss.backward();
    const double gnorm = cfg.clip > 0 ? torch::nn::utils::clip_grad_norm_(params, cfg.clip) : 0.0;
    adam.step();
    ++step;
    tokens_since += ph.batch * ph.seq_len;
    const auto now = std::chrono::steady_clock::now();
    const double dt_s = std::chrono::duration<double>(now - t_last).count();
    elapsed += dt_s;
    t_last = now;
    const double mean_nll = nll.mean().item<double>();
    const double ans = b.answer_mask.sum().item<double>() > 0
                           ? ((nll.detach() * b.answer_mask).sum() / b.answer_mask.sum()).item<double>()
                           : 0.0;
    json line = {{"step", step - 1}, {"seq_len", ph.seq_len}, {"batch", ph.batch},
                 {"loss", std::stod(fmt_float(mean_nll))}, {"answer_loss", std::stod(fmt_float(ans))},
                 {"grad_norm", std::stod(fmt_float(gnorm))}, {"lr", lr},
                 {"elapsed_s", std::round(elapsed * 10) / 10}};
    log << line.dump() << "\n";
    log.flush();
    if (!opt.quiet && (step % cfg.log_every == 0 || step == stop)) {
      std::printf("step %lld/%lld  seq %lld  loss %.4f  answer %.4f  lr %.2e  %.0f tok/s  %.0f s\n",
                  static_cast<long long>(step), static_cast<long long>(total),
                  static_cast<long long>(ph.seq_len), mean_nll, ans, lr,
                  static_cast<double>(tokens_since) / std::max(1e-9, dt_s), elapsed);
      std::fflush(stdout);
    }
    tokens_since = 0;
    if (step % cfg.checkpoint_every == 0 || step == stop) save_checkpoint();
  }
  log.close();
  if (step < total) {
    if (!opt.quiet)
      std::printf("stopped at step %lld of %lld (checkpoint in %s)\n", static_cast<long long>(step),
                  static_cast<long long>(total), ck.string().c_str());
    return 0;
  }

  // Final model directory (Model::save writes detached copies of the trained tensors).
  Model(cfg.model, w, dt, torch::kCPU).save(out_dir);
  write_file((out / "tokenizer.json").string(), byte_tokenizer_json());
  if (fs::absolute(config_path) != fs::absolute(out / "train.json"))
    write_file((out / "train.json").string(), config_text);
  const std::vector<json> lines = read_loss_log(loss_path);
  json eval = json::object();
  if (opt.eval) {
    const auto t0 = std::chrono::steady_clock::now();
    eval = evaluate_reference_model(out_dir, cfg);
    eval["eval_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    eval["train"] = {{"steps", total}, {"seconds", elapsed}, {"threads", cfg.threads},
                     {"params", n_params}, {"final_loss", lines.empty() ? json() : lines.back()["loss"]}};
    write_file((out / "eval.json").string(), eval.dump(2) + "\n");
  }
  {
    const fs::path readme = out / "README.md";
    const std::string old = fs::exists(readme) ? read_file(readme.string()) : std::string();
    write_file(readme.string(),
               readme_keeping_history(readme_text(cfg, eval, lines, elapsed, n_params), old));
  }
  fs::remove_all(ck);
  if (!opt.quiet) std::printf("trained %s: %lld steps in %.0f s -> %s\n", cfg.name.c_str(),
                              static_cast<long long>(total), elapsed, out_dir.c_str());
  return 0;
}

int train_model_process_per_phase(const std::string& config_path, const std::string& out_dir,
                                  const TrainOptions& opt) {
#if defined(__unix__)
  // Only the configuration is read here: no tensor has been made in this process, so each child
  // starts as a fresh process would (libtorch's thread pools are created on first use).
  const TrainConfig cfg = load_train_config(config_path);
  check_train_options(opt);
  const int64_t total = cfg.total_steps();
  const int64_t stop = opt.max_steps >= 0 ? std::min(opt.max_steps, total) : total;
  // A resumed run starts at the phase its checkpoint is in (train_model checks the checkpoint).
  const fs::path state = fs::path(out_dir) / "checkpoint" / "state.json";
  int64_t done = 0;
  if (fs::exists(state)) {
    const json st = read_json_input(state.string());
    done = JsonNode(st, state.string()).integer("step", 0, 0, total);
  }
  int64_t boundary = 0;
  for (size_t i = 0; i + 1 < cfg.phases.size(); ++i) {
    boundary += cfg.phases[i].steps;
    if (boundary >= stop) break;
    if (boundary <= done) continue;
    std::fflush(stdout);
    std::fflush(stderr);
    const pid_t pid = fork();
    KVB_CHECK(pid >= 0, "train: fork failed");
    if (pid == 0) {
      // The child trains up to the boundary ("stopped at step N"; the next phase resumes) and
      // leaves through the caller, so its errors get the CLI's messages and exit codes.
      TrainOptions o = opt;
      o.max_steps = boundary;
      return train_model(config_path, out_dir, o);
    }
    int status = 0;
    KVB_CHECK(waitpid(pid, &status, 0) == pid, "train: waitpid failed");
    if (!WIFEXITED(status)) return 1;
    if (WEXITSTATUS(status) != 0) return WEXITSTATUS(status);
  }
#endif
  return train_model(config_path, out_dir, opt);
}

}  // namespace kvb
