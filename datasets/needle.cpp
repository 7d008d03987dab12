#include "datasets/needle.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "datasets/prose.h"
#include "datasets/rng.h"
#include "datasets/text.h"
#include "common/check.h"

namespace kvb {
namespace {

std::vector<int64_t> encode64(const Tokenizer& tok, const std::string& s, bool special) {
  std::vector<int32_t> ids = tok.encode(s, special);
  return {ids.begin(), ids.end()};
}

std::string join_cities(const std::vector<std::string>& c) {
  std::string s;
  for (size_t i = 0; i < c.size(); ++i)
    s += (i == 0 ? "" : i + 1 == c.size() ? " and " : ", ") + c[i];
  return s;
}

}  // namespace

std::string fill_template(std::string t,
                          const std::vector<std::pair<std::string, std::string>>& vars) {
  for (const auto& [k, v] : vars) {
    const std::string key = "{" + k + "}";
    for (size_t p = t.find(key); p != std::string::npos; p = t.find(key, p + v.size()))
      t.replace(p, key.size(), v);
  }
  return t;
}

Haystack make_haystack(const Tokenizer& tok, const std::string& text) {
  Haystack h;
  h.sentences = split_sentences(text);
  KVB_INPUT_CHECK(!h.sentences.empty(), "haystack: the text has no sentences");
  for (const auto& s : h.sentences) {
    int64_t n = static_cast<int64_t>(tok.encode(" " + s, false).size());
    h.tokens.push_back(n);
    h.max_sentence_tokens = std::max(h.max_sentence_tokens, n);
  }
  return h;
}

std::vector<double> grid_depths(int64_t n, const std::string& spacing) {
  KVB_INPUT_CHECK(n >= 1, "depths: n must be at least 1");
  if (n == 1) return {0.5};
  std::vector<double> d;
  for (int64_t i = 0; i < n; ++i) {
    double x = static_cast<double>(i) / static_cast<double>(n - 1);
    if (spacing == "sigmoid" && i > 0 && i + 1 < n)
      x = 1.0 / (1.0 + std::exp(-0.1 * (100.0 * x - 50.0)));
    d.push_back(std::round(x * 1000.0) / 1000.0);
  }
  return d;
}

NiahSample build_niah_sample(const Tokenizer& tok, const Haystack& hay, int64_t context_len,
                             double depth, const NeedleOptions& opt, uint64_t seed,
                             int64_t first_sentence) {
  Rng rng(seed);
  const int64_t k = std::max<int64_t>(1, opt.needles);
  std::vector<std::string> pool = prose_cities();
  rng.shuffle(pool);
  std::vector<PlacedNeedle> needles(static_cast<size_t>(k));
  std::vector<std::string> cities;
  for (int64_t j = 0; j < k; ++j) {
    PlacedNeedle& n = needles[static_cast<size_t>(j)];
    n.city = pool[static_cast<size_t>(j) % pool.size()];
    int64_t lo = 1;
    for (int64_t d = 1; d < opt.digits; ++d) lo *= 10;
    n.number = std::to_string(rng.range(lo, lo * 10 - 1));
    n.text = fill_template(opt.needle, {{"city", n.city}, {"number", n.number}});
    n.depth = depth + static_cast<double>(j) * (1.0 - depth) / static_cast<double>(k);
    cities.push_back(n.city);
  }
  std::string tail;
  if (k == 1) {
    tail = fill_template(opt.question, {{"city", cities[0]}}) + " " +
           fill_template(opt.answer_prefix, {{"city", cities[0]}});
  } else {
    tail = fill_template(opt.question_multi, {{"cities", join_cities(cities)}}) + " " +
           fill_template(opt.answer_prefix_multi, {{"cities", join_cities(cities)}});
  }
  const int64_t bos = static_cast<int64_t>(tok.encode("", true).size());
  int64_t overhead = bos + static_cast<int64_t>(tok.encode("\n\n" + tail, false).size());
  for (const auto& n : needles)
    overhead += static_cast<int64_t>(tok.encode(" " + n.text, false).size());
  KVB_INPUT_CHECK(overhead < context_len, "niah: context length ", context_len,
                  " leaves no room for a haystack (the needles and question take ", overhead,
                  " tokens)");

  // Sentences (cycling through the corpus) until the estimated budget is full.
  const int64_t n_corpus = static_cast<int64_t>(hay.sentences.size());
  const int64_t first = ((first_sentence % n_corpus) + n_corpus) % n_corpus;
  auto at_corpus = [&](int64_t i) { return static_cast<size_t>((first + i) % n_corpus); };
  int64_t n_sent = 0, est = overhead;
  while (est + hay.tokens[at_corpus(n_sent)] <= context_len) est += hay.tokens[at_corpus(n_sent++)];

  for (;;) {
    std::vector<int64_t> cum(static_cast<size_t>(n_sent) + 1, 0);
    for (int64_t i = 0; i < n_sent; ++i)
      cum[static_cast<size_t>(i) + 1] = cum[static_cast<size_t>(i)] + hay.tokens[at_corpus(i)];
    // The boundary (0..n_sent) closest to each needle's depth.
    std::vector<int64_t> at;
    for (const auto& n : needles) {
      const double target = n.depth * static_cast<double>(cum.back());
      int64_t best = 0;
      for (int64_t b = 1; b <= n_sent; ++b)
        if (std::abs(static_cast<double>(cum[static_cast<size_t>(b)]) - target) <
            std::abs(static_cast<double>(cum[static_cast<size_t>(best)]) - target))
          best = b;
      at.push_back(best);
    }
    std::string text;
    std::vector<size_t> needle_char(needles.size());
    size_t next = 0;
    for (int64_t b = 0; b <= n_sent; ++b) {
      while (next < needles.size() && at[next] == b) {
        needle_char[next] = text.size() + (text.empty() ? 0 : 1);
        text += (text.empty() ? "" : " ") + needles[next].text;
        ++next;
      }
      if (b < n_sent) text += (text.empty() ? "" : " ") + hay.sentences[at_corpus(b)];
    }
    NiahSample s;
    s.prompt = text + "\n\n" + tail;
    s.ids = encode64(tok, s.prompt, true);
    if (static_cast<int64_t>(s.ids.size()) > context_len && n_sent > 0) {
      n_sent -= std::max<int64_t>(1, (static_cast<int64_t>(s.ids.size()) - context_len) /
                                         std::max<int64_t>(1, hay.max_sentence_tokens));
      n_sent = std::max<int64_t>(0, n_sent);
      continue;
    }
    s.haystack_start = bos;
    s.haystack_tokens = cum.back();
    s.sentences = n_sent;
    s.first_sentence = first;
    int64_t needle_tokens = 0;
    for (size_t j = 0; j < needles.size(); ++j) {
      PlacedNeedle n = needles[j];
      // The needle's first token: where the prompt's tokens part from those of the text before it
      // (its separating space included, which a tokenizer may fold into the needle's first token).
      const std::vector<int64_t> before = encode64(tok, s.prompt.substr(0, needle_char[j]), true);
      size_t k = 0;
      while (k < before.size() && k < s.ids.size() && before[k] == s.ids[k]) ++k;
      n.token_pos = std::max<int64_t>(bos, static_cast<int64_t>(k));
      n.actual_depth = s.haystack_tokens > 0
                           ? static_cast<double>(n.token_pos - bos - needle_tokens) /
                                 static_cast<double>(s.haystack_tokens)
                           : 0.0;
      needle_tokens += static_cast<int64_t>(tok.encode(" " + n.text, false).size());
      s.needles.push_back(n);
    }
    return s;
  }
}

double score_niah(const std::string& output, const std::vector<std::string>& answers,
                  const std::string& metric) {
  if (answers.empty()) return 0;
  if (metric == "exact") {
    std::vector<std::string> runs;
    std::string cur;
    for (char c : output + " ") {
      if (c >= '0' && c <= '9') {
        cur += c;
      } else if (!cur.empty()) {
        runs.push_back(cur);
        cur.clear();
      }
    }
    if (runs.size() < answers.size()) return 0;
    std::multiset<std::string> got(runs.begin(),
                                   runs.begin() + static_cast<std::ptrdiff_t>(answers.size()));
    return got == std::multiset<std::string>(answers.begin(), answers.end()) ? 1.0 : 0.0;
  }
  double hit = 0;
  for (const auto& a : answers) hit += output.find(a) != std::string::npos;
  return hit / static_cast<double>(answers.size());
}

}  // namespace kvb
