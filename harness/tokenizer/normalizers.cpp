#include "harness/tokenizer/normalizers.h"

#include <vector>

#include "harness/tokenizer/pcre_regex.h"
#include "harness/tokenizer/unicode_nfc.h"

namespace kvb::tok {
namespace {

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  void normalize(std::string* text) const override {
    for (const auto& s : steps_) s->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class NfcNormalizer : public Normalizer {
 public:
  void normalize(std::string* text) const override { *text = to_nfc(*text); }
};

// Prepends `prefix` to a non-empty text.
class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

// Replaces every non-overlapping match of a pattern, left to right, by `content`.
class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(const std::string& pattern, bool literal, std::string content,
                    const std::string& context)
      : regex_(pattern, literal, context), content_(std::move(content)) {}
  void normalize(std::string* text) const override {
    const auto matches = regex_.find_all(*text);
    if (matches.empty()) return;
    std::string out;
    out.reserve(text->size());
    size_t prev = 0;
    for (const auto& [b, e] : matches) {
      out.append(*text, prev, b - prev);
      out += content_;
      prev = e;
    }
    out.append(*text, prev, std::string::npos);
    *text = std::move(out);
  }

 private:
  PcreRegex regex_;
  std::string content_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const std::optional<JsonNode>& node) {
  if (!node) return nullptr;
  const JsonNode& j = node->object();
  const JsonNode type_node = j.at("type");
  const std::string type = type_node.str();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const JsonNode& item : j.at("normalizers").array().items()) {
      item.object();
      steps.push_back(make_normalizer(item));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "NFC") return std::make_unique<NfcNormalizer>();
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(j.at("prepend").str());
  if (type == "Replace") {
    bool literal = false;
    const std::string pattern = read_pattern(j, &literal);
    return std::make_unique<ReplaceNormalizer>(pattern, literal, j.at("content").str(),
                                               context_of(j.at("pattern")));
  }
  type_not_supported(type_node, type, {"NFC", "Prepend", "Replace", "Sequence"});
}

}  // namespace kvb::tok
