#include "methods/evict/headwise.h"

#include <algorithm>
#include <filesystem>
#include <limits>

#include "common/check.h"
#include "common/hash.h"
#include "common/json_io.h"
#include "common/json_reader.h"
#include "methods/head_split_store.h"
#include "methods/registry.h"

namespace kvb {
namespace {

// Per layer and head: retrieval heads keep everything; streaming heads keep the first `sink`
// tokens of the layer and the `recent` latest, evicting as StreamingLLM does when tokens arrive.
class HeadwiseState : public SelectorState {
 public:
  HeadwiseState(int64_t sink, int64_t recent, std::vector<uint8_t> streaming, int64_t n_layers,
                int64_t n_head_kv)
      : sink_(sink), recent_(recent), streaming_(std::move(streaming)), n_head_kv_(n_head_kv),
        first_(static_cast<size_t>(n_layers), -1) {}

  void on_append(int layer, const KVAppend& a, const SelectContext&) override {
    if (first_[layer] < 0 && a.pos.size(0) > 0) first_[layer] = a.pos[0].item<int64_t>();
  }

  // Streaming heads holding more than sink + recent slots: one over (a decode step) drops its
  // oldest non-sink slot (drop_one, -1 in every other head); more (a chunk) keeps the sinks and
  // the latest `recent` (keep + keep_len; other heads keep all they hold). Only the over-full
  // streaming heads' own positions are read (retrieval heads cost nothing per step).
  Eviction select(int layer, const SelectContext& ctx) override {
    const auto* split = dynamic_cast<const HeadSplitStore*>(&ctx.store);
    KVB_CHECK(split, "head-wise selector: the chain's store is not head-split");
    const int64_t cap = sink_ + recent_, b = split->batch(), h = n_head_kv_;
    struct Over {
      int64_t b, h;
      std::vector<int64_t> pos;  // the head's slot positions, slot order
    };
    std::vector<Over> over;
    int64_t most_over = 0;
    for (int64_t bi = 0; bi < b; ++bi)
      for (int64_t hi = 0; hi < h; ++hi) {
        if (!streaming(layer, hi)) continue;
        const SlotStore& one = *split->head(bi, hi);
        const int64_t n = one.slots(layer);
        if (n <= cap) continue;
        most_over = std::max(most_over, n - cap);
        torch::Tensor p = one.positions(layer).reshape({-1}).to(torch::kCPU, torch::kLong).contiguous();
        over.push_back({bi, hi, std::vector<int64_t>(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + n)});
      }
    if (over.empty()) return {};
    const int64_t sink_end = first_[static_cast<size_t>(layer)] + sink_;  // sinks: positions below
    Eviction e;
    if (most_over == 1) {
      torch::Tensor drop = torch::full({b, h}, -1, torch::kLong);
      auto d = drop.accessor<int64_t, 2>();
      for (const Over& o : over) {  // the oldest non-sink slot
        int64_t best = -1;
        for (int64_t j = 0; j < static_cast<int64_t>(o.pos.size()); ++j)
          if (o.pos[j] >= sink_end && (best < 0 || o.pos[j] < o.pos[best])) best = j;
        d[o.b][o.h] = best;  // -1 only if every slot is a sink (cannot exceed cap then)
      }
      e.drop_one = drop;
      return e;
    }
    const int64_t s = split->slots(layer);
    torch::Tensor keep = torch::arange(s, torch::kLong).view({1, 1, s}).repeat({b, h, 1});
    torch::Tensor len = split->head_slots(layer);
    auto k = keep.accessor<int64_t, 3>();
    auto l = len.accessor<int64_t, 2>();
    for (const Over& o : over) {  // sinks first, then the latest; ties to the later slot
      std::vector<int64_t> idx(o.pos.size());
      for (size_t j = 0; j < idx.size(); ++j) idx[j] = static_cast<int64_t>(j);
      auto later = [&](int64_t x, int64_t y) {
        const bool sx = o.pos[x] < sink_end, sy = o.pos[y] < sink_end;
        if (sx != sy) return sx;
        return o.pos[x] != o.pos[y] ? o.pos[x] > o.pos[y] : x > y;
      };
      std::partial_sort(idx.begin(), idx.begin() + cap, idx.end(), later);
      std::sort(idx.begin(), idx.begin() + cap);
      for (int64_t j = 0; j < cap; ++j) k[o.b][o.h][j] = idx[static_cast<size_t>(j)];
      l[o.b][o.h] = cap;
    }
    e.keep = keep;
    e.keep_len = len;
    return e;
  }

  std::unique_ptr<SelectorState> clone() const override {
    return std::make_unique<HeadwiseState>(*this);
  }

 private:
  bool streaming(int layer, int64_t head) const {
    return streaming_[static_cast<size_t>(layer * n_head_kv_ + head)] != 0;
  }
  int64_t sink_, recent_;
  std::vector<uint8_t> streaming_;  // [layer * H_kv + head]
  int64_t n_head_kv_;
  std::vector<int64_t> first_;  // per layer: position of the first token appended
};

}  // namespace

std::optional<std::string> roles_problem(const std::string& roles) {
  if (roles == "calibrated") return std::nullopt;
  if (roles.empty() || roles.size() > 256) return "a pattern of 1 to 256 characters r and s";
  for (char c : roles)
    if (c != 'r' && c != 's')
      return "expected calibrated or a pattern of r (retrieval) and s (streaming)";
  return std::nullopt;
}

std::vector<uint8_t> roles_from_pattern(const std::string& pattern, int64_t n) {
  std::vector<uint8_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    out[static_cast<size_t>(i)] = pattern[static_cast<size_t>(i) % pattern.size()] == 's';
  return out;
}

int64_t streaming_in_pattern(const std::string& pattern, int64_t n) {
  const std::vector<uint8_t> r = roles_from_pattern(pattern, n);
  return std::count(r.begin(), r.end(), 1);
}

std::string roles_to_pattern(const std::vector<uint8_t>& streaming) {
  std::string s;
  for (uint8_t x : streaming) s += x ? 's' : 'r';
  return s;
}

HeadwiseSelector::HeadwiseSelector(const StageSpec& stage, bool compensate)
    : SelectorMethod(stage), sink_(spec_int(stage, "sink")), recent_(spec_int(stage, "recent")),
      compensate_(compensate), roles_param_(stage.params.at("roles")) {}

int64_t HeadwiseSelector::streaming_heads(const ModelShape& shape) const {
  const int64_t n = shape.n_layers * shape.n_head_kv;
  if (roles_param_ != "calibrated") return streaming_in_pattern(roles_param_, n);
  return calibrated_streaming(n);
}

std::unique_ptr<SelectorState> HeadwiseSelector::make_selector(const ModelShape& shape) const {
  const int64_t n = shape.n_layers * shape.n_head_kv;
  std::vector<uint8_t> roles;
  if (roles_param_ != "calibrated") {
    roles = roles_from_pattern(roles_param_, n);
  } else {
    KVB_INPUT_CHECK(!roles_.empty(), stage().name, ": head roles are not calibrated for this model (",
                    spec(),
                    "): run it through `kvbench run`, which calibrates it on the model, or give "
                    "explicit roles=<pattern of r and s>");
    KVB_INPUT_CHECK(static_cast<int64_t>(roles_.size()) == n, spec(), ": calibrated for ",
                    roles_.size(), " KV heads, the model has ", n);
    roles = roles_;
  }
  return std::make_unique<HeadwiseState>(sink_, recent_, std::move(roles), shape.n_layers,
                                         shape.n_head_kv);
}

// Retrieval heads hold every token; streaming heads min(tokens, sink + recent), plus their
// compensation slot once they dropped any. Heads that dropped hold explicit positions.
SelectorMethod::RaggedPromise HeadwiseSelector::promised_ragged(const ModelShape& shape,
                                                                int64_t tokens,
                                                                int64_t /*prompt*/) const {
  const int64_t total = shape.n_layers * shape.n_head_kv;
  const int64_t streaming = streaming_heads(shape), retrieval = total - streaming;
  const int64_t cap = sink_ + recent_;
  const bool dropped = tokens > cap;
  RaggedPromise r;
  r.compensation_slots = compensate_ && dropped ? streaming : 0;
  r.slots = retrieval * tokens + streaming * std::min(tokens, cap) + r.compensation_slots;
  r.dropped_slots = dropped ? streaming * cap : 0;
  r.max_head_slots = retrieval > 0 ? tokens : std::min(tokens, cap);
  return r;
}

std::string HeadwiseSelector::artifact_path(const CalibrationContext& ctx) const {
  KVB_INPUT_CHECK(!ctx.cache_dir.empty(), spec(), ": calibration needs a cache directory");
  KVB_INPUT_CHECK(!ctx.model_id.empty(), spec(), ": calibration needs the model's id");
  return (std::filesystem::path(ctx.cache_dir) / stage().name /
          (ctx.model_id + "-" + hex64(fnv1a64(spec())) + ".json"))
      .string();
}

std::optional<std::vector<uint8_t>> HeadwiseSelector::read_artifact(
    const CalibrationContext& ctx, const std::string& path) const {
  if (!file_exists(path)) return std::nullopt;
  try {
    const nlohmann::json j = read_json_input(path);
    const JsonNode root(j, path);
    const int64_t n = ctx.shape.n_layers * ctx.shape.n_head_kv;
    if (root.at("method").str() != stage().name || root.at("spec").str() != spec() ||
        root.at("model_id").str() != ctx.model_id ||
        root.at("n_layers").integer() != ctx.shape.n_layers ||
        root.at("n_head_kv").integer() != ctx.shape.n_head_kv)
      return std::nullopt;
    const std::string pattern = root.at("roles").str();
    if (static_cast<int64_t>(pattern.size()) != n || roles_problem(pattern) ||
        streaming_in_pattern(pattern, n) != calibrated_streaming(n))
      return std::nullopt;
    return roles_from_pattern(pattern, n);
  } catch (const InputError&) {
    return std::nullopt;  // unreadable or damaged: calibrate again and replace it
  }
}

void HeadwiseSelector::write_artifact(const CalibrationContext& ctx, const std::string& path,
                                      const std::vector<uint8_t>& roles,
                                      nlohmann::json body) const {
  body["method"] = stage().name;
  body["spec"] = spec();
  body["model_id"] = ctx.model_id;
  body["n_layers"] = ctx.shape.n_layers;
  body["n_head_kv"] = ctx.shape.n_head_kv;
  body["roles"] = roles_to_pattern(roles);
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  write_file(path, body.dump(1) + "\n");
}

std::shared_ptr<HeadwiseSelector> HeadwiseSelector::with_roles(std::vector<uint8_t> roles) const {
  std::shared_ptr<HeadwiseSelector> c = copy();
  c->roles_param_ = "calibrated";
  c->roles_ = std::move(roles);
  c->artifact_.reset();
  return c;
}

std::shared_ptr<const SelectorMethod> HeadwiseSelector::with_artifact(std::vector<uint8_t> roles,
                                                                      const std::string& path,
                                                                      bool computed) const {
  std::shared_ptr<HeadwiseSelector> c = with_roles(std::move(roles));
  c->artifact_ = CalibrationArtifact{spec(), path, hex64(fnv1a64(read_file(path))), computed};
  return c;
}

double answer_log_likelihood(const torch::Tensor& logits, const std::vector<int64_t>& ids,
                             int64_t from) {
  const int64_t n = static_cast<int64_t>(ids.size());
  KVB_CHECK(from >= 1 && from <= n && logits.size(0) == n, "answer_log_likelihood: rows ",
            logits.size(0), " for ", n, " ids from ", from);
  torch::Tensor lp = torch::log_softmax(logits.narrow(0, from - 1, n - from).to(torch::kFloat64), -1);
  torch::Tensor want =
      torch::tensor(std::vector<int64_t>(ids.begin() + from, ids.end()), torch::kLong).view({-1, 1});
  return lp.gather(1, want.to(lp.device())).sum().item<double>();
}

}  // namespace kvb
