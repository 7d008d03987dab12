// A small seeded random stream for dataset generators. splitmix64, so generated data is the same
// on every platform and standard library (std:: distributions are implementation-defined).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/hash.h"

namespace kvb {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed ^ 0x6A09E667F3BCC909ULL) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n); n > 0.
  uint64_t below(uint64_t n) { return next() % n; }
  // Uniform in [lo, hi].
  int64_t range(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(below(static_cast<uint64_t>(hi - lo + 1)));
  }
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
  template <typename T>
  const T& pick(const std::vector<T>& v) {
    return v[below(v.size())];
  }
  template <typename T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }

 private:
  uint64_t state_;
};

// Derives an independent seed from a base seed and a tag (FNV-1a over the tag, then mixed).
inline uint64_t derive_seed(uint64_t base, const std::string& tag) {
  Rng r(base ^ fnv1a64(tag));
  return r.next();
}


}  // namespace kvb
