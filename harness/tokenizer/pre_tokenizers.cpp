#include "harness/tokenizer/pre_tokenizers.h"

#include "harness/tokenizer/byte_level.h"
#include "harness/tokenizer/pcre_regex.h"

namespace kvb::tok {
namespace {

// GPT-2's pre-tokenization pattern (ByteLevel with use_regex = true).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// What becomes of the matches of a Split pattern (HF's SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct Span {
  size_t begin, end;
  bool is_match;
};

// Splits `text` the way HF's NormalizedString::split does with a regex pattern.
std::vector<std::string> split_text(const std::string& text, const PcreRegex& regex,
                                    SplitBehavior behavior, bool invert) {
  // Matches and the gaps between them, covering the whole text.
  std::vector<Span> spans;
  if (text.empty()) {
    spans.push_back({0, 0, false});
  } else {
    size_t prev = 0;
    for (const auto& [b, e] : regex.find_all(text)) {
      if (prev != b) spans.push_back({prev, b, false});
      spans.push_back({b, e, true});
      prev = e;
    }
    if (prev != text.size()) spans.push_back({prev, text.size(), false});
  }
  if (invert) {
    for (Span& s : spans) s.is_match = !s.is_match;
  }
  std::vector<Span> out;  // kept spans
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const Span& s : spans) {
        if (!s.is_match) out.push_back(s);
      }
      break;
    case SplitBehavior::kIsolated:
      out = spans;
      break;
    case SplitBehavior::kContiguous: {
      bool prev_match = false;
      for (const Span& s : spans) {
        if (s.is_match == prev_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back(s);
        }
        prev_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (const Span& s : spans) {
        if (s.is_match && !prev_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back(s);
        }
        prev_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool prev_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !prev_match && !out.empty()) {
          out.back().begin = it->begin;
        } else {
          out.push_back(*it);
        }
        prev_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
  }
  std::vector<std::string> pieces;
  for (const Span& s : out) {
    if (s.end > s.begin) pieces.emplace_back(text, s.begin, s.end - s.begin);
  }
  return pieces;
}

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void pre_tokenize(std::vector<std::string>* pieces) const override {
    for (const auto& s : steps_) s->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(const std::string& pattern, bool literal, SplitBehavior behavior, bool invert,
                    const std::string& context)
      : regex_(pattern, literal, context), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<std::string>* pieces) const override {
    std::vector<std::string> out;
    out.reserve(pieces->size());
    for (const std::string& p : *pieces) {
      for (std::string& s : split_text(p, regex_, behavior_, invert_)) out.push_back(std::move(s));
    }
    *pieces = std::move(out);
  }

 private:
  PcreRegex regex_;
  SplitBehavior behavior_;
  bool invert_;
};

// Optionally adds a leading space and splits with GPT-2's pattern, then maps every byte to its
// byte-level alphabet character.
class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex, const std::string& context)
      : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_ = std::make_unique<PcreRegex>(kGpt2Pattern, false, context);
  }
  void pre_tokenize(std::vector<std::string>* pieces) const override {
    std::vector<std::string> out;
    out.reserve(pieces->size());
    for (std::string& p : *pieces) {
      if (add_prefix_space_ && !p.starts_with(' ')) {
        std::string spaced(" ");  // (not p.insert(0, " "): GCC 12 -O3 warns falsely on it)
        spaced += p;
        p = std::move(spaced);
      }
      if (regex_) {
        for (std::string& s : split_text(p, *regex_, SplitBehavior::kIsolated, false)) {
          out.push_back(byte_level::encode(s));
        }
      } else if (!p.empty()) {
        out.push_back(byte_level::encode(p));
      }
    }
    *pieces = std::move(out);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<PcreRegex> regex_;
};

SplitBehavior parse_behavior(const JsonNode& node) {
  const std::string s = node.str();
  if (s == "Removed") return SplitBehavior::kRemoved;
  if (s == "Isolated") return SplitBehavior::kIsolated;
  if (s == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (s == "Contiguous") return SplitBehavior::kContiguous;
  type_not_supported(node, s,
                     {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"});
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const std::optional<JsonNode>& node) {
  if (!node) return nullptr;
  const JsonNode& j = node->object();
  const JsonNode type_node = j.at("type");
  const std::string type = type_node.str();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const JsonNode& item : j.at("pretokenizers").array().items()) {
      item.object();
      steps.push_back(make_pre_tokenizer(item));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "Split") {
    bool literal = false;
    const std::string pattern = read_pattern(j, &literal);
    const SplitBehavior behavior = parse_behavior(j.at("behavior"));
    return std::make_unique<SplitPreTokenizer>(
        pattern, literal, behavior, j.boolean("invert", false), context_of(j.at("pattern")));
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(j.boolean("add_prefix_space", true),
                                                   j.boolean("use_regex", true), context_of(j));
  }
  type_not_supported(type_node, type, {"Split", "ByteLevel", "Sequence"});
}

}  // namespace kvb::tok
