// Procedurally generated English-like prose: a small phrase-structure grammar over a vocabulary
// of a few hundred words, seeded. Used as a haystack and as filler that no tokenizer has seen
// verbatim, so retrieval scores do not depend on memorised text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvb {

class Rng;

// One grammatical sentence (capitalised, ending in '.' or '!').
std::string prose_sentence(Rng& rng);

// At least `words` words in paragraphs of 3-7 sentences separated by "\n\n". Deterministic in seed.
std::string generate_prose(int64_t words, uint64_t seed);

// Word lists the SCBench-like generators share (cities for needles, topic words for the
// classification task).
const std::vector<std::string>& prose_cities();
const std::vector<std::string>& prose_nouns();

}  // namespace kvb
