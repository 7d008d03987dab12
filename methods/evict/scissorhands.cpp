// `scissorhands(budget=N, history=400, recent=N/2)`: Scissorhands (Liu et al. 2023, "Exploiting
// the Persistence of Importance Hypothesis for LLM KV Cache Compression at Test Time"). A token
// is important to a query when the attention it gets exceeds the average, 1/n, n = the number of
// tokens that query attends (the view's slots plus its own chunk, causally). Each slot counts the
// queries among the last `history` queries of the layer (prefill and decode alike) to which it
// was important; over `budget` slots, the slot of lowest count outside the `recent` most recent
// tokens is evicted (after a long chunk: the top `budget - recent` older slots are kept plus the
// recent ones). Ties in count: the older token goes first.
//
// The window is honest: each slot holds one importance bit per query of the window, a ring of
// `history` bits (query i writes bit i mod history, erasing query i - history's), packed in
// ceil(history / 8) bytes per slot and KV head, counted as metadata beside the held counts (4
// bytes per slot); a slot appended after a query simply holds 0 for it. So a token important
// long ago but not within the last `history` queries counts 0.
//
// GQA: importance to a query is judged per KV head on the mean of the attention the G query
// heads of the group give the token (the paper is MHA: per head).
// Deviation: the paper evicts in batches (it lets the cache exceed the budget, then drops a
// fixed amount m at once); we evict continuously, one slot whenever the budget is exceeded (drop
// amount 1), so the cache holds exactly min(tokens, budget) slots and the promise is exact. The
// recent window's default (budget/2) is our choice, as in h2o.
#include "common/check.h"
#include "methods/evict/score_selector.h"
#include "methods/registry.h"

namespace kvb {
namespace {

class ScissorhandsState : public ScoreSelectorState {
 public:
  ScissorhandsState(const ScoreRule& rule, const ModelShape& shape, int64_t history)
      : ScoreSelectorState(rule, shape),
        history_(history),
        bytes_((history + 7) / 8),
        layers_(static_cast<size_t>(shape.n_layers)) {}
  bool wants_attention(int layer) const override { return true; }

 protected:
  // New slots: count 0, no importance bits.
  torch::Tensor appended(int layer, const KVAppend& a, const SelectContext& ctx) override {
    const int64_t b = a.k.size(0), h = a.k.size(1), t = a.k.size(2);
    Records& R = layers_[static_cast<size_t>(layer)];
    if (!R.bits.defined() || R.bits.size(2) < R.len + t) {
      const int64_t cap = R.bits.defined() ? R.bits.size(2) : 0;
      torch::Tensor grown =
          torch::zeros({b, h, std::max(R.len + t, std::max<int64_t>(64, 2 * cap)), bytes_},
                       a.k.options().dtype(torch::kUInt8));
      if (R.len > 0) grown.narrow(2, 0, R.len).copy_(R.bits.narrow(2, 0, R.len));
      R.bits = grown;
    }
    R.bits.narrow(2, R.len, t).zero_();
    R.len += t;
    return torch::zeros({b, h, t}, a.k.options().dtype(torch::kFloat32));
  }

  // Writes the chunk's queries' importance bits and returns the new counts (replacing the held
  // ones): [B, H_q, T, S] -> [B, H_kv, S].
  torch::Tensor observed(int layer, const torch::Tensor& probs, const SelectContext& ctx) override {
    Records& R = layers_[static_cast<size_t>(layer)];
    const int64_t b = probs.size(0), h = shape().n_head_kv, t = probs.size(2), s = probs.size(3);
    KVB_CHECK(s == R.len, "scissorhands: attention over ", s, " slots, ", R.len, " held");
    torch::Tensor a = probs.to(torch::kFloat32).view({b, h, probs.size(1) / h, t, s}).mean(2);
    // Query t attends the s - t' slots before it: n_t = (s - t) + t + 1 = s - (T - 1 - t).
    torch::Tensor n = torch::arange(s - t + 1, s + 1, a.options());   // [T]
    torch::Tensor important = a > n.reciprocal().view({1, 1, t, 1});  // [B, H_kv, T, S]
    const int64_t w = std::min(t, history_);  // earlier queries of the chunk are overwritten
    if (w * 8 <= history_) {
      // A few queries (decode): each rewrites one bit per slot, and the held count moves by
      // (new bit - the erased query's bit): O(S) per query, not O(S x history).
      torch::Tensor count = held_scores(layer).clone();  // [B, H_kv, S]
      torch::Tensor live = R.bits.narrow(2, 0, s);
      for (int64_t j = t - w; j < t; ++j) {
        const int64_t c = (R.queries + j) % history_;
        const int bit = static_cast<int>(c % 8);
        torch::Tensor byte = live.select(3, c / 8);  // [B, H_kv, S] uint8, a view
        torch::Tensor old = byte.bitwise_and(1 << bit).ne(0);
        torch::Tensor now = important.select(2, j);  // [B, H_kv, S] bool
        count.add_(now.to(torch::kFloat32)).sub_(old.to(torch::kFloat32));
        byte.bitwise_and_(0xFF ^ (1 << bit)).add_(now.to(torch::kUInt8).mul_(1 << bit));
      }
      R.queries += t;
      return count;
    }
    torch::Tensor cols = torch::arange(R.queries + t - w, R.queries + t, torch::kLong)
                             .remainder_(history_)
                             .to(a.device());
    torch::Tensor bits = unpack(R.bits.narrow(2, 0, s));  // [B, H_kv, S, history] bool
    bits.index_copy_(3, cols, important.narrow(2, t - w, w).transpose(2, 3));
    R.bits.narrow(2, 0, s).copy_(pack(bits));
    R.queries += t;
    return bits.sum(-1).to(torch::kFloat32);
  }

  // Counts, ties to the newer token: count * 2^25 + position (exact in float64; positions are
  // below 2^24).
  torch::Tensor decision_scores(int layer, const SelectContext& ctx,
                                const torch::Tensor& protect) override {
    torch::Tensor count = held_scores(layer).to(torch::kFloat64);  // [B, H_kv, S]
    return count * 33554432.0 + ctx.store.positions(layer).to(count.options());
  }

  void kept(int layer, const torch::Tensor& idx) override {
    Records& R = layers_[static_cast<size_t>(layer)];
    torch::Tensor g =
        R.bits.narrow(2, 0, R.len)
            .gather(2, idx.unsqueeze(-1).expand({idx.size(0), idx.size(1), idx.size(2), bytes_}));
    R.len = idx.size(2);
    R.bits.narrow(2, 0, R.len).copy_(g);
  }

  void dropped_swap(int layer, const torch::Tensor& slot, int64_t slots_before) override {
    Records& R = layers_[static_cast<size_t>(layer)];
    torch::Tensor src = R.bits.narrow(2, slots_before - 1, 1).clone();  // [B, H_kv, 1, W]
    R.bits.scatter_(2, slot.view({slot.size(0), slot.size(1), 1, 1}).expand_as(src), src);
    R.len = slots_before - 1;
  }

  int64_t extra_metadata_bytes(int layer) const override {
    const Records& R = layers_[static_cast<size_t>(layer)];
    return R.bits.defined() ? R.bits.size(0) * R.bits.size(1) * R.len * bytes_ : 0;
  }

  std::unique_ptr<ScoreSelectorState> copy() const override {
    auto c = std::make_unique<ScissorhandsState>(*this);
    for (Records& R : c->layers_)
      if (R.bits.defined()) R.bits = R.bits.clone();
    return c;
  }

 private:
  struct Records {
    torch::Tensor bits;  // [B, H_kv, capacity, ceil(history/8)] uint8, first len live
    int64_t len = 0;
    int64_t queries = 0;  // queries observed in this layer so far
  };

  torch::Tensor unpack(const torch::Tensor& packed) const {  // [..., W] uint8 -> [..., history]
    torch::Tensor shift = torch::arange(8, packed.options().dtype(torch::kInt32));
    torch::Tensor bits =
        packed.to(torch::kInt32).unsqueeze(-1).bitwise_right_shift(shift).bitwise_and_(1);
    return bits.flatten(-2).narrow(-1, 0, history_).to(torch::kBool);
  }

  torch::Tensor pack(const torch::Tensor& bits) const {  // [..., history] bool -> [..., W] uint8
    torch::Tensor padded =
        torch::constant_pad_nd(bits.to(torch::kInt32), {0, bytes_ * 8 - history_});
    torch::Tensor weight =
        torch::tensor({1, 2, 4, 8, 16, 32, 64, 128}, torch::kInt32).to(padded.device());
    std::vector<int64_t> shape(padded.sizes().begin(), padded.sizes().end() - 1);
    shape.push_back(bytes_);
    shape.push_back(8);
    return (padded.view(shape) * weight).sum(-1).to(torch::kUInt8);
  }

  int64_t history_, bytes_;
  std::vector<Records> layers_;
};

class ScissorhandsSelector : public ScoreSelector {
 public:
  explicit ScissorhandsSelector(const StageSpec& stage)
      : ScoreSelector(stage, {.budget = spec_int(stage, "budget"),
                              .recent = spec_int(stage, "recent"),
                              .when = ScoreRule::kOverBudget,
                              .held_scores = true,
                              .replace_observed = true}),
        history_(spec_int(stage, "history")) {}
  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override {
    return std::make_unique<ScissorhandsState>(rule(), shape, history_);
  }
  // The importance ring: ceil(history/8) bytes per slot and KV head.
  int64_t extra_promised_metadata(const ModelShape& shape, int64_t slots) const override {
    return shape.n_head_kv * slots * ((history_ + 7) / 8);
  }

 private:
  int64_t history_;
};

}  // namespace

MethodEntry scissorhands_entry() {
  return {
      .name = "scissorhands",
      .family = "evict",
      .help =
          "Scissorhands: a token is important to a query when its attention (mean over a KV "
          "group) exceeds 1/(tokens attended); each slot counts how often it was important over "
          "the last `history` queries; over `budget` slots, evict the lowest count outside the "
          "`recent` window (one slot at a time).",
      .params = {{"budget", "int", "", {}, 1, kMaxSpecTokens, "slots kept per KV head"},
                 {"history",
                  "int",
                  "400",
                  {},
                  1,
                  kMaxSpecGroup,
                  "queries whose importance records count (sliding window)"},
                 {"recent",
                  "int",
                  "auto",
                  {},
                  0,
                  kMaxSpecTokens,
                  "most recent tokens always kept (auto: budget/2)"}},
      .make = SelectorFactory(
          [](const StageSpec& s) { return std::make_unique<ScissorhandsSelector>(s); }),
      .finalize =
          [](const std::string& text, StageSpec& s) {
            if (s.params.at("recent") == "auto")
              s.params["recent"] = std::to_string(spec_int(s, "budget") / 2);
            if (spec_int(s, "recent") > spec_int(s, "budget"))
              stage_fail(text, s, "recent must not exceed budget");
          },
      .contract = {.examples = {"scissorhands(budget=128)",
                                "scissorhands(budget=100,history=37,recent=10)"},
                   .view_tolerance = exact_view,
                   .lossless = {"scissorhands(budget=37,recent=0)"},
                   .compressing = {"scissorhands(budget=12,history=8)"}},
  };
}

}  // namespace kvb
