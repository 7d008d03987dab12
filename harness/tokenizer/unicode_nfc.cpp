#include "harness/tokenizer/unicode_nfc.h"

#include <algorithm>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "harness/tokenizer/unicode_nfc_tables.h"
#include "harness/tokenizer/utf8.h"

namespace kvb::tok {
namespace {

// Hangul syllable arithmetic (Unicode section 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28;
constexpr char32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

struct Tables {
  std::unordered_map<char32_t, const nfc_tables::CanonicalDecomposition*> decomposition;
  std::unordered_map<uint64_t, char32_t> composition;  // (first << 32 | second) -> composite

  Tables() {
    decomposition.reserve(nfc_tables::kNumDecompositions);
    for (size_t i = 0; i < nfc_tables::kNumDecompositions; ++i) {
      const auto& d = nfc_tables::kDecompositions[i];
      decomposition.emplace(d.code_point, &d);
      if (d.composable) composition.emplace(uint64_t{d.first} << 32 | d.second, d.code_point);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

uint8_t combining_class(char32_t cp) {
  if (cp < 0x300) return 0;
  const auto* begin = nfc_tables::kCombiningClasses;
  const auto* end = begin + nfc_tables::kNumCombiningClasses;
  const auto* it = std::upper_bound(
      begin, end, cp,
      [](char32_t c, const nfc_tables::CombiningClassRange& r) { return c < r.first; });
  if (it == begin) return 0;
  --it;
  return cp <= it->last ? it->ccc : 0;
}

void decompose(char32_t cp, const Tables& t, std::vector<char32_t>* out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out->push_back(kLBase + s / kNCount);
    out->push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out->push_back(kTBase + s % kTCount);
    return;
  }
  auto it = t.decomposition.find(cp);
  if (it == t.decomposition.end()) {
    out->push_back(cp);
    return;
  }
  decompose(it->second->first, t, out);
  if (it->second->second != 0) decompose(it->second->second, t, out);
}

// The primary composite of (a, b), or 0 when there is none.
char32_t compose_pair(char32_t a, char32_t b, const Tables& t) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  auto it = t.composition.find(uint64_t{a} << 32 | b);
  return it == t.composition.end() ? 0 : it->second;
}

}  // namespace

std::string to_nfc(std::string_view text) {
  if (std::all_of(text.begin(), text.end(),
                  [](char c) { return static_cast<uint8_t>(c) < 0x80; })) {
    return std::string(text);
  }
  const Tables& t = tables();
  // 1. Full canonical decomposition.
  std::vector<char32_t> cps;
  cps.reserve(text.size());
  for (size_t pos = 0, len = 0; pos < text.size(); pos += len) {
    decompose(utf8::decode_at(text, pos, &len), t, &cps);
  }
  std::vector<uint8_t> ccc(cps.size());
  for (size_t i = 0; i < cps.size(); ++i) ccc[i] = combining_class(cps[i]);
  // 2. Canonical ordering: stable sort of every run of non-starters by combining class.
  for (size_t i = 0; i < cps.size();) {
    if (ccc[i] == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && ccc[j] != 0) ++j;
    if (j - i > 1) {
      std::vector<std::pair<uint8_t, char32_t>> run;
      for (size_t k = i; k < j; ++k) run.emplace_back(ccc[k], cps[k]);
      std::stable_sort(run.begin(), run.end(),
                       [](const auto& x, const auto& y) { return x.first < y.first; });
      for (size_t k = i; k < j; ++k) std::tie(ccc[k], cps[k]) = run[k - i];
    }
    i = j;
  }
  // 3. Canonical composition: a character joins the last starter unless blocked (some character
  // in between has class 0 or a class >= its own).
  std::vector<char32_t> out;
  out.reserve(cps.size());
  size_t starter = SIZE_MAX;  // index in `out` of the last starter
  int last_class = -1;        // class of the last character kept after the starter
  for (size_t i = 0; i < cps.size(); ++i) {
    const int cls = ccc[i];
    if (starter != SIZE_MAX && (last_class == -1 || last_class < cls)) {
      if (char32_t c = compose_pair(out[starter], cps[i], t); c != 0) {
        out[starter] = c;
        continue;
      }
    }
    if (cls == 0) {
      starter = out.size();
      last_class = -1;
    } else {
      last_class = cls;
    }
    out.push_back(cps[i]);
  }
  std::string result;
  result.reserve(text.size());
  for (char32_t cp : out) utf8::append(&result, cp);
  return result;
}

}  // namespace kvb::tok
