// `quest(page=16, budget=1024)`: Quest, query-aware sparsity (Tang et al. 2024). Keeps every slot;
// reads only the pages a decode query may need. It saves bandwidth, not memory.
//
// Pages: per layer, batch row and KV head, slots [i*page, (i+1)*page) in slot order (the last
// page may be partial). For each page the state holds the per-channel minimum and maximum of the
// keys attention reads (the store's view: post-RoPE, dequantized), fp32, so 2 x pages x D x 4
// bytes per (batch row, KV head) of metadata (memory(): metadata_bytes; promised_metadata()).
//
// Reading (read_bias, for the queries about to attend):
//   - a chunk of T > 1 queries (prefill) reads everything, as Quest does;
//   - a decode query (T == 1): when the layer holds at most budget/page pages, everything;
//     otherwise each page's upper bound of q.k, per query head h of the KV group,
//       U_h(page) = sum_d max(q_hd * min_d, q_hd * max_d)  >=  q_h . k  for every key k of the page,
//     aggregated over the group's query heads by the MAXIMUM (Quest is MHA: one head per KV head;
//     with GQA a page is read when some query head's bound ranks it, max_h U_h bounds every head's
//     q_h . k); the page holding the newest slots is always read, and the other budget/page - 1
//     pages are those of highest aggregated bound (torch::topk; ties as topk breaks them). The
//     slots of every other page get bias -inf. Bounds use q as given (post-RoPE, before the
//     1/sqrt(D) scale, which does not change the ranking).
// The bounds of the pages the read takes are what it reads besides the slots:
// read_metadata_bytes() is every page bound of the layer (the estimate reads them all), 0 when
// nothing was selected (everything read).
//
// Slots are never dropped by Quest itself. In a chain with a selector that drops (streaming+quest,
// quest+h2o), the pages follow the store's slot order after the drop: bounds of pages from the
// first slot that moved onward are recomputed from the store's keys at the next append or read
// (lazily). The bounds describe the keys as they were when their page was last refreshed: with a
// store that re-encodes held keys later (KIVI quantizing its full-precision residual) they are
// those of the keys before that, within the quantization error. A chain with a stage that holds
// keys before RoPE (streaming(positions=cache)) is refused: the bounds would be of the wrong keys.
#include <algorithm>
#include <limits>
#include <vector>

#include "methods/evict/quest.h"

#include "common/check.h"
#include "kernels/cpu/quest_bounds.h"
#include "kernels/cpu/topk.h"
#include "methods/registry.h"

namespace kvb {

QuestBounds quest_page_bounds(const torch::Tensor& k, int64_t page) {
  const int64_t B = k.size(0), H = k.size(1), S = k.size(2), D = k.size(3);
  const int64_t pages = (S + page - 1) / page, pad = pages * page - S;
  torch::Tensor kf = k.to(torch::kFloat32);
  torch::Tensor lo_src = kf, hi_src = kf;
  if (pad > 0) {  // the partial last page: padding that never wins a min or a max
    const float inf = std::numeric_limits<float>::infinity();
    lo_src = torch::cat({kf, torch::full({B, H, pad, D}, inf, kf.options())}, 2);
    hi_src = torch::cat({kf, torch::full({B, H, pad, D}, -inf, kf.options())}, 2);
  }
  return {std::get<0>(lo_src.view({B, H, pages, page, D}).min(3)),
          std::get<0>(hi_src.view({B, H, pages, page, D}).max(3))};
}

torch::Tensor quest_page_scores(const torch::Tensor& q, const QuestBounds& b) {
  const int64_t B = b.lo.size(0), H = b.lo.size(1), D = b.lo.size(3);
  KVB_CHECK(q.size(1) % H == 0 && q.size(2) == 1, "quest: queries ", q.sizes(), " for ", H,
            " KV heads");
  torch::Tensor qg = q.to(torch::kFloat32).reshape({B, H, q.size(1) / H, 1, D});
  return torch::maximum(qg * b.lo.unsqueeze(2), qg * b.hi.unsqueeze(2)).sum(-1);
}

namespace {

constexpr int64_t kBoundBytes = 4;  // fp32 min and max

class QuestState : public SelectorState {
 public:
  QuestState(int64_t page, int64_t pages_read, const ModelShape& shape)
      : page_(page), pages_read_(pages_read), layers_(static_cast<size_t>(shape.n_layers)) {}

  void on_append(int layer, const KVAppend& a, const SelectContext& ctx) override {
    Layer& L = layers_[static_cast<size_t>(layer)];
    const int64_t s = ctx.store.slots(layer), t = a.k.size(2);
    L.batch = a.k.size(0);
    L.heads = a.k.size(1);
    L.dim = a.k.size(3);
    L.valid = std::min(L.valid, std::max<int64_t>(0, s - t) / page_);
    L.slots = s;
    refresh(L, ctx.store, layer);
  }

  // A drop moves slots: pages from the first slot that changed onward are stale.
  void keep(int layer, const torch::Tensor& idx) override {  // [B, H_kv, S']
    Layer& L = layers_[static_cast<size_t>(layer)];
    const int64_t n = idx.size(2);
    torch::Tensor same = idx.eq(torch::arange(n, idx.options()).view({1, 1, n})).all(1).all(0);
    torch::Tensor moved = same.logical_not().nonzero();
    const int64_t first = moved.numel() == 0 ? n : moved[0][0].item<int64_t>();
    L.valid = std::min(L.valid, first / page_);
    L.slots = n;
  }
  void drop_swap(int layer, const torch::Tensor& slot, int64_t slots_before) override {
    Layer& L = layers_[static_cast<size_t>(layer)];
    L.valid = std::min(L.valid, slot.min().item<int64_t>() / page_);
    L.slots = slots_before - 1;
  }

  torch::Tensor read_bias(int layer, const torch::Tensor& q, const SelectContext& ctx) override {
    Layer& L = layers_[static_cast<size_t>(layer)];
    L.read_bytes = 0;
    const int64_t s = ctx.store.slots(layer);
    if (q.size(2) != 1 || s == 0) return {};  // prefill chunks read everything
    const int64_t pages = (s + page_ - 1) / page_;
    if (pages <= pages_read_) return {};
    L.slots = s;
    refresh(L, ctx.store, layer);
    const int64_t B = L.batch, H = L.heads;
    // On the CPU the kernels (kernels/cpu/quest_bounds.h, topk.h) give the same bounds bit for
    // bit and the same pages as the torch ops below.
    const bool cpu = q.device().is_cpu() && L.lo.device().is_cpu();
    torch::Tensor score =
        cpu ? kernels::quest_page_upper_bounds(q, L.lo, L.hi)          // [B, H_kv, P]
            : std::get<0>(quest_page_scores(q, {L.lo, L.hi}).max(2));  // [B, H_kv, G, P] -> max
    score.narrow(-1, pages - 1, 1).fill_(std::numeric_limits<float>::infinity());
    torch::Tensor top =  // [B, H_kv, K]
        cpu ? kernels::topk_indices(score, pages_read_, kernels::TopkTies::kLikeTorch)
            : std::get<1>(score.topk(pages_read_, -1));
    torch::Tensor read = torch::zeros({B, H, pages}, q.options().dtype(torch::kBool));
    read.scatter_(-1, top, true);
    torch::Tensor slot_read = read.repeat_interleave(page_, -1).narrow(-1, 0, s);  // [B, H_kv, S]
    L.read_bytes = bound_bytes(L);
    return torch::zeros({B, H, s}, q.options().dtype(torch::kFloat32))
        .masked_fill_(slot_read.logical_not(), -std::numeric_limits<float>::infinity());
  }

  int64_t read_metadata_bytes(int layer) const override {
    return layers_[static_cast<size_t>(layer)].read_bytes;
  }
  // The bounds of every page of the held slots (what the state holds once refreshed: it
  // refreshes at every append and read).
  int64_t metadata_bytes(int layer) const override {
    return bound_bytes(layers_[static_cast<size_t>(layer)]);
  }

  std::unique_ptr<SelectorState> clone() const override {
    auto c = std::make_unique<QuestState>(*this);
    for (Layer& L : c->layers_) {
      if (L.lo.defined()) L.lo = L.lo.clone();
      if (L.hi.defined()) L.hi = L.hi.clone();
    }
    return c;
  }

 private:
  struct Layer {
    torch::Tensor lo, hi;  // [B, H_kv, P, D] fp32 per-channel key min / max of each page
    int64_t valid = 0;     // leading pages whose bounds are current
    int64_t slots = 0;     // slots the store holds (as last told)
    int64_t batch = 0, heads = 0, dim = 0;
    int64_t read_bytes = 0;  // bounds the latest read_bias read
  };

  int64_t bound_bytes(const Layer& L) const {
    return L.batch * L.heads * ((L.slots + page_ - 1) / page_) * L.dim * 2 * kBoundBytes;
  }

  // Bounds of pages valid .. ceil(S / page) - 1 from the store's keys; the rest are kept.
  void refresh(Layer& L, const SlotStore& store, int layer) const {
    const int64_t s = store.slots(layer), pages = (s + page_ - 1) / page_;
    L.slots = s;
    if (s == 0) {
      L.lo = L.hi = torch::Tensor();
      L.valid = 0;
      return;
    }
    if (L.valid >= pages && L.lo.defined() && L.lo.size(2) == pages) return;
    L.valid = std::min(L.valid, pages);
    const int64_t from = L.valid * page_, n = s - from;
    QuestBounds fresh = quest_page_bounds(store.view(layer).k.narrow(2, from, n), page_);
    torch::Tensor lo = fresh.lo, hi = fresh.hi;
    if (L.valid > 0 && L.lo.defined()) {
      lo = torch::cat({L.lo.narrow(2, 0, L.valid), lo}, 2);
      hi = torch::cat({L.hi.narrow(2, 0, L.valid), hi}, 2);
    }
    L.lo = lo;
    L.hi = hi;
    L.valid = pages;
  }

  int64_t page_, pages_read_;
  std::vector<Layer> layers_;
};

class QuestSelector : public SelectorMethod {
 public:
  explicit QuestSelector(const StageSpec& stage)
      : SelectorMethod(stage), page_(spec_int(stage, "page")),
        pages_read_(spec_int(stage, "budget") / spec_int(stage, "page")) {}
  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override {
    return std::make_unique<QuestState>(page_, pages_read_, shape);
  }
  int64_t promised_slots(int64_t tokens, int64_t /*prompt*/) const override { return tokens; }
  bool keeps_slots_known_in_advance() const override { return true; }  // all of them
  int64_t promised_kept_in(int64_t tokens, int64_t /*prompt*/, int64_t from,
                           int64_t to) const override {
    return std::max<int64_t>(0, std::min(to, tokens) - from);
  }
  int64_t promised_metadata(const ModelShape& shape, int64_t slots) const override {
    return shape.n_head_kv * ((slots + page_ - 1) / page_) * shape.head_dim * 2 * kBoundBytes;
  }
  bool reads_post_rope_keys() const override { return true; }

 private:
  int64_t page_, pages_read_;
};

}  // namespace

MethodEntry quest_entry() {
  return {
      .name = "quest",
      .family = "evict",
      .help =
          "Quest query-aware sparsity: keeps every token; per page of `page` slots holds the "
          "keys' per-channel min and max; each decode query reads only the budget/page pages of "
          "highest bound sum_d max(q_d min_d, q_d max_d) (max over the KV group's query heads), "
          "the newest page always. Saves bandwidth (bytes read per step), not memory.",
      .params = {{"page", "int", "16", {}, 1, kMaxSpecGroup, "slots per page"},
                 {"budget",
                  "int",
                  "1024",
                  {},
                  1,
                  kMaxSpecTokens,
                  "slots read per decode step per KV head (budget/page pages, at least 1)"}},
      .make =
          SelectorFactory([](const StageSpec& s) { return std::make_unique<QuestSelector>(s); }),
      .finalize =
          [](const std::string& text, StageSpec& s) {
            if (spec_int(s, "budget") < spec_int(s, "page"))
              stage_fail(text, s, "budget must be at least one page");
          },
      .contract = {.examples = {"quest", "quest(page=4,budget=16)"},
                   .view_tolerance = exact_view,
                   .lossless = {"quest(page=4,budget=40)", "quest(page=16,budget=48)"},
                   .compressing = {"quest(page=2,budget=4)"}},
  };
}

}  // namespace kvb
