// Needle-in-a-haystack samples: a haystack of sentences cut to a token budget, needles inserted
// at sentence boundaries at requested depths, a question, and the expected answers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "harness/tokenizer/tokenizer.h"

namespace kvb {

struct NeedleOptions {
  std::string needle = "The special magic number for {city} is {number}.";
  std::string question = "What is the special magic number for {city}?";
  std::string answer_prefix = "The special magic number for {city} is";
  // Used when needles > 1: {cities} is "A, B and C".
  std::string question_multi = "What are the special magic numbers for {cities}?";
  std::string answer_prefix_multi = "The special magic numbers for {cities} are";
  int64_t needles = 1;
  int64_t digits = 7;  // of {number} (first digit non-zero)
};

// A haystack corpus cut into sentences with their token counts (" " + sentence, no specials).
struct Haystack {
  std::vector<std::string> sentences;
  std::vector<int64_t> tokens;  // tokens[i] of sentences[i]
  int64_t max_sentence_tokens = 0;
};
Haystack make_haystack(const Tokenizer& tok, const std::string& text);

struct PlacedNeedle {
  std::string city, number, text;
  double depth = 0;         // requested, fraction of the haystack's tokens before the needle
  double actual_depth = 0;  // measured on the final tokenization
  int64_t token_pos = 0;    // first token of the needle in the prompt
};

struct NiahSample {
  std::string prompt;                 // haystack with needles, "\n\n", question, answer prefix
  std::vector<int64_t> ids;           // encode(prompt) with the tokenizer's specials
  std::vector<PlacedNeedle> needles;  // in order of depth
  int64_t haystack_start = 0;         // token index where the haystack begins (after BOS)
  int64_t haystack_tokens = 0;        // tokens of the haystack without the needles
  int64_t sentences = 0;              // haystack sentences used
  int64_t first_sentence = 0;         // the corpus sentence the haystack starts at
};

// The sample for one grid point: at most `context_len` prompt tokens; needle j at depth
// depth + j * (1 - depth) / needles, each at the sentence boundary closest to it. Needle cities
// (distinct) and 7-digit numbers are drawn from `seed`. The haystack is the corpus from sentence
// `first_sentence` (taken modulo the corpus' sentences), wrapping round to its start when it
// runs out. kvb::InputError when the templates alone exceed the budget.
NiahSample build_niah_sample(const Tokenizer& tok, const Haystack& hay, int64_t context_len,
                             double depth, const NeedleOptions& opt, uint64_t seed,
                             int64_t first_sentence = 0);

// Depths for a grid: n points in [0, 1], "linear" or "sigmoid" (logistic spacing, denser near
// both ends, as in the needle-in-a-haystack repository; end points exactly 0 and 1).
std::vector<double> grid_depths(int64_t n, const std::string& spacing);

// Fraction of `answers` found in `output` ("substring"), or 1/0 when the digit runs of the
// output begin with exactly the answers in some order ("exact").
double score_niah(const std::string& output, const std::vector<std::string>& answers,
                  const std::string& metric);

// Replaces every "{name}" in `tmpl`.
std::string fill_template(std::string tmpl,
                          const std::vector<std::pair<std::string, std::string>>& vars);

}  // namespace kvb
